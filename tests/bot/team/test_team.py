"""The support team's controls through the manager, on SQLite and PostgreSQL:
roles per tenant, the audit trail, quotas and model cost, drafts that belong to
their author, and ratings."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bot.knowledge import drafting
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.team.service import INVITATION, QUOTA_NOTICE, RATING_BUTTONS, Team, TeamSettings
from bot.types import ReplyKind
from llm.base import ChatMessage, GenerationRequest, LLMError, TextDelta, Usage
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

CSV = (
    "id,question,answer,source\n"
    "hours-1,What are your opening hours?,We are open 9-17 on weekdays.,Contact page\n"
)
OWNER = {"user": "admin"}


@pytest.fixture
async def kb(repository: Repository, tmp_path: Path) -> KnowledgeBase:
    knowledge = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    path = tmp_path / "faq.csv"
    path.write_text(CSV, encoding="utf-8")
    await knowledge.import_file(path)
    return knowledge


def team_of(repository: Repository, **settings: object) -> Team:
    return Team(
        TeamRepository(repository.db),
        owners={"test:admin"},
        settings=TeamSettings(**settings),  # type: ignore[arg-type]
    )


async def ask(manager: ConversationManager, text: str, **kw: str) -> str:
    seen = Rendered()
    reply = await manager.handle(make_inbound(text, **kw), seen)
    assert seen.replies == ([reply.text] if reply.should_render else [])
    return reply.text


async def test_a_workspace_admin_cannot_touch_another_workspace(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, backend, knowledge=kb)
    t1 = {"tenant": "T1", "chat": "c-t1"}
    t2 = {"tenant": "T2", "chat": "c-t2"}
    # The owner makes boss1 an admin of T1 only.
    granted = await ask(manager, "/role boss1 admin", **OWNER, **t1)
    assert granted == "test:boss1 is now admin in tenant T1 (was customer)."
    added = await ask(manager, "/faq add Do you ship? | To the EU. ", user="owner2", **t2)
    assert "only for this bot's admins" in added
    await ask(manager, "/faq add --here Do you ship? | Only within T2.", **OWNER, **t2)
    [t2_entry] = await kb.repository.entries(tenant="T2")

    boss = {"user": "boss1", **t1}
    mine = await ask(manager, "/faq add Do you ship? | Yes, from T1 worldwide.", **boss)
    assert mine.startswith("Added FAQ entry") and "(this workspace only)" in mine
    assert [e.answer for e in await kb.repository.entries(tenant="T1")] == [
        "Yes, from T1 worldwide."
    ]
    assert [e.question for e in await kb.repository.entries(tenant="")] == [
        "What are your opening hours?"
    ]
    listed = await ask(manager, "/faq list", **boss)
    assert "Do you ship?" in listed and "opening hours" not in listed
    # T2's entry is not T1's to remove, nor is the shared FAQ.
    gone = await ask(manager, f"/faq remove {t2_entry.ref}", **boss)
    assert gone == f"There is no FAQ entry {t2_entry.ref} here."
    shared = await ask(manager, "/faq remove hours-1", **boss)
    assert "shared FAQ, which only owners edit" in shared
    assert len(await kb.repository.entries(tenant="T2")) == 1
    # In T2 boss1 is a customer.
    assert "only for this bot's admins" in await ask(manager, "/faq list", user="boss1", **t2)
    assert "only for this bot's admins" in await ask(manager, "/stats", user="boss1", **t2)
    # Their /stats is T1's alone; another tenant's needs an owner.
    await ask(manager, "what are your opening hours?", user="cust", **t2)
    stats = await ask(manager, "/stats", **boss)
    assert stats.startswith("Deskmate usage, tenant T1:") and "conversations: 1" in stats
    assert "own workspace" in await ask(manager, "/stats T2", **boss)
    assert "conversations: 1" in await ask(manager, "/stats T2", **OWNER, **t1)
    assert "every tenant" in await ask(manager, "/stats all", **OWNER, **t1)
    assert "own workspace" in await ask(manager, "/audit 5 T2", **boss)


async def test_a_role_change_takes_effect_at_once_and_is_audited(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, backend, knowledge=kb)
    help_before = await ask(manager, "/help")
    assert "/draft" not in help_before and "/role" not in help_before and "/rate" in help_before
    assert "only for this bot's agents and admins" in await ask(manager, "/draft email hi")
    assert "agent in tenant t1" in await ask(manager, "/role u1 agent", **OWNER)
    backend.enqueue("Subject: Hi")
    assert (await ask(manager, "/draft email say hello")).startswith("DRAFT")
    help_now = await ask(manager, "/help")
    assert "/draft" in help_now and "/role" not in help_now
    assert "only for this bot's admins" in await ask(manager, "/role u2 agent")
    # Display names and usernames are refused: only immutable ids.
    for name in ("@alice", "Alice Smith"):
        assert "not accepted" in await ask(manager, f"/role {name} agent", **OWNER)
    assert "/role USER" in await ask(manager, "/role u1 boss", **OWNER)
    assert "customer in tenant t1 (was agent)" in await ask(manager, "/role u1 customer", **OWNER)
    assert "only for this bot's agents and admins" in await ask(manager, "/draft email hi")
    audit = await ask(manager, "/audit", **OWNER)
    lines = audit.splitlines()
    assert lines[0] == "Last 2 staff actions in tenant t1:"
    assert "test:admin role test:u1 (from=agent, to=customer)" in lines[1]
    assert "test:admin role test:u1 (from=customer, to=agent)" in lines[2]
    roles = await ask(manager, "/roles", **OWNER)
    assert "test:u1" not in roles and "everyone is a customer" in roles


async def test_slack_ids_and_mentions_name_members_of_the_workspace(
    repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(repository, backend, admins={"slack:T1/UOWNER"})
    owner = {"platform": "slack", "tenant": "T1", "user": "T1/UOWNER"}
    assert "slack:T1/U123 is now agent" in await ask(manager, "/role <@U123> agent", **owner)
    assert "slack:T1/U456 is now admin" in await ask(manager, "/role U456 admin", **owner)
    assert "not a Slack member id" in await ask(manager, "/role jane agent", **owner)
    assert "not a member of this workspace" in await ask(
        manager, "/role slack:T2/U9 agent", **owner
    )
    admin = {"platform": "slack", "tenant": "T1", "user": "T1/U456"}
    assert "/roles" in await ask(manager, "/help", **admin)
    assert "can't change your own role" in await ask(manager, "/role U456 customer", **admin)
    listed = await ask(manager, "/roles", **admin)
    assert "slack:T1/U123: agent" in listed and "slack:T1/U456: admin" in listed
    other = {"platform": "slack", "tenant": "T2", "user": "T2/U456"}
    assert "only for this bot's admins" in await ask(manager, "/roles", **other)


async def test_a_user_over_quota_is_told_once_and_others_are_answered(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, backend, knowledge=kb)
    await ask(manager, "/mode assistant --tenant", **OWNER)
    assert (
        await ask(manager, "/quota user u1 20", **OWNER)
        == "Quota for test:u1 in tenant t1: 20 tokens a day."
    )
    backend.enqueue("Volcanoes are mountains that erupt now and then.")
    first = await ask(manager, "tell me about volcanoes please")
    assert first.startswith("Volcanoes are mountains")
    requests = len(backend.requests)
    assert await ask(manager, "and about geysers?") == QUOTA_NOTICE
    assert await ask(manager, "and about lakes?") == ""  # told once today
    assert len(backend.requests) == requests  # the model was not asked
    # The FAQ still answers verbatim, and commands work.
    assert (await ask(manager, "What are your opening hours?")).startswith("We are open")
    usage = await ask(manager, "/quota")
    assert "you: " in usage and "of 20" in usage
    # Someone else is answered as usual.
    backend.enqueue("Geysers spout hot water.")
    assert await ask(manager, "and about geysers?", user="u2") == "Geysers spout hot water."
    # Lifting the limit answers u1 again; the quota changes are audited.
    assert "no limit" in await ask(manager, "/quota user u1 off", **OWNER)
    backend.enqueue("Lakes are wet.")
    assert await ask(manager, "and about lakes?") == "Lakes are wet."
    audit = await ask(manager, "/audit 10", **OWNER)
    assert "quota test:u1 (daily_tokens=20)" in audit and "mode workspace" in audit
    assert "only admins change quotas" in (await ask(manager, "/quota tenant 5")).lower()


async def test_a_tenant_quota_covers_everyone_in_it(
    repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(repository, backend)
    await ask(manager, "/quota tenant 10", **OWNER)
    backend.enqueue("One two three four five six seven eight nine ten eleven.")
    assert (await ask(manager, "hello", user="u1")).startswith("One two")
    assert await ask(manager, "hello", user="u2") == QUOTA_NOTICE
    assert await ask(manager, "hello", user="u3", tenant="t2") == "echo: hello"


class TimedBackend(FakeBackend):
    """Reports its own model time, as a backend that measures it would."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        async for delta in super().stream(request):
            if delta.usage is not None:
                delta = TextDelta("", Usage(delta.usage.prompt_tokens, 3, model_seconds=0.25))
            yield delta


async def test_each_answer_records_its_tokens_and_model_seconds(
    repository: Repository,
) -> None:
    timed = TimedBackend()
    manager = make_manager(repository, timed)
    await ask(manager, "first question")
    await ask(manager, "second question")
    stats = await ask(manager, "/stats", **OWNER)
    assert "model answers: 2" in stats and "model time: 0.5 s" in stats
    assert "per model answer:" in stats and "0.25 s of model time" in stats
    assert "as reported by the model" in stats

    plain = make_manager(repository, FakeBackend())
    await ask(plain, "third question", tenant="t2")
    other = await ask(plain, "/stats", **OWNER, tenant="t2")
    assert "model answers: 1" in other and "wall time" in other


async def _stored_draft(kb: KnowledgeBase, key: str) -> drafting.Draft | None:
    raw = await kb.open_draft(key)
    return drafting.Draft.loads(raw) if raw else None


async def test_a_group_member_cannot_read_or_steer_an_agents_draft(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, backend, knowledge=kb)
    group = {"chat": "group"}
    await ask(manager, "/role agent1 agent", **OWNER, **group)
    await ask(manager, "/role agent2 agent", **OWNER, **group)
    await ask(manager, "/mode assistant", **OWNER, **group)
    backend.enqueue("Subject: Outage\n\nSECRET-PLAN for Sunday.")
    first = await ask(manager, "/draft email outage on Sunday", user="agent1", **group)
    assert "SECRET-PLAN" in first
    # A member's message is answered as usual, and the draft is not in what
    # the model sees for them.
    backend.enqueue("Happy to help.")
    answer = await ask(manager, "what did you write last? shorter", user="member", **group)
    assert answer == "Happy to help."
    seen: Sequence[ChatMessage] = backend.requests[-1].messages
    assert not any("SECRET-PLAN" in m.content for m in seen)
    draft = await _stored_draft(kb, make_inbound("x", **group).ref.key)
    assert draft is not None and draft.author == "test:agent1" and "SECRET-PLAN" in draft.text
    # Another agent can neither close it nor start one over it.
    assert "Someone else's draft" in await ask(manager, "/draft done", user="agent2", **group)
    assert "Someone else's draft" in await ask(
        manager, "/draft email other news", user="agent2", **group
    )
    # Its author revises it.
    backend.enqueue("Subject: Outage\n\nDown Sunday.")
    revised = await ask(manager, "shorter", user="agent1", **group)
    assert revised.startswith("DRAFT") and "(email, friendly, short)" in revised
    # A draft left alone for a day expires: its author's next message is a question again.
    key = make_inbound("x", **group).ref.key
    stale = await _stored_draft(kb, key)
    assert stale is not None
    old = drafting.Draft(**{**json.loads(stale.dumps()), "updated": time.time() - 25 * 3600})
    await kb.set_draft(key, old.dumps())
    backend.enqueue("Plain answer.")
    assert await ask(manager, "shorter", user="agent1", **group) == "Plain answer."
    # Another member's /reset leaves it; its author's removes it.
    await kb.set_draft(key, stale.dumps())
    await ask(manager, "/reset", user="member", **group)
    assert await kb.open_draft(key) is not None
    await ask(manager, "/reset", user="agent1", **group)
    assert await kb.open_draft(key) is None


async def test_a_rating_is_stored_against_the_answer_it_rates(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(
        repository, backend, knowledge=kb, team=team_of(repository, ask_rating="all")
    )
    seen = Rendered()
    question = make_inbound("What are your opening hours?")
    reply = await manager.handle(question, seen)
    assert reply.text.startswith("We are open 9-17") and reply.text.endswith(INVITATION)
    assert reply.buttons == RATING_BUTTONS
    rated = await ask(manager, "👎 I wanted the weekend hours")
    assert rated == "Thanks for telling us; the team will look at it."
    [rating] = await manager.team.repository.ratings()
    assert rating.inbound_id == reply.inbound_id and rating.score == -1
    assert rating.question == "What are your opening hours?"
    assert rating.comment == "I wanted the weekend hours"
    # Changing one's mind keeps the comment; someone else cannot rate it.
    assert await ask(manager, "/rate good") == "Thanks for the feedback!"
    [rating] = await manager.team.repository.ratings()
    assert rating.score == 1 and rating.comment == "I wanted the weekend hours"
    assert "Only the person" in await ask(manager, "/rate bad", user="u2")
    stats = await ask(manager, "/stats", **OWNER, chat="elsewhere")
    assert "ratings: 1 👍, 0 👎" in stats
    # Without an invitation a thumbs-up is an ordinary message.
    assert await ask(manager, "/rate good", chat="c9") == "There's nothing to rate here right now."
    kb_off = make_manager(repository, backend, knowledge=kb)  # the default: handoff only
    plain = await kb_off.handle(
        make_inbound("What are your opening hours?", chat="c10"), Rendered()
    )
    assert INVITATION not in plain.text and plain.buttons == ()
    await ask(kb_off, "/mode assistant", **OWNER, chat="c10")
    backend.enqueue("You're welcome.")
    assert await ask(kb_off, "👍", chat="c10") == "You're welcome."
    # A model answer that failed is nothing to rate: no buttons under it.
    await ask(manager, "/mode assistant", **OWNER, chat="c11")
    backend.enqueue(error=LLMError("down"))
    failed = await manager.handle(make_inbound("Tell me a story", chat="c11"), Rendered())
    assert failed.failed and failed.buttons == () and INVITATION not in failed.text


async def test_forget_removes_ratings_and_is_audited(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(
        repository, backend, knowledge=kb, team=team_of(repository, ask_rating="all")
    )
    await ask(manager, "What are your opening hours?")
    await ask(manager, "/rate bad too vague")
    assert len(await manager.team.repository.ratings()) == 1
    await ask(manager, "/forget")
    assert await manager.team.repository.ratings() == []
    audit = await ask(manager, "/audit", **OWNER, chat="other")
    assert "test:u1 forget test:u1" in audit


async def test_commands_say_who_may_run_them(
    repository: Repository, backend: FakeBackend, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, backend, knowledge=kb)
    everyone = {c.name for c in manager.commands.visible()}
    assert {"help", "reset", "forget", "human", "rate", "quota"} <= everyone
    assert not {"faq", "stats", "role", "audit", "draft", "learn"} & everyone
    assert {m.name for m in manager.menu()} == everyone
    owner_help = await ask(manager, "/help", **OWNER)
    assert "/role — " in owner_help and "(admins)" in owner_help
    assert "/draft — " in owner_help and "(agents and admins)" in owner_help
    assert "/learn" in owner_help
    assert "inside a ticket" in await ask(manager, "/learn", **OWNER)
    assert isinstance(ReplyKind.COMMAND, str)
