"""Console sign-in per person, over real HTTP against the console's routes, on
SQLite and PostgreSQL: a tenant's admin sees and acts on that tenant only, an
agent sees its tenants' tickets, an owner everything; the audit trail records
the person signed in; a revoked personal token no longer signs in; and
``deskmate console link`` refuses a person without a role."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from adapters.web import HttpServer
from adapters.webconsole import mount_console
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.metrics import Metrics
from bot.services import ConsoleParts
from bot.settings import Settings
from bot.team.service import Team
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.console_repo import ConsoleRepository
from storage.db import Database
from storage.handoff_repo import HandoffRepository, Ticket
from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.storage.support import make_event

ROOT = Path(__file__).resolve().parents[2]
SHARED_TOKEN = "shared-owner-token-0123456789"
OWNER = "telegram:1"
ADMIN_A, AGENT_A, ADMIN_B = "slack:TA/UADMIN", "slack:TA/UAGENT", "slack:TB/UADMIN"
# What each tenant's customers wrote, and each tenant's FAQ entry.
SAID_A, SAID_B = "ALPACA-4411 my order", "BISON-7720 my invoice"
ENTRY_A, ENTRY_B = "Where is the alpaca depot?", "Where is the bison depot?"


@dataclass
class Desk:
    base: str
    db: Database
    repo: ConsoleRepository
    tickets: HandoffRepository
    knowledge: KnowledgeRepository
    ticket_a: Ticket
    ticket_b: Ticket
    conversation_b: int


async def _seed(repository: Repository, desk: HandoffRepository) -> tuple[Ticket, Ticket, int]:
    team = TeamRepository(repository.db)
    await team.set_role("TA", ADMIN_A, "admin", by=OWNER)
    await team.set_role("TA", AGENT_A, "agent", by=OWNER)
    await team.set_role("TB", ADMIN_B, "admin", by=OWNER)
    found: list[Ticket] = []
    conversation_b = 0
    for tenant, said in (("TA", SAID_A), ("TB", SAID_B)):
        event = make_event(said, platform="slack", tenant=tenant, user=f"{tenant}/UCUST")
        stored = await repository.accept(event, kind="chat")
        await repository.record_answer(stored, text="Let me look.", kind="chat")
        ticket, _ = await desk.open_ticket(
            stored.conversation_id,
            trigger="request",
            customer=event.user_id,
            customer_name="Cust",
            space="telegram:-100",
            space_chat="-100",
            # The customer's language, as a ticket opened by the bot records it.
            details={"language": "sv"} if tenant == "TA" else {},
        )
        found.append(ticket)
        conversation_b = stored.conversation_id
    knowledge = KnowledgeRepository(repository.db)
    for tenant, question in (("TA", ENTRY_A), ("TB", ENTRY_B)):
        await knowledge.upsert_many(
            tenant, [(EntryInput(question, "Behind the barn."), None)], embedding_model=""
        )
    return found[0], found[1], conversation_b


async def _serve(db: Database, repository: Repository | None = None) -> tuple[HttpServer, str]:
    team = Team(TeamRepository(db), owners={OWNER})
    tickets = HandoffRepository(db)
    kb = KnowledgeBase(
        repository=KnowledgeRepository(db), embedder=HashingEmbedder(), background=()
    )
    forget = make_manager(repository, FakeBackend(), team=team).forget_user if repository else None
    services = ConsoleParts(
        repository=ConsoleRepository(db),
        knowledge=kb,
        team=team,
        desk=HelpDesk(
            settings=HandoffSettings(spaces=parse_spaces("telegram:-100"), signature="Team"),
            tickets=tickets,
            team=team,
        ),
        metrics=Metrics(),
        backend_name="scripted",
        model_stats=None,
        forget=forget,  # type: ignore[arg-type]
    )
    http = HttpServer(host="127.0.0.1", port=0)
    mount_console(http, settings=Settings(console_token=SHARED_TOKEN), services=services)
    await http.start()
    return http, f"http://127.0.0.1:{http.port}"


@pytest.fixture
async def desk(repository: Repository) -> AsyncIterator[Desk]:
    tickets = HandoffRepository(repository.db)
    ticket_a, ticket_b, conversation_b = await _seed(repository, tickets)
    http, base = await _serve(repository.db, repository)
    yield Desk(
        base,
        repository.db,
        ConsoleRepository(repository.db),
        tickets,
        KnowledgeRepository(repository.db),
        ticket_a,
        ticket_b,
        conversation_b,
    )
    await http.stop()


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _sign_in(client: aiohttp.ClientSession, base: str, **form: str) -> int:
    """Post the sign-in form (``link=`` or ``token=``) as a browser would; its status."""
    async with client.get(base + "/console/login") as response:
        found = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert found is not None
    async with client.post(
        base + "/console/login", data={"csrf": found[1], **form}, allow_redirects=False
    ) as response:
        return response.status


async def _as(desk: Desk, person: str) -> tuple[aiohttp.ClientSession, str]:
    """A browser signed in as ``person`` through a one-time link; and its CSRF token."""
    link = f"link-for-{person}"
    await desk.repo.create_link(link, valid_for=timedelta(minutes=5), platform_user=person)
    client = _client()
    assert await _sign_in(client, desk.base, link=link) == 303
    async with client.get(desk.base + "/console/tickets") as response:
        found = re.search(r'name="csrf-token" content="([^"]+)"', await response.text())
    assert found is not None
    return client, found[1]


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with client.get(url, allow_redirects=False) as response:
        return response.status, await response.text()


async def _post(client: aiohttp.ClientSession, url: str, form: dict[str, str]) -> int:
    async with client.post(url, data=form, allow_redirects=False) as response:
        return response.status


async def test_a_tenant_admin_sees_and_acts_on_that_tenant_only(desk: Desk) -> None:
    base, b = desk.base, desk.ticket_b
    [entry_b] = await desk.knowledge.entries(tenant="TB")
    client, csrf = await _as(desk, ADMIN_A)
    async with client:
        status, html = await _get(client, base + "/console/conversations")
        assert status == 200 and "slack:TA/UCUST" in html and "slack:TB/UCUST" not in html
        status, html = await _get(client, base + "/console/tickets")
        assert f"#{desk.ticket_a.id}</a>" in html and f"#{b.id}</a>" not in html
        status, html = await _get(client, base + "/console/knowledge")
        assert status == 200 and ENTRY_A in html and ENTRY_B not in html
        assert ADMIN_A in html  # who is signed in
        # B's things, asked for by filter or by id: refused, with the reason.
        for path in (
            "/console/conversations?tenant=TB",
            "/console/tickets?tenant=TB",
            "/console/knowledge?tenant=TB",
            "/console/knowledge?tenant=~",
            f"/console/conversations/{desk.conversation_b}",
            f"/console/conversations/{desk.conversation_b}/export.json",
            f"/console/tickets/{b.id}",
            f"/console/knowledge/entries/{entry_b.id}",
            "/console/knowledge/try?q=depot&as=TB",
            "/console/api/overview?tenant=TB",
        ):
            status, html = await _get(client, base + path)
            assert status == 403, path
            assert SAID_B not in html and ENTRY_B not in html, path
        status, html = await _get(client, base + f"/console/tickets/{b.id}")
        assert "belongs to a tenant you do not serve" in html
        # Acting on B: refused, and nothing changes.
        for action in ("claim", "note", "reply", "resolve"):
            form = {"csrf": csrf, "action": f"act-{action}-0001", "text": "Hello from A"}
            assert await _post(client, base + f"/console/tickets/{b.id}/{action}", form) == 403
        after = await desk.tickets.get(b.id)
        assert after is not None and (after.state, after.agent) == ("waiting", "")
        assert not [e for e in await desk.tickets.events(b.id) if "Hello from A" in e.text]
        remove = base + f"/console/knowledge/entries/{entry_b.id}/remove"
        assert await _post(client, remove, {"csrf": csrf}) == 403
        added = {"csrf": csrf, "question": "Sneaky?", "answer": "Yes.", "entry_tenant": "TB"}
        assert await _post(client, base + "/console/knowledge/entries", added) == 403
        forget = {"csrf": csrf, "user": "slack:TB/UCUST", "confirm": "yes"}
        assert await _post(client, base + "/console/users/forget", forget) == 403
    assert [e.question for e in await desk.knowledge.entries(tenant="TB")] == [ENTRY_B]
    [found] = await desk.repo.find_conversations(text="BISON")
    assert found.address.tenant == "TB"

    # The owner's shared token reaches every tenant.
    async with _client() as owner:
        assert await _sign_in(owner, base, token=SHARED_TOKEN) == 303
        status, html = await _get(owner, base + "/console/conversations")
        assert status == 200 and "slack:TA/UCUST" in html and "slack:TB/UCUST" in html
        assert (await _get(owner, base + f"/console/tickets/{b.id}"))[0] == 200


async def test_an_agent_sees_its_tenants_tickets_and_nothing_else(desk: Desk) -> None:
    base = desk.base
    client, _ = await _as(desk, AGENT_A)
    async with client:
        status, html = await _get(client, base + "/console/tickets")
        assert status == 200 and f"#{desk.ticket_a.id}</a>" in html
        assert ">Conversations</a>" not in html  # no links to pages that would refuse
        status, html = await _get(client, base + f"/console/tickets/{desk.ticket_a.id}")
        assert status == 200 and "<strong>Language:</strong> svenska (sv)" in html
        assert (await _get(client, base + f"/console/tickets/{desk.ticket_b.id}"))[0] == 403
        status, _ = await _get(client, base + "/console")
        assert status == 303  # to the tickets, the agent's page
        for path in ("/console/conversations", "/console/knowledge", "/console/api/overview"):
            status, html = await _get(client, base + path)
            assert status == 403, path
            assert "not an admin of any tenant" in html, path
        # A role taken away closes the console with the next request.
        await TeamRepository(desk.db).set_role("TA", AGENT_A, None, by=OWNER)
        assert (await _get(client, base + "/console/tickets"))[0] == 403


async def test_a_console_ticket_action_is_audited_as_the_person_signed_in(desk: Desk) -> None:
    a = desk.ticket_a
    client, csrf = await _as(desk, ADMIN_A)
    async with client:
        # A typed name is no longer who acts.
        form = {"csrf": csrf, "action": "act-claim-0001", "agent_name": "Mallory"}
        assert await _post(client, desk.base + f"/console/tickets/{a.id}/claim", form) == 303
        status, html = await _get(client, desk.base + f"/console/tickets/{a.id}")
        assert status == 200 and 'name="agent_name"' not in html
    claimed = await desk.tickets.get(a.id)
    assert claimed is not None and claimed.agent == ADMIN_A
    entries = await TeamRepository(desk.db).audit_entries(tenant="TA")
    [claim] = [e for e in entries if e.action == "ticket.claim"]
    assert claim.actor == ADMIN_A
    assert not [e for e in entries if "Mallory" in e.actor]


async def test_a_link_for_someone_without_a_role_signs_nobody_in(desk: Desk) -> None:
    # A link made before the role was taken away no longer signs in.
    await desk.repo.create_link("link-late", valid_for=timedelta(minutes=5), platform_user=ADMIN_B)
    await TeamRepository(desk.db).set_role("TB", ADMIN_B, None, by=OWNER)
    async with _client() as client:
        async with client.get(desk.base + "/console/login") as response:
            found = re.search(r'name="csrf" value="([^"]+)"', await response.text())
        assert found is not None
        async with client.post(
            desk.base + "/console/login", data={"csrf": found[1], "link": "link-late"}
        ) as response:
            assert response.status == 401
            assert "has no role in any tenant" in await response.text()
        assert (await _get(client, desk.base + "/console/tickets"))[0] == 303


# -- the command line: links and personal tokens --------------------------------------


async def _deskmate(url: str, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DESKMATE_ADMINS": OWNER,
        "PYTHONPATH": str(ROOT),
    }
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "DESKMATE_CONSOLE_TOKEN"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def file_db(tmp_path: Path) -> AsyncIterator[tuple[str, Database]]:
    url = f"sqlite:///{tmp_path / 'deskmate.db'}"
    db = Database(url)
    await db.upgrade()
    await TeamRepository(db).set_role("TA", ADMIN_A, "admin", by=OWNER)
    yield url, db
    await db.dispose()


async def test_a_link_for_a_user_without_a_role_is_refused(file_db: tuple[str, Database]) -> None:
    url, db = file_db
    for who, why in (
        ("slack:TA/UNOBODY", "has no role"),
        ("Robin", "is not a platform user id"),
    ):
        code, out, err = await _deskmate(url, "console", "link", "--user", who)
        assert (code, out) == (2, ""), err
        assert why in err
    code, out, err = await _deskmate(url, "console", "token", "--user", "slack:TA/UNOBODY")
    assert (code, out) == (2, "") and "has no role" in err
    # A person with a role, and an owner from DESKMATE_ADMINS, get their link.
    for who in (ADMIN_A, OWNER):
        code, out, err = await _deskmate(url, "console", "link", "--user", who)
        assert code == 0, err
        assert "/console/login?link=" in out and who in err
        http, base = await _serve(db)
        try:
            async with _client() as client:
                link = out.strip().split("link=", 1)[1]
                assert await _sign_in(client, base, link=link) == 303
                status, html = await _get(client, base + "/console/tickets")
                assert status == 200 and who in html
        finally:
            await http.stop()


async def test_a_revoked_token_no_longer_signs_in(file_db: tuple[str, Database]) -> None:
    url, db = file_db
    code, out, err = await _deskmate(url, "console", "token", "--user", ADMIN_A)
    assert code == 0, err
    token = out.strip()
    assert len(token) >= 32
    http, base = await _serve(db)
    try:
        async with _client() as client:
            assert await _sign_in(client, base, token=token) == 303
            status, html = await _get(client, base + "/console/tickets")
            assert status == 200 and ADMIN_A in html
            code, _, err = await _deskmate(url, "console", "token", "--user", ADMIN_A, "--revoke")
            assert code == 0 and "revoked 1 token" in err
            # Its session ends with it, and it signs in no more.
            status, _ = await _get(client, base + "/console/tickets")
            assert status == 303
            assert await _sign_in(client, base, token=token) == 401
    finally:
        await http.stop()
