"""Slack OAuth mode: its settings, the installation store's conversions, and an
Enterprise Grid org-wide installation served through real Bolt against the local
fake Slack (tokens picked per workspace, then revoked)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation

from adapters.slack.adapter import SlackAdapter
from adapters.slack.oauth import (
    OAuthConfig,
    PurgeJob,
    authorization_url,
    manifest_scopes,
    to_installation,
    to_record,
)
from bot.errors import ConfigError
from bot.manager import ConversationManager
from bot.settings import Settings
from bot.types import ConversationRef, Undeliverable
from storage.repository import Repository
from storage.slack_repo import SlackInstallation, SlackRepository, TokenCipher
from tests.fakes.slack_api import FakeSlack, Workspace, event_body, mention_event, sign
from tests.support import serve_local

SECRET = "oauth-test-secret"
KEY = Fernet.generate_key().decode()
OAUTH = {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "s", "SLACK_SIGNING_SECRET": "x"}


# -- settings ----------------------------------------------------------------------------


def test_oauth_mode_needs_a_well_formed_secret_key() -> None:
    settings = Settings.from_env({**OAUTH, "DESKMATE_SECRET_KEY": KEY})
    assert settings.slack_enabled and settings.slack_oauth_enabled
    assert settings.slack_retention_days == 30
    for value, problem in (("", "is not set"), ("short", "is not a Fernet key")):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**OAUTH, "DESKMATE_SECRET_KEY": value})
        message = str(caught.value)
        assert problem in message and "\n" not in message
        assert "python -c 'from cryptography.fernet import Fernet; " in message


def test_a_bot_token_and_oauth_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**OAUTH, "DESKMATE_SECRET_KEY": KEY, "SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(ConfigError, match="both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET"):
        Settings.from_env({"SLACK_CLIENT_ID": "1.2", "SLACK_SIGNING_SECRET": "x"})
    with pytest.raises(ConfigError, match="DESKMATE_SLACK_RETENTION_DAYS"):
        Settings.from_env(
            {**OAUTH, "DESKMATE_SECRET_KEY": KEY, "DESKMATE_SLACK_RETENTION_DAYS": "-1"}
        )
    # Single-token mode needs no key.
    assert not Settings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "x"}
    ).slack_oauth_enabled


def test_the_install_link_asks_for_the_manifest_scopes_at_slacks_authorize_page() -> None:
    scopes = manifest_scopes()
    assert "chat:write" in scopes and "app_mentions:read" in scopes
    assert authorization_url("https://slack.com/api/") == "https://slack.com/oauth/v2/authorize"
    assert authorization_url("http://127.0.0.1:9/api") == "http://127.0.0.1:9/oauth/v2/authorize"


def test_installations_keep_their_fields_with_the_tokens_apart() -> None:
    installation = Installation(
        app_id="A1",
        enterprise_id="E1",
        team_id="T1",
        team_name="Acme",
        bot_token="xoxb-1",
        bot_id="B1",
        bot_user_id="UB1",
        bot_scopes="chat:write,commands",
        user_id="U1",
        incoming_webhook_url="https://hooks.slack.test/secret",
        token_type="bot",
    )
    record = to_record(installation)
    assert record.secrets == {
        "bot_token": "xoxb-1",
        "incoming_webhook_url": "https://hooks.slack.test/secret",
    }
    assert "xoxb-1" not in json.dumps(record.details)
    back = to_installation(record)
    assert back.to_dict() == installation.to_dict()


# -- an org-wide installation, end to end in one process -----------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(
        workspaces=[Workspace("T5", "xoxb-org", bot_user_id="UORG", bot_id="BORG")]
    ).start()
    yield server
    await server.stop()


@pytest.fixture
async def served(
    fake: FakeSlack, manager: ConversationManager, sqlite_repository: Repository
) -> AsyncIterator[tuple[SlackAdapter, SlackRepository, str]]:
    installs = SlackRepository(sqlite_repository.db, TokenCipher(KEY))
    adapter = SlackAdapter(
        oauth=OAuthConfig(client_id="1.2", client_secret="s", repository=installs),
        signing_secret=SECRET,
        api_url=fake.api_url,
        edit_interval=0.05,
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    await adapter.start(manager)
    yield adapter, installs, f"http://127.0.0.1:{port}/slack/events"
    await adapter.stop()
    await runner.cleanup()


def _org_wide(body: dict[str, Any]) -> dict[str, Any]:
    body["enterprise_id"] = "E1"
    body["authorizations"][0].update(enterprise_id="E1", is_enterprise_install=True)
    return body


async def _deliver(url: str, payload: dict[str, Any]) -> int:
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


async def test_an_org_wide_install_answers_each_workspace_until_its_token_is_revoked(
    fake: FakeSlack, served: tuple[SlackAdapter, SlackRepository, str]
) -> None:
    adapter, installs, url = served
    await installs.save_installation(
        SlackInstallation(
            enterprise_id="E1",
            team_id="",
            user_id="U1",
            is_enterprise_install=True,
            bot_user_id="UORG",
            bot_id="BORG",
            installed_at=datetime.now(UTC),
            details={"enterprise_name": "Initech"},
            secrets={"bot_token": "xoxb-org"},
        )
    )
    event = _org_wide(mention_event("hello from the org", team="T5", bot_user_id="UORG"))
    thread = event["event"]["ts"]
    assert await _deliver(url, event) == 200
    await fake.wait_for(lambda: len(fake.bot_messages("C1", thread)) == 1)
    await adapter.wait_idle()
    assert fake.bot_messages("C1", thread)[0].text == "echo: hello from the org"
    assert {c.token for c in fake.calls_of("chat.postMessage")} == {"xoxb-org"}

    # Outside a request (the outbox) the workspace still finds its org's token.
    ts = await adapter.post(ConversationRef("slack", "T5", "C9"), "a relayed answer")
    assert ts and fake.calls_of("chat.postMessage")[-1].token == "xoxb-org"

    revoked = _org_wide(
        event_body({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UORG"]}}, team="T5")
    )
    assert await _deliver(url, revoked) == 200
    assert (
        await installs.find_bot(enterprise_id="E1", team_id=None, is_enterprise_install=True)
        is None
    )
    with pytest.raises(Undeliverable, match="not installed in Slack workspace T5"):
        await adapter.post(ConversationRef("slack", "T5", "C9"), "too late")
    assert await installs.uninstalled_before(datetime.now(UTC)) == ["T5"]


async def test_the_purge_job_waits_out_the_retention(sqlite_repository: Repository) -> None:
    installs = SlackRepository(sqlite_repository.db, TokenCipher(KEY))
    await installs.save_installation(
        SlackInstallation(
            "", "T1", "U1", False, "UB", "B", datetime.now(UTC), {}, {"bot_token": "x"}
        )
    )
    await installs.delete_installation(enterprise_id=None, team_id="T1")
    assert await PurgeJob(installs, retention=timedelta(days=30)).run_once() == []
    assert await PurgeJob(installs, retention=timedelta(0)).run_once() == ["T1"]
