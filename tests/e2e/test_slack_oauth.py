"""`deskmate run` installed into two Slack workspaces through OAuth, against the
local fake Slack: the "Add to Slack" page, the authorize step, the redirect
back, events answered with each workspace's own token, a replayed state
refused, and one workspace uninstalling while the other keeps working."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet

from adapters.slack.convert import unescape
from adapters.slack.oauth import manifest_scopes
from tests.e2e.processes import spawn_deskmate, wait_healthy
from tests.fakes.slack_api import FakeSlack, OAuthApp, Workspace, mention_event, sign
from tests.support import free_port

SECRET = "oauth-signing-secret"
COOKIE = "slack-app-oauth-state"


class Deskmate:
    def __init__(self, proc: asyncio.subprocess.Process, base: str, db: Path) -> None:
        self.proc = proc
        self.base = base
        self.db = db

    async def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, _ = await self.proc.communicate()
        return int(self.proc.returncode or 0), out.decode()

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute(sql, args).fetchall())


async def start(tmp_path: Path, fake: FakeSlack, env: dict[str, str]) -> Deskmate:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "deskmate.db"
    redirect = f"{base}/slack/oauth_redirect"
    assert fake.oauth is not None
    fake.oauth.redirect_urls.append(redirect)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DESKMATE_MODEL": "fake",
        "DATABASE_URL": f"sqlite:///{db}",
        "DESKMATE_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "SLACK_CLIENT_ID": fake.oauth.client_id,
        "SLACK_CLIENT_SECRET": fake.oauth.client_secret,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_REDIRECT_URI": redirect,
        "SLACK_API_URL": fake.api_url,
        "SLACK_EDIT_INTERVAL": "0.1",
        "DESKMATE_SECRET_KEY": Fernet.generate_key().decode(),
        **env,
    }
    proc = await spawn_deskmate(full_env, asyncio.subprocess.PIPE)
    await wait_healthy(proc, base)
    return Deskmate(proc, base, db)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(
        workspaces=[
            Workspace("T1", "", bot_user_id="UBOT1", bot_id="BBOT1", team_name="Acme"),
            Workspace("T2", "", bot_user_id="UBOT2", bot_id="BBOT2", team_name="Globex"),
        ],
        oauth=OAuthApp(),
    ).start()
    yield server
    await server.stop()


class Browser:
    """An installer's browser: follows the pages and keeps the state cookie (the
    cookie is Secure; browsers send it to a loopback http:// origin too)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.cookie = ""

    async def open_install_page(self, base: str, team: str) -> str:
        """``/slack/install``: returns the "Add to Slack" link."""
        async with self.session.get(f"{base}/slack/install?team={team}") as response:
            assert response.status == 200
            page = await response.text()
            self.cookie = response.cookies[COOKIE].value
        link = re.search(r'<a href="([^"]+)"', page)
        assert link is not None, page
        return html.unescape(link.group(1))

    async def approve(self, authorize_url: str) -> str:
        """Approve in Slack: returns where Slack sends the browser back to."""
        async with self.session.get(authorize_url, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]

    async def come_back(self, redirect: str) -> tuple[int, str]:
        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        async with self.session.get(redirect, headers=headers, allow_redirects=False) as response:
            return response.status, await response.text()

    async def install(self, base: str, team: str) -> str:
        redirect = await self.approve(await self.open_install_page(base, team))
        status, page = await self.come_back(redirect)
        assert status == 200, page
        assert "Deskmate is installed" in page
        return redirect


async def deliver(session: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> int:
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


def answers(fake: FakeSlack, thread: str) -> list[str]:
    return [unescape(m.text) for m in fake.bot_messages("C1", thread)]


async def test_two_workspaces_install_answer_with_their_own_tokens_and_one_leaves(
    tmp_path: Path, fake: FakeSlack
) -> None:
    deskmate = await start(tmp_path, fake, {"DESKMATE_SLACK_RETENTION_DAYS": "0"})
    events = deskmate.base + "/slack/events"
    try:
        async with aiohttp.ClientSession() as session:
            browser = Browser(session)
            authorize = await browser.open_install_page(deskmate.base, "T1")
            assert authorize.startswith(fake.api_url.removesuffix("api/") + "oauth/v2/authorize")
            assert f"scope={','.join(manifest_scopes())}" in authorize
            used = await browser.come_back(await browser.approve(authorize))
            assert used[0] == 200 and "Acme" in used[1]
            first_redirect = await browser.approve(authorize)  # a second code, same state
            await browser.install(deskmate.base, "T2")
            token1 = fake.workspace("T1").bot_token
            token2 = fake.workspace("T2").bot_token
            assert token1.startswith("xoxb-T1-") and token2.startswith("xoxb-T2-")

            # The state of a finished installation is refused, cookie and all.
            browser.cookie = authorize.split("state=")[1].split("&")[0]
            status, page = await browser.come_back(first_redirect)
            assert status == 401
            assert "already used or has expired" in page
            assert fake.workspace("T1").bot_token == token1  # no second exchange
            # So is a state this server never issued.
            browser.cookie = "made-up"
            forged = first_redirect.replace(
                first_redirect.split("state=")[1].split("&")[0], "made-up"
            )
            status, page = await browser.come_back(forged)
            assert status == 401 and "Deskmate was not installed" in page

            # Tokens at rest: neither appears in the table, in any column.
            raw = json.dumps(deskmate.rows("SELECT * FROM slack_installations"), default=str)
            assert "Acme" in raw
            assert token1 not in raw and token2 not in raw

            # Each workspace is answered with its own token.
            one = mention_event("hello from one", team="T1", bot_user_id="UBOT1")
            two = mention_event("hello from two", team="T2", bot_user_id="UBOT2")
            thread1, thread2 = one["event"]["ts"], two["event"]["ts"]
            assert await deliver(session, events, one) == 200
            assert await deliver(session, events, two) == 200
            await fake.wait_for(
                lambda: (
                    answers(fake, thread1) == ["echo: hello from one"]
                    and answers(fake, thread2) == ["echo: hello from two"]
                ),
                within=30,
            )
            for thread, token, team in ((thread1, token1, "T1"), (thread2, token2, "T2")):
                posts = [
                    c
                    for c in fake.calls_of("chat.postMessage")
                    if c.args.get("thread_ts") == thread
                ]
                assert posts and {c.token for c in posts} == {token}
                assert fake.bot_messages("C1", thread)[0].team == team
            reactions = {c.args["timestamp"]: c.token for c in fake.calls_of("reactions.add")}
            assert reactions == {thread1: token1, thread2: token2}

            # Both workspaces have settings of their own (T2's: answer from the FAQ only).
            now = datetime.now(UTC).isoformat(" ")
            with sqlite3.connect(deskmate.db) as conn:
                for team in ("T1", "T2"):
                    conn.execute(
                        "INSERT INTO knowledge_settings (scope, name, value, updated_at) "
                        "VALUES (?, 'mode', 'faq', ?)",
                        (f"tenant:{team}", now),
                    )
            assert len(deskmate.rows("SELECT * FROM conversations WHERE tenant = 'T1'")) == 1

            # T1 uninstalls: its token goes at once, and (retention 0) its data.
            assert await deliver(session, events, fake.uninstall("T1")) == 200
            assert deskmate.rows("SELECT * FROM slack_installations WHERE team_id = 'T1'") == []
            for _ in range(100):
                if not deskmate.rows("SELECT * FROM conversations WHERE tenant = 'T1'"):
                    break
                await asyncio.sleep(0.1)
            assert deskmate.rows("SELECT * FROM conversations WHERE tenant = 'T1'") == []
            assert deskmate.rows("SELECT * FROM knowledge_settings WHERE scope = 'tenant:T1'") == []
            assert len(deskmate.rows("SELECT * FROM conversations WHERE tenant = 'T2'")) == 1
            assert len(deskmate.rows("SELECT * FROM slack_installations")) == 1

            # T2 keeps working; a late event from T1 is not answered.
            calls = len(fake.calls)
            late = mention_event("anyone there?", team="T1", bot_user_id="UBOT1")
            again = mention_event("still here", team="T2", bot_user_id="UBOT2")
            assert await deliver(session, events, late) == 200
            assert await deliver(session, events, again) == 200
            await fake.wait_for(
                lambda: any(
                    "knowledge base" in text for text in answers(fake, again["event"]["ts"])
                ),
                within=30,
            )
            assert answers(fake, late["event"]["ts"]) == []
            assert all(c.token != token1 for c in fake.calls[calls:])
    finally:
        code, log = await deskmate.stop()
    assert code == 0, log
    assert "Slack: installed in workspace T1 (Acme)" in log
    assert "Slack: purged uninstalled workspace T1" in log
    assert token1 not in log and token2 not in log


async def test_oauth_without_a_secret_key_stops_start_up_with_the_command_to_make_one(
    tmp_path: Path, fake: FakeSlack
) -> None:
    with pytest.raises(AssertionError) as failed:
        await start(tmp_path, fake, {"DESKMATE_SECRET_KEY": ""})
    assert "DESKMATE_SECRET_KEY is not set" in str(failed.value)
    assert "python -c 'from cryptography.fernet import Fernet" in str(failed.value)
