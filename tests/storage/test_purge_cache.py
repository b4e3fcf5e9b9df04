"""A Slack workspace purged while workers still remember its conversations:
their next message lands in a conversation of their own, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.fernet import Fernet
from sqlalchemy import select

from storage.models import users
from storage.repository import ConversationAddress, InboundEvent, Repository
from storage.slack_repo import SlackInstallation, SlackRepository, TokenCipher

KEY = Fernet.generate_key().decode()
DM = ConversationAddress("slack", "T1", "D1")
CUSTOMER = "slack:T1/U2"


def _install() -> SlackInstallation:
    return SlackInstallation(
        "", "T1", "UADMIN", False, "UBOT", "BBOT", datetime.now(UTC), {}, {"bot_token": "xoxb-1"}
    )


def _said(event_id: str, text: str) -> InboundEvent:
    return InboundEvent(DM, event_id, CUSTOMER, text, "Ann")


async def test_workers_that_cached_a_purged_conversation_create_it_again(
    repository: Repository,
) -> None:
    # A second worker on the same database, with its own cache.
    other = Repository(repository.db)
    installs = SlackRepository(repository.db, TokenCipher(KEY))
    await installs.save_installation(_install())
    await repository.accept(_said("Ev1", "hello"), kind="chat")
    await other.accept(_said("Ev2", "are you there?"), kind="chat")

    await installs.delete_installation(enterprise_id=None, team_id="T1")
    assert await installs.purge_workspace("T1", datetime.now(UTC)) is not None
    # Another tenant's first chat: SQLite gives it the purged conversation's id.
    telegram = ConversationAddress("telegram", "bot1", "7")
    elsewhere = await repository.accept(
        InboundEvent(telegram, "tg1", "telegram:7", "hi", "Bo"), kind="chat"
    )

    await installs.save_installation(_install())
    for worker, event_id in ((repository, "Ev3"), (other, "Ev4")):
        again = await worker.accept(_said(event_id, "back again"), kind="chat")
        assert again.status in ("new", "queued")
        assert again.conversation_id != elsewhere.conversation_id
        assert await worker.conversation(again.conversation_id) == DM
    assert await repository.conversation(elsewhere.conversation_id) == telegram
    # The person's profile, purged with the workspace, is stored again.
    query = select(users.c.name).where(users.c.platform_user == CUSTOMER)
    assert await repository.db.run(lambda conn: conn.execute(query).scalar()) == "Ann"
