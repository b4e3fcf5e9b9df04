"""Support spaces per tenant, through the real Slack adapter (Bolt over HTTP,
installed into several workspaces through OAuth) against the local fake
Slack, with the outbox worker sending, on SQLite and PostgreSQL.

Workspaces A and B have support spaces of their own, C has none (until its
admin picks one with ``/desk here``), and in a second run a central desk in
an operations workspace serves every tenant that did not choose for itself.
Every customer writes a marker of their own, and no marker may show up in
another workspace's Slack.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import Connection, select

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
from adapters.slack.oauth import InstallationStore, OAuthConfig
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.settings import Settings
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.models import tickets
from storage.repository import Repository
from storage.slack_repo import SlackRepository, TokenCipher
from storage.team_repo import TeamRepository
from tests.bot.handoff.test_desks import conversation_of
from tests.conftest import make_manager
from tests.e2e.test_slack_events import SECRET, _serve
from tests.fakes.slack_api import (
    FakeSlack,
    Message,
    OAuthApp,
    Workspace,
    deliver,
    message_event,
    sign,
    slash_command,
)

TEAMS = ("TA", "TB", "TC", "TOPS")
SIGNATURE = "Acme support"
NO_DESK = (
    "No person from a support team can be reached here, so I can't put you through "
    "to one. I've noted your request for the team that runs this bot."
)
NOT_SERVED = "belongs to a workspace this support space does not serve"


@dataclass
class Run:
    """One deployment serving the fake Slack: its adapter's URL and its help desk."""

    fake: FakeSlack
    url: str
    session: aiohttp.ClientSession
    desk: HelpDesk
    kb: KnowledgeBase

    async def post(self, payload: dict[str, object]) -> None:
        assert await deliver(self.session, self.url, SECRET, payload) == 200

    async def dm(self, team: str, user: str, text: str) -> None:
        """A customer of ``team`` writes to the bot in their direct messages (D+team+user)."""
        await self.post(message_event(text, channel=dm_of(team, user), user=user, team=team))

    async def command(self, text: str, *, team: str, channel: str, user: str) -> str:
        """``/deskmate TEXT`` in ``channel``; returns what the bot answered."""
        before = len(self.fake.webhook_posts)
        body = slash_command(
            text, response_url=self.fake.response_url(), channel=channel, user=user, team=team
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            assert response.status == 200
        await self.fake.wait_for(lambda: len(self.fake.webhook_posts) > before, within=30)
        return unescape(self.fake.webhook_posts[-1]["text"])

    async def agent_says(self, text: str, ticket: Message, *, team: str, user: str) -> None:
        """An agent's plain message in a ticket's thread."""
        await self.post(
            message_event(
                text,
                channel=ticket.channel,
                channel_type="channel",
                thread_ts=ticket.ts,
                user=user,
                team=team,
            )
        )


def dm_of(team: str, user: str) -> str:
    return f"D{team}{user}"


def said_to(fake: FakeSlack, team: str, user: str) -> list[str]:
    return [unescape(m.text) for m in fake.bot_messages(dm_of(team, user))]


def tickets_in(fake: FakeSlack, channel: str) -> list[Message]:
    return fake.bot_messages(channel, "")


async def one_more_ticket(fake: FakeSlack, channel: str, count: int) -> Message:
    await fake.wait_for(lambda: len(tickets_in(fake, channel)) == count, within=30)
    return tickets_in(fake, channel)[-1]


def recent_numbers(listing: str) -> set[int]:
    """The conversation numbers /tickets offers to take over."""
    _, _, recent = listing.partition("Recent conversations")
    return {int(n) for n in re.findall(r"(?m)^(\d+) · ", recent)}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(
        workspaces=[
            Workspace(team, f"xoxb-{team}-1", bot_user_id=f"UBOT{team}", bot_id=f"BBOT{team}")
            for team in TEAMS
        ],
        oauth=OAuthApp(),
    ).start()
    yield server
    await server.stop()


async def install_all(installs: SlackRepository, fake: FakeSlack) -> None:
    store = InstallationStore(installs)
    for team in TEAMS:
        workspace = fake.workspace(team)
        await store.async_save(
            Installation(
                app_id="A1",
                enterprise_id=None,
                team_id=team,
                team_name=team,
                bot_token=workspace.bot_token,
                bot_id=workspace.bot_id,
                bot_user_id=workspace.bot_user_id,
                bot_scopes=["chat:write"],
                user_id=f"UINSTALL{team}",
                installed_at=datetime.now(UTC).timestamp(),
            )
        )


@asynccontextmanager
async def deployment(
    repository: Repository,
    backend: FakeBackend,
    fake: FakeSlack,
    installs: SlackRepository,
    spaces: str,
) -> AsyncIterator[Run]:
    """`DESKMATE_HANDOFF_CHAT=spaces` with Slack installed through OAuth."""
    db = repository.db
    kb = KnowledgeBase(
        repository=KnowledgeRepository(db),
        embedder=HashingEmbedder(),
        background=(),
        refresh_interval=0.0,
    )
    # As an operator configures it: OAuth installs, the support spaces listed.
    settings = Settings.from_env(
        {
            "DESKMATE_HANDOFF_CHAT": spaces,
            "DESKMATE_HANDOFF_SIGNATURE": SIGNATURE,
            "SLACK_CLIENT_ID": "1111.2222",
            "SLACK_CLIENT_SECRET": "oauth-client-secret",
            "SLACK_SIGNING_SECRET": SECRET,
            "DESKMATE_SECRET_KEY": Fernet.generate_key().decode(),
        }
    )
    desk = HelpDesk(settings=settings.handoff, tickets=HandoffRepository(db))
    manager = make_manager(repository, backend, knowledge=kb, desk=desk)
    adapter = SlackAdapter(
        oauth=OAuthConfig(client_id="1111.2222", client_secret="s", repository=installs),
        signing_secret=SECRET,
        api_url=fake.api_url,
        edit_interval=0.05,
    )
    runner, url = await _serve(adapter)
    await adapter.start(manager)
    worker = OutboxWorker(desk=desk, channels={"slack": adapter}, interval=0.05)
    worker.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Run(fake, url, session, desk, kb)
    finally:
        await worker.stop(grace=2.0)
        await adapter.stop()
        await runner.cleanup()


async def ticket_count(repository: Repository) -> int:
    def op(conn: Connection) -> int:
        return len(conn.execute(select(tickets.c.id)).all())

    return await repository.db.run(op, what="count tickets")


def assert_markers_stay_home(fake: FakeSlack, homes: dict[str, set[str]]) -> None:
    """Every bot message that carries a customer's marker is in a workspace the
    marker may reach (its own, or a desk that serves it)."""
    for message in fake.bot_messages():
        text = unescape(message.text) + str(message.blocks or "")
        for marker, teams in homes.items():
            if marker in text:
                assert message.team in teams, (marker, message.team, message.channel, text)


async def test_no_ticket_list_takeover_or_relay_crosses_tenants(
    repository: Repository, backend: FakeBackend, fake: FakeSlack
) -> None:
    installs = SlackRepository(repository.db, TokenCipher(Fernet.generate_key().decode()))
    await install_all(installs, fake)
    roles = TeamRepository(repository.db)
    await roles.set_role("TC", "slack:TC/UADMC", "admin", by="test")
    await roles.set_role("TA", "slack:TA/UADMA", "admin", by="test")

    async with deployment(
        repository, backend, fake, installs, "slack:TA/CASUP,slack:TB/CBSUP"
    ) as run:
        await run.dm("TA", "UCA", "I want to talk to a person about order AAA-111")
        await run.dm("TB", "UCB", "I want to talk to a person about order BBB-222")
        await run.dm("TC", "UCC", "I want to talk to a person about order CCC-333")
        a_ticket = await one_more_ticket(fake, "CASUP", 1)
        b_ticket = await one_more_ticket(fake, "CBSUP", 1)
        assert "AAA-111" in unescape(a_ticket.text) and a_ticket.team == "TA"
        assert "BBB-222" in unescape(b_ticket.text) and b_ticket.team == "TB"
        # C has no space: told plainly, and the request is kept for the console.
        await fake.wait_for(lambda: bool(said_to(fake, "TC", "UCC")), within=30)
        assert said_to(fake, "TC", "UCC") == [NO_DESK]
        assert len(tickets_in(fake, "CASUP")) == 1
        assert await ticket_count(repository) == 2
        escalated = [e for e in await run.kb.repository.escalations() if e.tenant == "TC"]
        assert [e.reason for e in escalated] == ["the customer asked for a person"]
        # Each ticket was posted with its own workspace's token.
        posts = {c.args.get("channel"): c.token for c in fake.calls_of("chat.postMessage")}
        assert posts["CASUP"] == fake.workspace("TA").bot_token
        assert posts["CBSUP"] == fake.workspace("TB").bot_token

        conv_a = await conversation_of(repository, "TA", dm_of("TA", "UCA"))
        conv_b = await conversation_of(repository, "TB", dm_of("TB", "UCB"))
        conv_c = await conversation_of(repository, "TC", dm_of("TC", "UCC"))

        # B's space lists B's ticket and B's conversations only.
        listing = await run.command("tickets", team="TB", channel="CBSUP", user="UAGB")
        assert listing.count(" waiting") == 1 and f"conversation {conv_b}" in listing
        assert "UCA" not in listing and "UCC" not in listing
        assert recent_numbers(listing) == {conv_b}
        # ... and cannot take over another workspace's conversation.
        for other in (conv_a, conv_c):
            said = await run.command(f"takeover {other}", team="TB", channel="CBSUP", user="UAGB")
            assert NOT_SERVED in said
        assert await ticket_count(repository) == 2

        # Relays stay in their tenant: A's agent reaches A's customer only.
        await run.agent_says(
            "Your refund for AAA-111 is on its way.", a_ticket, team="TA", user="UAGA"
        )
        await run.agent_says("Parcel BBB-222 left the depot.", b_ticket, team="TB", user="UAGB")
        await fake.wait_for(
            lambda: (
                f"{SIGNATURE}: Your refund for AAA-111 is on its way." in said_to(fake, "TA", "UCA")
                and f"{SIGNATURE}: Parcel BBB-222 left the depot." in said_to(fake, "TB", "UCB")
            ),
            within=30,
        )
        # B's agent answering in A's ticket thread (posted in A's space) reaches nobody.
        await run.agent_says("BBB-999 wrong thread", a_ticket, team="TB", user="UAGB")

        # C's admin gives C a space of its own, from inside C: audited, used at once.
        chosen = await run.command("desk here", team="TC", channel="CCSUP", user="UADMC")
        assert chosen.startswith("This chat is now the support space")
        [entry] = [e for e in await roles.audit_entries(tenant="TC") if e.action == "desk.here"]
        assert (entry.actor, entry.target) == ("slack:TC/UADMC", "slack:TC/CCSUP")
        await run.dm("TC", "UCC2", "I want to talk to a person about order CCC-444")
        c_ticket = await one_more_ticket(fake, "CCSUP", 1)
        assert c_ticket.team == "TC" and "CCC-444" in unescape(c_ticket.text)
        await run.agent_says("CCC-444 is fixed.", c_ticket, team="TC", user="UAGC")
        await fake.wait_for(
            lambda: f"{SIGNATURE}: CCC-444 is fixed." in said_to(fake, "TC", "UCC2"), within=30
        )
        listing = await run.command("tickets", team="TC", channel="CCSUP", user="UAGC")
        assert recent_numbers(listing) <= {
            conv_c,
            await conversation_of(repository, "TC", dm_of("TC", "UCC2")),
        }
        said = await run.command(f"takeover {conv_a}", team="TC", channel="CCSUP", user="UAGC")
        assert NOT_SERVED in said

    # The second run: B's space is gone from the settings; a central desk in
    # the operations workspace serves every tenant without a space of its own.
    async with deployment(
        repository, backend, fake, installs, "slack:TA/CASUP,*slack:TOPS/CDESK"
    ) as run:
        await run.dm("TB", "UCB2", "I want to talk to a person about order BBB-444")
        await run.dm("TA", "UCA2", "I want to talk to a person about order AAA-222")
        central = await one_more_ticket(fake, "CDESK", 1)
        assert "BBB-444" in unescape(central.text) and central.team == "TOPS"
        a2_ticket = await one_more_ticket(fake, "CASUP", 2)
        assert "AAA-222" in unescape(a2_ticket.text)

        conv_b2 = await conversation_of(repository, "TB", dm_of("TB", "UCB2"))
        conv_c2 = await conversation_of(repository, "TC", dm_of("TC", "UCC2"))
        await run.dm("TA", "UCA3", "hello AAA-333")
        await fake.wait_for(lambda: "echo: hello AAA-333" in said_to(fake, "TA", "UCA3"), 30)
        conv_a3 = await conversation_of(repository, "TA", dm_of("TA", "UCA3"))

        # The central desk sees A and B; C chose its own space, which takes precedence.
        listing = await run.command("tickets", team="TOPS", channel="CDESK", user="UOPS")
        offered = recent_numbers(listing)
        assert {conv_b2, conv_a3} <= offered and conv_c2 not in offered
        assert NOT_SERVED in await run.command(
            f"takeover {conv_c2}", team="TOPS", channel="CDESK", user="UOPS"
        )
        taken = await run.command(f"takeover {conv_a3}", team="TOPS", channel="CDESK", user="UOPS")
        assert taken.startswith(f"You have conversation {conv_a3}")
        await one_more_ticket(fake, "CDESK", 2)
        # A's own space still sees A only.
        listing = await run.command("tickets", team="TA", channel="CASUP", user="UAGA")
        assert conv_b2 not in recent_numbers(listing)
        assert NOT_SERVED in await run.command(
            f"takeover {conv_b2}", team="TA", channel="CASUP", user="UAGA"
        )
        # B's old channel is no support space now: a late reply there reaches nobody.
        await run.agent_says("BBB-222 late answer", b_ticket, team="TB", user="UAGB")
        await run.agent_says("BBB-444 is on its way.", central, team="TOPS", user="UOPS")
        await fake.wait_for(
            lambda: f"{SIGNATURE}: BBB-444 is on its way." in said_to(fake, "TB", "UCB2"), 30
        )
        await asyncio.sleep(0.5)

    assert not any("late answer" in t for t in said_to(fake, "TB", "UCB"))
    assert not any("wrong thread" in t for t in said_to(fake, "TA", "UCA"))
    assert_markers_stay_home(
        fake,
        {
            "AAA-111": {"TA"},
            "AAA-222": {"TA"},
            "AAA-333": {"TA", "TOPS"},
            "BBB-222": {"TB"},
            "BBB-444": {"TB", "TOPS"},
            "BBB-999": {"TB"},
            "CCC-333": {"TC"},
            "CCC-444": {"TC"},
        },
    )
