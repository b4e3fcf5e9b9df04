"""The support team's tables on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.repository import Repository
from storage.team_repo import EACH_USER, TENANT, TeamRepository
from tests.storage.support import make_event

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _usage(team: TeamRepository, tenant: str, user: str, tokens: int) -> None:
    await team.record_usage(
        tenant=tenant,
        user_id=user,
        inbound_id=None,
        plan="chat",
        prompt_tokens=tokens - 1,
        completion_tokens=1,
        model_seconds=0.5,
        seconds_source="wall",
    )


async def test_roles_are_per_tenant_and_every_change_is_audited(repository: Repository) -> None:
    team = TeamRepository(repository.db)
    assert await team.set_role("T1", "slack:T1/U1", "admin", by="owner") is None
    assert await team.set_role("T1", "slack:T1/U1", "agent", by="owner") == "admin"
    assert await team.role_of("T1", "slack:T1/U1") == "agent"
    assert await team.role_of("T2", "slack:T1/U1") is None
    assert [g.role for g in await team.roles("T1")] == ["agent"]
    assert await team.set_role("T1", "slack:T1/U1", None, by="owner") == "agent"
    assert await team.roles("T1") == []
    trail = await team.audit_entries(tenant="T1")
    assert [(e.action, e.details["to"]) for e in trail] == [
        ("role", "customer"),
        ("role", "agent"),
        ("role", "admin"),
    ]
    assert await team.audit_entries(tenant="T2") == []
    oldest = await team.audit_entries(newest_first=False, limit=1)
    assert oldest[0].as_json()["details"] == {"from": "customer", "to": "admin"}


async def test_quota_state_counts_today_and_picks_the_closest_limit(
    repository: Repository,
) -> None:
    team = TeamRepository(repository.db)
    await _usage(team, "T1", "u1", 30)
    await _usage(team, "T1", "u2", 50)
    await _usage(team, "T2", "u1", 1000)
    state = await team.quota_state("T1", "u1", since=TODAY, default_user=100)
    assert (state.user_used, state.tenant_used) == (30, 80)
    assert (state.user_limit, state.tenant_limit, state.exhausted) == (100, None, False)
    await team.set_quota("T1", EACH_USER, 40, by="admin")
    await team.set_quota("T1", "u1", 20, by="admin")
    assert (await team.quota_state("T1", "u1", since=TODAY)).exhausted
    assert (await team.quota_state("T1", "u2", since=TODAY, default_user=10)).user_limit == 40
    await team.set_quota("T1", TENANT, 80, by="admin")
    assert (await team.quota_state("T1", "u3", since=TODAY)).exhausted
    assert await team.quotas("T1") == {"": 80, "*": 40, "u1": 20}
    await team.set_quota("T1", TENANT, None, by="admin")
    assert "" not in await team.quotas("T1")
    tomorrow = TODAY + timedelta(days=1)
    assert (await team.quota_state("T1", "u1", since=tomorrow)).user_used == 0
    assert await team.first_quota_notice("T1", "u1", "2024-01-01")
    assert not await team.first_quota_notice("T1", "u1", "2024-01-01")
    assert await team.first_quota_notice("T1", "u1", "2024-01-02")


async def test_invitations_ratings_and_forgetting(repository: Repository) -> None:
    team = TeamRepository(repository.db)
    stored = await repository.accept(make_event("is it raining?", tenant="T1"), kind="chat")
    first = await team.invite_rating(
        tenant="T1",
        conversation_id=stored.conversation_id,
        user_id="test:u1",
        question="is it raining?",
        inbound_id=stored.inbound_id,
    )
    ticket = await team.invite_rating(
        tenant="T1",
        conversation_id=stored.conversation_id,
        user_id="test:u1",
        question="q",
        ticket_id=7,
    )
    # A replayed resolution does not invite twice.
    assert (
        await team.invite_rating(
            tenant="T1",
            conversation_id=stored.conversation_id,
            user_id="test:u1",
            question="q",
            ticket_id=7,
        )
        == ticket
    )
    found = await team.open_invitation(stored.conversation_id, since=TODAY)
    assert found is not None and found.id == ticket and found.score is None
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await team.open_invitation(stored.conversation_id, since=later) is None
    rated = await team.rate(first, -1, "wrong")
    assert rated is not None and rated.score == -1 and rated.inbound_id == stored.inbound_id
    assert [r.id for r in await team.ratings(tenant="T1")] == [first]
    gaps = await team.gap_questions(tenant="T1")
    assert [(g.question, g.why) for g in gaps] == [("is it raining?", "rated bad")]
    stats = await team.stats("T1")
    assert (stats.rated_bad, stats.rated_good, stats.conversations) == (1, 0, 1)
    await _usage(team, "T1", "test:u1", 10)
    assert await team.forget("test:u1") == 2
    assert await team.ratings() == []
    assert (await team.stats("T1")).prompt_tokens == 9  # usage stays, nameless
    assert (await team.quota_state("T1", "test:u1", since=TODAY)).user_used == 0


async def test_a_proposal_is_decided_once(repository: Repository) -> None:
    team = TeamRepository(repository.db)
    pid = await team.propose(
        tenant="T1", question="Gift cards?", answer="Yes.", proposed_by="slack:T1/U1", ticket_id=3
    )
    assert [p.id for p in await team.proposals(tenant="T1")] == [pid]
    assert await team.proposals(tenant="T2") == []
    decided = await team.decide(pid, approved=True, by="owner", entry_ref="12", answer="Yes!")
    assert decided is not None and decided.status == "approved" and decided.answer == "Yes!"
    assert await team.decide(pid, approved=False, by="owner") is None
    assert await team.proposals() == []
    proposal = await team.proposal(pid)
    assert proposal is not None and proposal.entry_ref == "12"
    actions = [e.action for e in await team.audit_entries(tenant="T1")]
    assert actions == ["faq.approve", "faq.learn"]


async def test_stats_are_per_tenant(repository: Repository) -> None:
    team = TeamRepository(repository.db)
    for tenant in ("T1", "T2", "T2"):
        stored = await repository.accept(make_event("hi", tenant=tenant, chat=tenant), kind="chat")
        await repository.record_answer(stored, text="hello", kind="chat", latency_ms=100)
    await _usage(team, "T2", "u", 40)
    one, two, every = await team.stats("T1"), await team.stats("T2"), await team.stats(None)
    assert (one.conversations, one.messages, one.answers, one.model_answers) == (1, 2, 1, 0)
    assert (two.conversations, two.messages, two.answers, two.model_answers) == (1, 4, 2, 1)
    assert (two.prompt_tokens, two.completion_tokens, two.model_seconds) == (39, 1, 0.5)
    assert (every.conversations, every.answers, every.latency_p50_ms) == (2, 3, 100.0)
