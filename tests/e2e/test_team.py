"""Roles per workspace through the real Slack adapter (Bolt over HTTP) against
the local fake Slack: an admin of workspace T1 is a customer in T2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
from bot.knowledge.knowledge_base import KnowledgeBase
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.e2e.test_slack_events import SECRET, _serve
from tests.fakes.slack_api import FakeSlack, Workspace, sign, slash_command


@pytest.fixture
async def slack(
    sqlite_repository: Repository, backend: FakeBackend, tmp_path: Path
) -> AsyncIterator[tuple[FakeSlack, str, aiohttp.ClientSession, KnowledgeBase]]:
    fake = await FakeSlack(
        workspaces=[Workspace("T1", "xoxb-test"), Workspace("T2", "xoxb-other")]
    ).start()
    kb = KnowledgeBase(
        repository=KnowledgeRepository(sqlite_repository.db),
        embedder=HashingEmbedder(),
        background=(),
        refresh_interval=0.0,
    )
    manager = make_manager(sqlite_repository, backend, knowledge=kb, admins={"slack:T1/UOWNER"})
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url, edit_interval=0.05
    )
    runner, url = await _serve(adapter)
    await adapter.start(manager)
    async with aiohttp.ClientSession() as session:
        yield fake, url, session, kb
    await adapter.stop()
    await runner.cleanup()
    await fake.stop()


async def test_a_workspace_admin_has_no_say_in_another_workspace(
    slack: tuple[FakeSlack, str, aiohttp.ClientSession, KnowledgeBase],
) -> None:
    fake, url, session, kb = slack

    async def command(text: str, *, user: str, team: str) -> str:
        before = len(fake.webhook_posts)
        body = slash_command(text, response_url=fake.response_url(), user=user, team=team)
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)}
        async with session.post(url, data=body, headers=headers) as response:
            assert response.status == 200
        await fake.wait_for(lambda: len(fake.webhook_posts) > before)
        return unescape(fake.webhook_posts[-1]["text"])

    made = await command("role <@UA1> admin", user="UOWNER", team="T1")
    assert made == "slack:T1/UA1 is now admin in tenant T1 (was customer)."
    added = await command("faq add Do you ship? | Yes, from T1.", user="UA1", team="T1")
    assert added.startswith("Added FAQ entry") and "(this workspace only)" in added
    assert [e.tenant for e in await kb.repository.entries()] == ["T1"]
    refused = await command("faq add Do you ship? | Not from T2.", user="UA1", team="T2")
    assert "only for this bot's admins" in refused
    assert "only for this bot's admins" in await command("stats", user="UA1", team="T2")
    assert "own workspace" in await command("stats T2", user="UA1", team="T1")
    audit = await command("audit", user="UA1", team="T1")
    assert "slack:T1/UOWNER role slack:T1/UA1" in audit and "faq.add" in audit
    assert [e.tenant for e in await kb.repository.entries()] == ["T1"]
