"""Support spaces per tenant inside one process, on SQLite and PostgreSQL:
which space serves which tenant, /tickets and /takeover within those tenants,
ticket actions refused on a tenant the space does not serve, /desk, and the
plain answer where no space serves a customer. Platform channels are in
memory; tests/e2e/test_desks_per_tenant.py runs the real Slack adapter."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection, select

from bot.handoff.config import HandoffConfigError, HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.manager import ConversationManager
from bot.settings import Settings
from bot.types import Reply
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.models import conversations
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.bot.handoff.test_handoff import FakeChannel
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

NO_DESK = (
    "No person from a support team can be reached here, so I can't put you through "
    "to one. I've noted your request for the team that runs this bot."
)
NOT_SERVED = "belongs to a workspace this support space does not serve"


def handoff(spaces: str, *, oauth: bool) -> HandoffSettings:
    """The handoff settings an operator's environment makes."""
    env = {"DESKMATE_HANDOFF_CHAT": spaces, "TELEGRAM_BOT_TOKEN": "1:abc"}
    if oauth:
        env |= {
            "SLACK_CLIENT_ID": "1.2",
            "SLACK_CLIENT_SECRET": "secret",
            "SLACK_SIGNING_SECRET": "signing",
            "DESKMATE_SECRET_KEY": Fernet.generate_key().decode(),
        }
    else:
        env |= {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "signing"}
    return Settings.from_env(env).handoff


Desk = tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel], KnowledgeBase]
Build = Callable[[HandoffSettings], Desk]


@pytest.fixture
def build(repository: Repository, backend: FakeBackend) -> Build:
    """A manager, its help desk on ``settings``, an outbox worker and in-memory platforms."""

    def make(settings: HandoffSettings) -> Desk:
        kb = KnowledgeBase(
            repository=KnowledgeRepository(repository.db),
            embedder=HashingEmbedder(),
            background=(),
            refresh_interval=0.0,
        )
        desk = HelpDesk(settings=settings, tickets=HandoffRepository(repository.db))
        manager = make_manager(repository, backend, knowledge=kb, desk=desk)
        channels = {name: FakeChannel(name) for name in ("slack", "telegram", "web", "test")}
        return manager, OutboxWorker(desk=desk, channels=channels), channels, kb

    return make


async def conversation_of(repository: Repository, tenant: str, chat: str) -> int:
    """The id of the conversation in ``chat`` of ``tenant``."""

    def op(conn: Connection) -> int:
        query = select(conversations.c.id).where(
            conversations.c.tenant == tenant, conversations.c.chat == chat
        )
        return int(conn.execute(query).scalar_one())

    return await repository.db.run(op, what="find a conversation")


async def say(manager: ConversationManager, text: str, **kw: object) -> Reply:
    return await manager.handle(make_inbound(text, **kw), Rendered())  # type: ignore[arg-type]


def slack(team: str, chat: str, user: str, thread: str = "") -> dict[str, str]:
    return {
        "platform": "slack",
        "tenant": team,
        "chat": chat,
        "user": f"{team}/{user}",
        "thread": thread,
    }


def recent_numbers(listing: str) -> set[int]:
    _, _, recent = listing.partition("Recent conversations")
    return {int(n) for n in re.findall(r"(?m)^(\d+) · ", recent)}


def test_spaces_serve_own_foreign_and_every_tenant() -> None:
    spaces = "telegram:-100,slack:TA/CA,*slack:TOPS/CDESK"
    oauth = handoff(spaces, oauth=True)
    group, a_space, central = oauth.spaces
    assert central.central and not a_space.central and central.key == "slack:TOPS/CDESK"
    # The deployment's own tenants reach the Telegram group; a foreign workspace
    # reaches its own space, else the central desk.
    assert oauth.space_for("web", "local") == group
    assert oauth.space_for("telegram", "42") == group
    assert oauth.space_for("slack", "TA") == a_space
    assert oauth.space_for("slack", "TC") == central
    assert not oauth.serves(a_space, "slack", "TC") and not oauth.serves(group, "slack", "TA")
    assert oauth.serves(central, "slack", "TC") and oauth.serves(central, "web", "local")
    assert handoff("slack:TA/CA", oauth=True).space_for("slack", "TB") is None
    # With one bot token its workspace is the deployment's own: today's set-ups keep working.
    single = handoff("slack:TA/CA", oauth=False)
    assert single.space_for("web", "local") == single.spaces[0]
    assert single.space_for("telegram", "42") == single.spaces[0]
    with pytest.raises(HandoffConfigError, match="leading \\* makes a central desk"):
        parse_spaces("*slack:TA")


async def test_a_space_lists_and_takes_over_only_the_tenants_it_serves(
    repository: Repository, build: Build
) -> None:
    manager, worker, channels, _ = build(handoff("slack:TA/CA,slack:TB/CB", oauth=True))
    await say(manager, "hello from A", **slack("TA", "DA", "UCA"))
    await say(manager, "hello from B", **slack("TB", "DB", "UCB"))
    await say(manager, "hello from the web", platform="web", tenant="local", chat="s1", user="s1")
    a, b, web = [
        await conversation_of(repository, tenant, chat)
        for tenant, chat in (("TA", "DA"), ("TB", "DB"), ("local", "s1"))
    ]
    listing = (await say(manager, "/tickets", **slack("TB", "CB", "UAG"))).text
    assert recent_numbers(listing) == {b}
    for other in (a, web):
        refused = await say(manager, f"/takeover {other}", **slack("TB", "CB", "UAG"))
        assert NOT_SERVED in refused.text
    taken = await say(manager, f"/takeover {b}", **slack("TB", "CB", "UAG"))
    assert taken.text.startswith(f"You have conversation {b}")
    await worker.flush()
    assert [(ref.tenant, ref.chat) for ref, _, _ in channels["slack"].tickets] == [("TB", "CB")]


async def test_ticket_actions_in_a_space_that_no_longer_serves_the_tenant_are_refused(
    build: Build, backend: FakeBackend
) -> None:
    # With one bot token, workspace TA's customer reaches the (own) space CB.
    manager, worker, channels, _ = build(handoff("slack:TB/CB", oauth=False))
    backend.enqueue("summary")
    await say(manager, "/human", **slack("TA", "DA", "UCA"))
    await worker.flush()
    [(space, _, _)] = channels["slack"].tickets
    assert (space.tenant, space.chat) == ("TB", "CB")
    # Then the app is installed through OAuth: TA is a foreign workspace now.
    assert manager.desk is not None
    manager.desk.settings = handoff("slack:TB/CB", oauth=True)
    [ticket] = await manager.desk.tickets.open_tickets()
    relayed = len([ref for ref, _, _ in channels["slack"].posts if ref.chat == "DA"])
    thread = "100"
    for text in ("Your order shipped.", "/claim", "resolve", "/note call back"):
        refused = await say(manager, text, **slack("TB", "CB", "UAG", thread))
        assert refused.text == (
            f"Ticket #{ticket.id} belongs to a workspace this support space does not serve; "
            "nothing was done."
        )
    await worker.flush()
    assert len([ref for ref, _, _ in channels["slack"].posts if ref.chat == "DA"]) == relayed
    # The customer's follow-up stays on the ticket (for the console), out of TB's space.
    in_space = len(channels["slack"].texts("CB"))
    follow = await say(manager, "my card ends 4242", **slack("TA", "DA", "UCA"))
    assert follow.text == ""
    await worker.flush()
    assert len(channels["slack"].texts("CB")) == in_space
    assert not any("4242" in text for text in channels["slack"].texts("CB"))
    after = await manager.desk.tickets.get(ticket.id)
    assert after is not None and after.state == "waiting"
    kinds = [e.kind for e in await manager.desk.tickets.events(ticket.id)]
    assert kinds == ["opened", "from_customer"]


async def test_desk_here_off_and_default_take_precedence_over_the_environment(
    repository: Repository, build: Build, backend: FakeBackend
) -> None:
    manager, worker, channels, _ = build(handoff("slack:TA/CA,*slack:TOPS/CDESK", oauth=True))
    roles = TeamRepository(repository.db)
    await roles.set_role("TC", "slack:TC/UADM", "admin", by="test")
    refused = await say(manager, "/desk here", **slack("TC", "CC", "UCUST"))
    assert refused.text == "Sorry, /desk is only for this bot's admins."
    in_dm = await say(manager, "/desk here", **slack("TC", "DC", "UADM"))
    assert "not a direct message" in in_dm.text
    assert (
        "the deployment's settings"
        in (await say(manager, "/desk", **slack("TC", "CC", "UADM"))).text
    )
    assert "slack:TOPS/CDESK" in (await say(manager, "/desk", **slack("TC", "CC", "UADM"))).text

    here = await say(manager, "/desk here", **slack("TC", "CC", "UADM"))
    assert here.text.startswith("This chat is now the support space")
    assert manager.listens_to(make_inbound("x", **slack("TC", "CC", "U1")).ref)
    backend.enqueue("summary")
    await say(manager, "/human", **slack("TC", "DC", "UCUST"))
    await worker.flush()
    assert [(r.tenant, r.chat) for r, _, _ in channels["slack"].tickets] == [("TC", "CC")]
    # The central desk no longer serves a tenant that chose for itself.
    listing = (await say(manager, "/tickets", **slack("TOPS", "CDESK", "UOPS"))).text
    assert not recent_numbers(listing)

    off = await say(manager, "/desk off", **slack("TC", "CC", "UADM"))
    assert off.text.startswith("No support space for this workspace now")
    assert not manager.listens_to(make_inbound("x", **slack("TC", "CC", "U1")).ref)
    assert (await say(manager, "/human", **slack("TC", "DC2", "UOTHER"))).text == NO_DESK
    default = await say(manager, "/desk default", **slack("TC", "CC", "UADM"))
    assert "slack:TOPS/CDESK" in default.text
    backend.enqueue("summary")
    await say(manager, "/human", **slack("TC", "DC3", "UTHIRD"))
    await worker.flush()
    assert [(r.tenant, r.chat) for r, _, _ in channels["slack"].tickets][-1] == ("TOPS", "CDESK")
    audited = [
        (e.action, e.actor) for e in await roles.audit_entries(tenant="TC", newest_first=False)
    ]
    assert [a for a in audited if a[0].startswith("desk.")] == [
        ("desk.here", "slack:TC/UADM"),
        ("desk.off", "slack:TC/UADM"),
        ("desk.default", "slack:TC/UADM"),
    ]


async def test_without_a_space_for_the_tenant_an_escalation_is_answered_plainly(
    repository: Repository, build: Build
) -> None:
    manager, worker, channels, kb = build(handoff("slack:TA/CA", oauth=True))
    await TeamRepository(repository.db).set_role("TB", "slack:TB/UADM", "admin", by="test")
    moded = await say(manager, "/mode faq --tenant", **slack("TB", "DB", "UADM"))
    assert "faq" in moded.text
    reply = await say(manager, "Where is my parcel?", **slack("TB", "DB", "UCB"))
    assert reply.text and "asked a person" not in reply.text
    await worker.flush()
    assert channels["slack"].tickets == []
    assert await manager.desk.tickets.open_tickets() == []  # type: ignore[union-attr]
    assert (await say(manager, "/human", **slack("TB", "DB", "UCB"))).text == NO_DESK
    reasons = [e.reason for e in await kb.repository.escalations() if e.tenant == "TB"]
    assert "the customer asked for a person" in reasons


async def test_a_tenants_choice_is_seen_by_every_worker(
    repository: Repository, build: Build
) -> None:
    settings = handoff("*slack:TOPS/CDESK", oauth=True)
    first, _, _, _ = build(settings)
    second, worker, channels, _ = build(settings)  # another process on the same database
    await TeamRepository(repository.db).set_role("TC", "slack:TC/UADM", "admin", by="test")
    ref = make_inbound("x", **slack("TC", "CC", "U1")).ref
    assert not second.listens_to(ref)
    await say(first, "/desk here", **slack("TC", "CC", "UADM"))
    assert second.desk is not None
    # Tickets go to the chosen space at once; listening follows within a refresh.
    await say(second, "/human", **slack("TC", "DC", "UCUST"))
    await worker.flush()
    assert [(r.tenant, r.chat) for r, _, _ in channels["slack"].tickets] == [("TC", "CC")]
    await second.desk.spaces.refresh()
    assert second.listens_to(ref)
