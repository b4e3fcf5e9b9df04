"""Slack installations, OAuth states and the purge of uninstalled workspaces, on
SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection, func, select

from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.models import conversations, faq_entries, slack_installations, users
from storage.repository import Repository
from storage.slack_repo import SecretKeyError, SlackInstallation, SlackRepository, TokenCipher
from tests.storage.support import make_event, store_legacy_role

KEY = Fernet.generate_key().decode()


def install(team: str, token: str, *, user: str = "U1", at: datetime | None = None, **kw: object):
    values: dict[str, object] = {
        "enterprise_id": "",
        "team_id": team,
        "user_id": user,
        "is_enterprise_install": False,
        "bot_user_id": f"UBOT{team}",
        "bot_id": f"B{team}",
        "installed_at": at or datetime.now(UTC),
        "details": {"team_name": f"name of {team}", "bot_scopes": "chat:write"},
        "secrets": {"bot_token": token},
    }
    values.update(kw)
    return SlackInstallation(**values)  # type: ignore[arg-type]


@pytest.fixture
def slack(repository: Repository) -> SlackRepository:
    return SlackRepository(repository.db, TokenCipher(KEY))


async def test_tokens_are_stored_encrypted_and_come_back(slack: SlackRepository) -> None:
    await slack.save_installation(install("T1", "xoxb-secret-one"))
    found = await slack.find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert found.bot_token == "xoxb-secret-one"
    assert found.details["team_name"] == "name of T1"

    def raw(conn: Connection) -> list[str]:
        return [str(tuple(row)) for row in conn.execute(select(slack_installations)).all()]

    rows = await slack.db.run(raw)
    assert len(rows) == 1
    assert "xoxb-secret-one" not in rows[0]
    assert "name of T1" in rows[0]  # only secrets are hidden


async def test_a_reinstall_replaces_the_token_and_the_latest_bot_wins(
    slack: SlackRepository,
) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    await slack.save_installation(install("T1", "xoxb-old", at=earlier))
    await slack.save_installation(install("T1", "xoxb-new"))
    await slack.save_installation(install("T1", "xoxb-other-user", user="U2", at=earlier))
    bot = await slack.find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None and bot.bot_token == "xoxb-new"
    mine = await slack.find_installation(enterprise_id=None, team_id="T1", user_id="U2")
    assert mine is not None and mine.bot_token == "xoxb-other-user"
    team = await slack.bot_for_team("T1")
    assert team is not None and team.bot_token == "xoxb-new"
    assert await slack.bot_for_team("T2") is None


async def test_an_org_wide_install_serves_the_workspaces_linked_to_it(
    slack: SlackRepository,
) -> None:
    org = install(
        "", "xoxb-org", enterprise_id="E1", is_enterprise_install=True, bot_user_id="UORG"
    )
    await slack.save_installation(org)
    assert await slack.bot_for_team("T9") is None  # not known to belong to E1 yet
    await slack.link_team("T9", "E1")
    bot = await slack.bot_for_team("T9")
    assert bot is not None and bot.bot_token == "xoxb-org" and bot.bot_user_id == "UORG"
    # Bolt looks an org-wide install up with whichever workspace the event names.
    found = await slack.find_bot(enterprise_id="E1", team_id="T9", is_enterprise_install=True)
    assert found is not None and found.bot_token == "xoxb-org"
    gone = await slack.delete_installation(enterprise_id="E1", team_id=None)
    assert gone == ["T9"]
    assert await slack.bot_for_team("T9") is None


async def test_a_revoked_bot_token_leaves_the_workspace_uninstalled(
    slack: SlackRepository,
) -> None:
    await slack.save_installation(install("T1", "xoxb-one"))
    assert await slack.delete_bot(enterprise_id=None, team_id="T1") == ["T1"]
    assert await slack.find_bot(enterprise_id=None, team_id="T1") is None
    assert await slack.uninstalled_before(datetime.now(UTC)) == ["T1"]
    # A second revocation does not restart the retention clock.
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == []


async def test_states_are_single_use_and_expire(slack: SlackRepository) -> None:
    now = datetime.now(UTC)
    await slack.issue_state("fresh", now + timedelta(minutes=10))
    await slack.issue_state("lapsed", now - timedelta(seconds=1))
    assert await slack.consume_state("fresh") is True
    assert await slack.consume_state("fresh") is False
    assert await slack.consume_state("lapsed") is False
    assert await slack.consume_state("never-issued") is False


async def test_the_purge_removes_one_workspace_after_its_retention(
    repository: Repository, slack: SlackRepository
) -> None:
    knowledge = KnowledgeRepository(repository.db)
    for team in ("T1", "T2"):
        await slack.save_installation(install(team, f"xoxb-{team}"))
        await repository.accept(make_event("hello", platform="slack", tenant=team), kind="chat")
        await knowledge.upsert_many(
            team, [(EntryInput(f"refunds {team}?", "Within 30 days."), None)], embedding_model=""
        )
        await knowledge.set_setting(f"tenant:{team}", "mode", "faq")
        await store_legacy_role(repository, f"slack:{team}/U7", "agent")
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == ["T1"]
    month_ago = datetime.now(UTC) - timedelta(days=30)
    assert await slack.uninstalled_before(month_ago) == []
    assert await slack.purge_workspace("T1", month_ago) is None  # not due yet

    now = datetime.now(UTC)
    assert await slack.uninstalled_before(now) == ["T1"]
    result = await slack.purge_workspace("T1", now)
    assert result is not None and result.conversations == 1 and result.faq_entries == 1

    def count(conn: Connection) -> dict[str, dict[str, int]]:
        per: dict[str, dict[str, int]] = {}
        for team in ("T1", "T2"):
            per[team] = {
                "conversations": conn.execute(
                    select(func.count())
                    .select_from(conversations)
                    .where(conversations.c.tenant == team)
                ).scalar_one(),
                "faq": conn.execute(
                    select(func.count())
                    .select_from(faq_entries)
                    .where(faq_entries.c.tenant == team)
                ).scalar_one(),
                "roles": conn.execute(
                    select(func.count())
                    .select_from(users)
                    .where(users.c.platform_user == f"slack:{team}/U7")
                ).scalar_one(),
            }
        return per

    left = await repository.db.run(count)
    assert left["T1"] == {"conversations": 0, "faq": 0, "roles": 0}
    assert left["T2"] == {"conversations": 1, "faq": 1, "roles": 1}
    assert await knowledge.get_setting("tenant:T1", "mode") is None
    assert await knowledge.get_setting("tenant:T2", "mode") == "faq"
    assert await knowledge.keyword_search("refunds", tenant="T1") == []
    assert len(await knowledge.keyword_search("refunds", tenant="T2")) == 1
    assert await slack.uninstalled_before(now) == []


async def test_reinstalling_before_the_purge_keeps_the_data(slack: SlackRepository) -> None:
    await slack.save_installation(install("T1", "xoxb-one"))
    await slack.delete_installation(enterprise_id=None, team_id="T1")
    await slack.save_installation(install("T1", "xoxb-two"))
    assert await slack.uninstalled_before(datetime.now(UTC)) == []
    assert await slack.purge_workspace("T1", datetime.now(UTC)) is None


async def test_a_different_key_cannot_read_the_tokens(slack: SlackRepository) -> None:
    await slack.save_installation(install("T1", "xoxb-one"))
    other = SlackRepository(slack.db, TokenCipher(Fernet.generate_key().decode()))
    with pytest.raises(SecretKeyError, match="DESKMATE_SECRET_KEY"):
        await other.bot_for_team("T1")
    # Rotation: a new key first, the old one after it.
    rotated = SlackRepository(slack.db, TokenCipher(f"{Fernet.generate_key().decode()},{KEY}"))
    found = await rotated.bot_for_team("T1")
    assert found is not None and found.bot_token == "xoxb-one"


def test_a_malformed_key_is_refused() -> None:
    with pytest.raises(ValueError, match="is not set"):
        TokenCipher(" ")
    with pytest.raises(ValueError, match="not a Fernet key"):
        TokenCipher("not-a-key")
    cipher = TokenCipher(KEY)
    sealed = cipher.encrypt({"bot_token": "xoxb-1"})
    assert "xoxb-1" not in sealed
    assert cipher.decrypt(sealed) == {"bot_token": "xoxb-1"}


def test_records_are_plain_values() -> None:
    record = install("T1", "xoxb-1")
    assert dataclasses.replace(record, team_id="T2").bot_token == "xoxb-1"


async def test_the_purge_takes_the_workspaces_widget_sites_and_their_visitors(
    repository: Repository, slack: SlackRepository
) -> None:
    from storage.models import web_messages, widget_sites
    from storage.web_repo import WebRepository
    from storage.widget_repo import SiteLook, WidgetRepository

    sites, waiting = WidgetRepository(repository.db), WebRepository(repository.db)
    keys = {}
    for team in ("T1", "T2"):
        await slack.save_installation(install(team, f"xoxb-{team}"))
        site = await sites.add(origins=[f"https://{team}.example"], tenant=team, look=SiteLook())
        keys[team] = site.key
        person = f"{team.lower()}visitor".ljust(32, "0")
        chat = f"{site.key}.{person}"
        await repository.accept(
            make_event("my order", platform="widget", tenant=team, chat=chat, user=person),
            kind="chat",
        )
        await waiting.put(visitor=chat, chat=chat, text=f"an agent's answer for {team}")
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == ["T1"]
    result = await slack.purge_workspace("T1", datetime.now(UTC))
    assert result is not None and result.conversations == 1

    def left(conn: Connection) -> tuple[list[str], list[str], list[str], list[str]]:
        return (
            sorted(conn.execute(select(widget_sites.c.tenant)).scalars()),
            sorted(conn.execute(select(conversations.c.tenant)).scalars()),
            sorted(conn.execute(select(web_messages.c.text)).scalars()),
            sorted(
                conn.execute(
                    select(users.c.platform_user).where(users.c.platform_user.like("widget:%"))
                ).scalars()
            ),
        )

    site_tenants, conversation_tenants, texts, people = await repository.db.run(left)
    assert site_tenants == ["T2"]
    assert conversation_tenants == ["T2"]
    assert texts == ["an agent's answer for T2"]
    assert people == ["widget:" + "t2visitor".ljust(32, "0")]
    assert await sites.site(keys["T1"]) is None
