"""A Slack workspace that uninstalls the app is purged to the last word its
people wrote, and a reinstall afterwards is served like a new workspace:
real Bolt and slack-sdk against the local fake Slack, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from adapters.slack.adapter import SlackAdapter
from adapters.slack.oauth import OAuthConfig
from bot.manager import ConversationManager
from llm.fake import FakeBackend
from storage.addresses import ConversationAddress
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.models import conversations, slack_workspaces
from storage.repository import InboundEvent, Repository
from storage.slack_repo import SlackInstallation, SlackRepository, TokenCipher
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.fakes.slack_api import FakeSlack, Workspace, message_event, sign
from tests.storage.words import where_written
from tests.support import serve_local

SECRET = "purge-signing-secret"
KEY = Fernet.generate_key().decode()
MARK = "ZEBRA-7731"
TEAM = "T1"
SPACE = "CSUP"


@dataclass
class Served:
    fake: FakeSlack
    adapter: SlackAdapter
    installs: SlackRepository
    repository: Repository
    url: str
    statuses: list[int]

    async def deliver(self, payload: dict[str, Any]) -> int:
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", **sign(SECRET, body)}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=body, headers=headers) as response,
        ):
            self.statuses.append(response.status)
            return response.status


def _install(token: str) -> SlackInstallation:
    return SlackInstallation(
        enterprise_id="",
        team_id=TEAM,
        user_id="UADMIN",
        is_enterprise_install=False,
        bot_user_id="UBOT",
        bot_id="BBOT",
        installed_at=datetime.now(UTC),
        details={"team_name": "Acme"},
        secrets={"bot_token": token},
    )


@pytest.fixture
async def served(repository: Repository, backend: FakeBackend) -> AsyncIterator[Served]:
    fake = await FakeSlack(workspaces=[Workspace(TEAM, "xoxb-first", bot_user_id="UBOT")]).start()
    manager: ConversationManager = make_manager(repository, backend)
    installs = SlackRepository(repository.db, TokenCipher(KEY))
    await installs.save_installation(_install("xoxb-first"))
    adapter = SlackAdapter(
        oauth=OAuthConfig(
            client_id="1.2", client_secret="s", repository=installs, retention=timedelta(0)
        ),
        signing_secret=SECRET,
        api_url=fake.api_url,
        edit_interval=0.05,
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    await adapter.start(manager)
    url = f"http://127.0.0.1:{port}/slack/events"
    yield Served(fake, adapter, installs, repository, url, [])
    await adapter.stop()
    await runner.cleanup()
    await fake.stop()


def _answers(served: Served, text: str) -> list[str]:
    return [m.text for m in served.fake.bot_messages("D1") if m.text == f"echo: {text}"]


async def _write_everywhere(repository: Repository) -> None:
    """What the workspace's agents and admins (and its customers, beyond their
    DMs) leave in the other tables, written through the repositories."""
    db = repository.db
    knowledge, tickets, team = KnowledgeRepository(db), HandoffRepository(db), TeamRepository(db)
    agent, admin, customer = f"slack:{TEAM}/UAGENT", f"slack:{TEAM}/UADMIN", f"slack:{TEAM}/U2"
    # An agent in the workspace's support space answers a Telegram customer
    # (the space is a central desk): the relay and the ticket's log.
    telegram = ConversationAddress("telegram", "bot1", "42")
    asked = await repository.accept(
        InboundEvent(telegram, "tg-1", "telegram:42", "where is my parcel?", "Ann"), kind="chat"
    )
    ticket, _ = await tickets.open_ticket(
        asked.conversation_id,
        trigger="request",
        customer="telegram:42",
        customer_name="Ann",
        space=f"slack:{TEAM}/{SPACE}",
        space_chat=SPACE,
        details={"turns": []},
    )
    space = ConversationAddress("slack", TEAM, SPACE, "1.000001")
    said = await repository.accept(
        InboundEvent(space, "sl-agent-1", agent, f"it left today {MARK}", "Bo"), kind="chat"
    )
    await tickets.enqueue(
        f"relay:{said.inbound_id}",
        telegram,
        f"Support: it left today {MARK}",
        kind="to_customer",
        ticket_id=ticket.id,
    )
    await tickets.note(ticket.id, "to_customer", agent, f"it left today {MARK}")
    # An owner's command output in their own chat quotes the customer's DM.
    owner_chat = ConversationAddress("telegram", "bot1", "99")
    listed = await repository.accept(
        InboundEvent(owner_chat, "tg-2", "telegram:owner", "/tickets", "Olga"), kind="command"
    )
    await repository.record_answer(listed, text=f"#1 [{TEAM}] my order {MARK}", kind="command")
    # The admins: the workspace's persona and FAQ, and the audit entry.
    await knowledge.set_setting(f"tenant:{TEAM}", "persona", f"Be brief {MARK}")
    await team.audit(TEAM, admin, "persona", "workspace", {"to": f"Be brief {MARK}"})
    await knowledge.upsert_many(
        TEAM, [(EntryInput("Opening hours?", f"9 to 5 {MARK}"), None)], embedding_model=""
    )
    # A shared entry: the customer's wordings of it (their workspace's and one an
    # owner shared with everyone), and a learned question approved into it.
    learned = f"when do you open {MARK}"
    await knowledge.upsert_many(
        "",
        [(EntryInput("Refunds?", "Within 30 days.", external_id="refunds"), None)],
        embedding_model="",
    )
    entry = await knowledge.get("", "id:refunds")
    assert entry is not None
    for tenant, wording in ((TEAM, f"money back {MARK}"), ("", f"refund please {MARK}")):
        await knowledge.add_phrasing(
            tenant=tenant,
            entry_id=entry.id,
            text=wording,
            user_id=customer,
            embedding=b"\0\0\0\0",
            embedding_model="m",
        )
    proposal = await team.propose(
        tenant=TEAM,
        question=learned,
        answer="Within 30 days.",
        proposed_by=agent,
        target_ref="refunds",
        target_tenant="",
    )
    await knowledge.upsert_many(
        "",
        [
            (
                EntryInput(
                    "Refunds?", "Within 30 days.", alternatives=(learned,), external_id="refunds"
                ),
                None,
            )
        ],
        embedding_model="",
    )
    await team.decide(proposal, approved=True, by="telegram:owner", entry_ref="refunds")


async def _purged(repository: Repository) -> None:
    query = select(func.count()).select_from(slack_workspaces)
    async with asyncio.timeout(10):
        while await repository.db.run(lambda conn: conn.execute(query).scalar()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_purged_workspace_keeps_no_word_and_is_served_again_after_a_reinstall(
    served: Served,
) -> None:
    repository = served.repository
    assert await served.deliver(message_event(f"my order {MARK}", team=TEAM)) == 200
    await served.fake.wait_for(lambda: bool(_answers(served, f"my order {MARK}")))
    await served.adapter.wait_idle()
    await _write_everywhere(repository)
    assert await where_written(repository.db, MARK)

    assert await served.deliver(served.fake.uninstall(TEAM)) == 200
    await _purged(repository)
    assert await where_written(repository.db, MARK) == []
    count = select(func.count()).select_from(conversations)
    # The Telegram conversations stay; only the workspace's went.
    assert await repository.db.run(lambda conn: conn.execute(count).scalar()) == 2

    served.fake.workspace(TEAM).bot_token = "xoxb-second"
    await served.installs.save_installation(_install("xoxb-second"))
    assert await served.deliver(message_event("hello again", team=TEAM)) == 200
    await served.fake.wait_for(lambda: bool(_answers(served, "hello again")))
    await served.adapter.wait_idle()
    assert _answers(served, "hello again") == ["echo: hello again"]
    assert 500 not in served.statuses
