"""What is stored of customers' languages, and that it goes with the person
(``/forget``) and the workspace (the Slack purge)."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.languages_repo import LanguageRepository
from storage.repository import Repository
from storage.slack_repo import SlackRepository, TokenCipher
from tests.storage.support import make_event
from tests.storage.test_slack_repo import KEY, install


async def test_a_conversations_language_is_kept_and_forgotten_with_its_person(
    repository: Repository,
) -> None:
    languages = LanguageRepository(repository.db)
    stored = await repository.accept(make_event("Var är min beställning?"), kind="chat")
    conversation = stored.conversation_id
    assert await languages.of_conversation(conversation) is None
    await languages.detected(conversation, "sv")
    await languages.detected(conversation, "sv")  # unchanged: nothing to write
    assert await languages.of_conversation(conversation) == "sv"
    await languages.detected(conversation, "de")
    assert await languages.of_conversation(conversation) == "de"
    await repository.forget_user("test:u1")
    assert await languages.of_conversation(conversation) is None


async def test_a_tenants_language_is_replaced_cleared_and_purged_with_the_workspace(
    repository: Repository,
) -> None:
    languages = LanguageRepository(repository.db)
    await languages.set_tenant("slack", "T1", "fr", by="slack:T1/U1")
    await languages.set_tenant("slack", "T1", "zh", by="slack:T1/U2")
    await languages.set_tenant("slack", "T2", "de", by="slack:T2/U1")
    assert await languages.of_tenant("slack", "T1") == "zh"
    await languages.clear_tenant("slack", "T2")
    assert await languages.of_tenant("slack", "T2") is None

    slack = SlackRepository(repository.db, TokenCipher(KEY))
    await slack.save_installation(install("T1", "xoxb-one"))
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == ["T1"]
    assert await slack.purge_workspace("T1", datetime.now(UTC)) is not None
    assert await languages.of_tenant("slack", "T1") is None
