"""The ``deskmate`` command: run, chat, ask, db upgrade, faq import|export, docs, widget
add|list|remove|set, console link|token, audit export."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from bot.errors import CONFIG_ERRORS, FAILURES, ConfigError
from bot.language import FALLBACK_LANGUAGE, detect_language
from bot.settings import Settings
from bot.types import ConversationRef, Inbound, Reply

if TYPE_CHECKING:
    from bot.app import Core
    from bot.manager import ConversationManager, Render
    from storage.console_repo import ConsoleRepository

log = logging.getLogger("deskmate")
# A platform user id as the bot stores it: telegram:123, slack:T1/U1, web:…
_PERSON = re.compile(r"^[a-z]+:[A-Za-z0-9][A-Za-z0-9_./:-]{0,150}$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deskmate",
        description="Self-hosted AI assistant for support teams (settings come from env vars).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="start every configured adapter; with none, the local web chat")
    sub.add_parser("chat", help="chat with Deskmate in this terminal")
    ask = sub.add_parser("ask", help="answer one question and exit")
    ask.add_argument("question", help="the question, or - to read one question per line")
    ask.add_argument("--json", action="store_true", help="print one JSON object per answer")
    ask.add_argument("--tenant", default="local", help="answer as this tenant's knowledge base")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="apply database migrations, then embed the FAQ texts the multilingual model "
        "has no vectors of yet",
    )
    upgrade.add_argument(
        "--no-vectors",
        action="store_true",
        help="leave the multilingual vectors to the server, which embeds them once idle",
    )
    console = sub.add_parser("console", help="the operator console at /console")
    console_sub = console.add_subparsers(
        dest="console_command", required=True, metavar="CONSOLE_COMMAND"
    )
    link = console_sub.add_parser("link", help="print a one-time sign-in link for a person")
    link.add_argument(
        "--user",
        default="",
        help="who it signs in: a platform id with a role, e.g. telegram:123 or slack:T1/U1 "
        "(without it, the owner's fallback)",
    )
    link.add_argument(
        "--base-url", default="", help="how browsers reach this server (default: http://HOST:PORT)"
    )
    link.add_argument(
        "--minutes", type=int, default=15, help="how long the link stays valid (default 15)"
    )
    token = console_sub.add_parser("token", help="print a person's own sign-in token")
    token.add_argument("--user", required=True, help="whose token: a platform id with a role")
    token.add_argument(
        "--revoke", action="store_true", help="remove their token and end their sessions"
    )
    from bot.knowledge.cli import register as register_faq

    register_faq(sub)
    from bot.widget_cli import register as register_widget

    register_widget(sub)

    from bot.knowledge.documents.cli import register as register_docs

    register_docs(sub)
    audit = sub.add_parser("audit", help="the support team's audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    export = audit_sub.add_parser("export", help="write staff actions as JSON lines, oldest first")
    export.add_argument("--tenant", default=None, help="only this tenant's actions ('' = shared)")
    export.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"deskmate: configuration error: {exc}", file=sys.stderr)
        return 2
    quiet = args.command in ("chat", "ask", "console", "widget", "docs")
    _setup_logging(
        settings.log_level,
        quiet=quiet,
        json_lines=settings.log_format == "json",
        sdk_debug=settings.log_sdk_debug,
    )
    try:
        if args.command == "run":
            if not settings.llm_url and settings.model != "fake":
                # torch's import overlaps the bot's imports and the database check below.
                from llm.transformers import import_in_background

                import_in_background()
            from bot.app import serve
            from bot.startclock import mark

            mark("imports")
            asyncio.run(serve(settings))
        elif args.command == "chat":
            asyncio.run(_chat(settings))
        elif args.command == "ask":
            return asyncio.run(_ask(settings, args.question, as_json=args.json, tenant=args.tenant))
        elif args.command == "faq":
            from bot.knowledge.cli import run as run_faq

            return asyncio.run(run_faq(args, settings))
        elif args.command == "widget":
            from bot.widget_cli import run as run_widget

            return asyncio.run(run_widget(args, settings))
        elif args.command == "docs":
            from bot.knowledge.documents.cli import run as run_docs

            return asyncio.run(run_docs(args, settings))
        elif args.command == "db":
            asyncio.run(_db_upgrade(settings, vectors=not args.no_vectors))
        elif args.command == "console" and args.console_command == "token":
            return asyncio.run(_console_token(settings, args.user, revoke=args.revoke))
        elif args.command == "console":
            return asyncio.run(_console_link(settings, args.base_url, args.minutes, user=args.user))
        elif args.command == "audit":
            return asyncio.run(_audit_export(settings, tenant=args.tenant, output=args.output))
    except CONFIG_ERRORS as exc:
        # Operator mistakes get the one-line fix, not a traceback.
        print(f"deskmate: {exc}", file=sys.stderr)
        return 2
    except FAILURES as exc:
        log.debug("fatal error", exc_info=exc)
        print(f"deskmate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _setup_logging(
    level: str, *, quiet: bool, json_lines: bool = False, sdk_debug: bool = False
) -> None:
    from bot.logs import setup

    setup("WARNING" if quiet else level, json_lines=json_lines, sdk_debug=sdk_debug)
    if not quiet:
        # Per-request HTTP logs from the platform SDKs drown the bot's own.
        for noisy in ("httpx", "httpcore", "aiohttp.access", "alembic.runtime.plugins"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


async def _chat(settings: Settings) -> None:
    from adapters.console import ConsoleChat

    async with _loading(settings) as core:
        await ConsoleChat().run(core.manager)


async def _ask(settings: Settings, question: str, *, as_json: bool, tenant: str = "local") -> int:
    questions = _read_questions() if question == "-" else [question]
    # The operator's own batch from the shell: the per-person message limit that
    # protects the bot from a flooding customer would turn its tail away.
    settings = dataclasses.replace(settings, user_rate=0)
    async with _loading(settings) as core:
        conversation = f"ask-{uuid.uuid4().hex[:12]}"
        failed = False
        for q in questions:
            # Each question is its own conversation: answers must not lean on
            # earlier questions of a batch.
            ref = ConversationRef("cli", tenant, f"{conversation}-{uuid.uuid4().hex[:6]}")
            inbound = Inbound(ref=ref, user="cli", text=q, event_id=uuid.uuid4().hex)
            reply = await core.manager.handle(inbound, _printer(as_json))
            failed = failed or reply.failed
            if as_json:
                record = {"question": q, "answer": reply.text, "path": "model", "sources": []}
                record.update(await _language_of(core.manager, q, tenant))
                if core.manager.knowledge is not None:
                    from bot.knowledge.cli import answer_json, answer_record

                    logged = await answer_record(core.manager.knowledge, ref.key)
                    if logged is not None:
                        record.update(answer_json(logged))
                print(json.dumps(record, ensure_ascii=False), flush=True)
        return 1 if failed else 0


async def _language_of(manager: ConversationManager, question: str, tenant: str) -> dict[str, Any]:
    """``language``: the question's language as detected (the one it was
    answered in: when it is too short to tell, the tenant's or deployment's);
    ``detected``: null when the question alone did not tell."""
    detected = detect_language(question)
    if detected is not None or manager.languages is None:
        return {"language": detected or FALLBACK_LANGUAGE, "detected": detected}
    language = await manager.languages.fallback(None, "cli", tenant)
    return {"language": language, "detected": None}


def _read_questions() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip()]


def _printer(as_json: bool) -> Render:
    async def render(reply: Reply) -> None:
        if as_json:
            await reply.collect()
            return
        async for chunk in reply:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()

    return render


@asynccontextmanager
async def _loading(settings: Settings) -> AsyncIterator[Core]:
    """``open_core`` with a progress line on stderr for interactive commands."""
    from bot.app import open_core

    start = time.monotonic()
    print(f"Loading model {settings.llm_url or settings.model}…", file=sys.stderr, flush=True)
    async with open_core(settings) as core:
        print(f"Model ready in {time.monotonic() - start:.1f} s.", file=sys.stderr, flush=True)
        yield core


async def _db_upgrade(settings: Settings, *, vectors: bool = True) -> None:
    """Migrate; then, unless ``vectors`` is False, embed the FAQ texts stored
    without the multilingual model's vectors (an FAQ imported before they were
    kept), so that neither the server's start nor a customer's question does it."""
    from storage.db import Database

    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        print(f"database is at revision {await db.current_revision()}")
        if vectors:
            from bot.app import create_knowledge_base

            started = time.monotonic()
            filled = await create_knowledge_base(db, settings).fill_text_vectors()
            if filled:
                print(
                    f"embedded {filled} FAQ texts for questions in other languages "
                    f"in {time.monotonic() - started:.0f} s"
                )
    finally:
        await db.dispose()


async def _console_person(settings: Settings, repo: ConsoleRepository, user: str) -> str | None:
    """Why ``user`` may not sign in to the console ("" when they may)."""
    if not _PERSON.match(user):
        return (
            f"{user!r} is not a platform user id: name the person as the bot sees them, "
            "e.g. telegram:123456 or slack:T0TEAM/U0MEMBER"
        )
    if user in settings.admins or await repo.roles_of(user):
        return ""
    return (
        f"{user} has no role: the console is for owners (DESKMATE_ADMINS) and for agents "
        "and admins of a tenant; give one with /role in the tenant's chat first"
    )


async def _console_link(settings: Settings, base_url: str, minutes: int, *, user: str = "") -> int:
    import secrets
    from datetime import timedelta

    from storage.console_repo import ConsoleRepository
    from storage.db import Database

    if not 1 <= minutes <= 24 * 60:
        print("deskmate: --minutes must be between 1 and 1440", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        repo = ConsoleRepository(db)
        if user and (why := await _console_person(settings, repo, user)):
            print(f"deskmate: {why}", file=sys.stderr)
            return 2
        expires = await repo.create_link(
            token, valid_for=timedelta(minutes=minutes), platform_user=user
        )
    finally:
        await db.dispose()
    host = settings.host
    # A wildcard address is where the server listens, not where a browser goes.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    base = (base_url or f"http://{host}:{settings.port}").rstrip("/")
    print(f"{base}/console/login?link={token}")
    print(
        f"Signs in {user or 'as the owner'} once, until {expires:%Y-%m-%d %H:%M} UTC.",
        file=sys.stderr,
    )
    return 0


async def _console_token(settings: Settings, user: str, *, revoke: bool) -> int:
    """Print ``user``'s new personal sign-in token (replacing theirs), or revoke it."""
    import secrets

    from storage.console_repo import ConsoleRepository
    from storage.db import Database

    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        repo = ConsoleRepository(db)
        if revoke:
            tokens, sessions = await repo.revoke(user)
            print(
                f"revoked {tokens} token(s) of {user} and ended {sessions} session(s)",
                file=sys.stderr,
            )
            return 0
        if why := await _console_person(settings, repo, user):
            print(f"deskmate: {why}", file=sys.stderr)
            return 2
        token = secrets.token_urlsafe(32)
        await repo.issue_token(token, platform_user=user)
    finally:
        await db.dispose()
    print(token)
    print(
        f"The console token of {user}: it signs in at /console/login until revoked with "
        f"`deskmate console token --user {user} --revoke`; an earlier one no longer works.",
        file=sys.stderr,
    )
    return 0


async def _audit_export(settings: Settings, *, tenant: str | None, output: str) -> int:
    """Write the audit trail as JSON lines, oldest first, to ``output`` ("-": stdout)."""
    from pathlib import Path

    from storage.db import Database
    from storage.team_repo import TeamRepository

    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        entries = await TeamRepository(db).audit_entries(tenant=tenant, newest_first=False)
    finally:
        await db.dispose()
    lines = "".join(json.dumps(e.as_json(), ensure_ascii=False) + "\n" for e in entries)
    if output == "-":
        sys.stdout.write(lines)
    else:
        await asyncio.to_thread(Path(output).write_text, lines, encoding="utf-8")
        print(f"wrote {len(entries)} audit records to {output}", file=sys.stderr)
    return 0
