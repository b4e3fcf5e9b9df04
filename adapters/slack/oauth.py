"""Installing Deskmate into many Slack workspaces: Bolt's OAuth flow over
Deskmate's own database.

- ``/slack/install`` hands the installer's browser a single-use ``state`` (kept
  in ``slack_oauth_states`` and in a cookie) and the "Add to Slack" link with
  the scopes of ``manifest.yaml``; ``/slack/oauth_redirect`` checks the state,
  exchanges the code for the workspace's bot token (``oauth.v2.access``) and
  saves the installation, tokens encrypted (``storage.slack_repo``).
- Bolt's ``authorize`` finds each event's installation through
  ``InstallationStore``; the adapter's own Web API calls find the workspace's
  bot through ``WorkspaceBots``.
- ``app_uninstalled`` / ``tokens_revoked`` delete the tokens at once and mark
  the workspace; ``PurgeJob`` deletes its data ``DESKMATE_SLACK_RETENTION_DAYS``
  later.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from logging import Logger
from typing import Any

import yaml
from slack_bolt.error import BoltError
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from storage.errors import StorageError
from storage.slack_repo import SECRET_FIELDS, SlackInstallation, SlackRepository

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600
PURGE_INTERVAL = 3600.0
# How long the adapter trusts a workspace's bot it looked up; an uninstall in
# this process forgets it at once, one in another process within this time.
BOT_CACHE_SECONDS = 30.0


def manifest_scopes() -> list[str]:
    """The bot scopes the app manifest asks for (one list for both)."""
    text = resources.files("adapters.slack").joinpath("manifest.yaml").read_text("utf-8")
    scopes = yaml.safe_load(text)["oauth_config"]["scopes"]["bot"]
    return [str(scope) for scope in scopes]


def authorization_url(api_url: str) -> str:
    """Slack's authorize page beside its Web API (``https://slack.com/api/`` ->
    ``https://slack.com/oauth/v2/authorize``), so a test API URL brings its own."""
    base = api_url.rstrip("/")
    base = base.removesuffix("/api")
    return f"{base}/oauth/v2/authorize"


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """What the adapter needs to serve installations instead of one bot token."""

    client_id: str
    client_secret: str
    repository: SlackRepository
    # The full URL of /slack/oauth_redirect; needed when the app lists several.
    redirect_uri: str = ""
    retention: timedelta = timedelta(days=30)


# -- installations ---------------------------------------------------------------------


def to_record(installation: Installation) -> SlackInstallation:
    values = installation.to_dict()
    details = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in values.items()
        if key not in SECRET_FIELDS and value is not None
    }
    installed = values.get("installed_at")
    return SlackInstallation(
        enterprise_id=installation.enterprise_id or "",
        team_id=installation.team_id or "",
        user_id=installation.user_id or "",
        is_enterprise_install=bool(installation.is_enterprise_install),
        bot_user_id=(installation.bot_user_id or "") if installation.bot_token else "",
        bot_id=(installation.bot_id or "") if installation.bot_token else "",
        installed_at=installed if isinstance(installed, datetime) else datetime.now(UTC),
        details=details,
        secrets={key: str(values[key]) for key in SECRET_FIELDS if values.get(key)},
    )


def to_installation(record: SlackInstallation) -> Installation:
    values: dict[str, Any] = {**record.details, **record.secrets}
    values["enterprise_id"] = record.enterprise_id or None
    values["team_id"] = record.team_id or values.get("team_id") or None
    values["user_id"] = record.user_id
    values["is_enterprise_install"] = record.is_enterprise_install
    values["installed_at"] = record.installed_at
    if not record.bot_user_id:
        for key in ("bot_id", "bot_user_id", "bot_scopes", "bot_token_expires_at"):
            values.pop(key, None)
    known = set(Installation.__init__.__code__.co_varnames)
    custom = {k: v for k, v in values.items() if k not in known}
    return Installation(
        **{k: v for k, v in values.items() if k in known and k != "self"},
        custom_values=custom or None,
    )


class InstallationStore(AsyncInstallationStore):
    """Bolt's installation store over ``SlackRepository``.

    ``on_uninstalled`` hears the workspaces an uninstall or revocation left
    without a bot, after their tokens are gone.
    """

    def __init__(
        self,
        repository: SlackRepository,
        *,
        on_uninstalled: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.repository = repository
        self.on_uninstalled = on_uninstalled
        self._logger = logging.getLogger(__name__)

    @property
    def logger(self) -> Logger:
        return self._logger

    async def async_save(self, installation: Installation) -> None:
        try:
            await self.repository.save_installation(to_record(installation))
        except StorageError as exc:
            # Bolt shows its "storage_error" page for a BoltError only.
            log.error("Slack: could not save an installation: %s", exc)
            raise BoltError(str(exc)) from exc
        log.info(
            "Slack: installed in %s",
            _where(installation.enterprise_id, installation.team_id, installation.team_name),
        )

    async def async_save_bot(self, bot: Bot) -> None:
        # Only token rotation saves a bot alone; Deskmate does not turn it on.
        raise NotImplementedError("token rotation is not enabled for Deskmate")

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        record = await self.repository.find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=bool(is_enterprise_install),
        )
        return to_installation(record) if record is not None else None

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        record = await self.repository.find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=bool(is_enterprise_install),
        )
        return to_installation(record).to_bot() if record is not None else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        self._gone(await self.repository.delete_bot(enterprise_id=enterprise_id, team_id=team_id))

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        self._gone(
            await self.repository.delete_installation(
                enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
            )
        )

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    def _gone(self, teams: list[str]) -> None:
        if not teams:
            return
        log.info("Slack: uninstalled from %s; their tokens are deleted", ", ".join(teams))
        if self.on_uninstalled is not None:
            self.on_uninstalled(teams)


def _where(enterprise_id: str | None, team_id: str | None, name: str | None = None) -> str:
    if team_id:
        return f"workspace {team_id}" + (f" ({name})" if name else "")
    return f"org {enterprise_id} (all its workspaces)"


class StateStore(AsyncOAuthStateStore):
    """OAuth states in the database: random, single use, expiring."""

    def __init__(self, repository: SlackRepository, *, expiration_seconds: int = STATE_SECONDS):
        self.repository = repository
        self.expiration_seconds = expiration_seconds
        self._logger = logging.getLogger(__name__)

    @property
    def logger(self) -> Logger:
        return self._logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self.expiration_seconds)
        await self.repository.issue_state(state, expires)
        return state

    async def async_consume(self, state: str) -> bool:
        if not state or len(state) > 64:
            return False
        return await self.repository.consume_state(state)


# -- the pages the installer sees -------------------------------------------------------

_REASONS = {
    "invalid_state": (
        "This installation link was already used or has expired. Each link works once, "
        "for ten minutes."
    ),
    "invalid_browser": (
        "This browser did not start the installation (or lost its cookie), so it cannot finish it."
    ),
    "access_denied": "The installation was cancelled in Slack; nothing was installed.",
    "missing_code": "Slack did not send an installation code.",
    "invalid_code": "Slack did not accept the installation code (it can be used only once).",
    "storage_error": "Deskmate could not save the installation. Try again in a moment.",
}


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em}"
        "</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


async def _success(args: AsyncSuccessArgs) -> BoltResponse:
    installation = args.installation
    where = installation.team_name or installation.enterprise_name or "your workspace"
    body = (
        f"<p>Deskmate is now in <strong>{html.escape(where)}</strong>. Mention @Deskmate in a "
        "channel or send it a direct message.</p>"
    )
    return BoltResponse(
        status=200,
        body=_page("Deskmate is installed", body),
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Set-Cookie": args.settings.state_utils.build_set_cookie_for_deletion(),
        },
    )


async def _failure(args: AsyncFailureArgs) -> BoltResponse:
    reason = _REASONS.get(args.reason, f"Slack reported: {args.reason}.")
    log.warning("Slack: an installation was refused (%s)", args.reason)
    install = html.escape(args.settings.install_path)
    body = (
        f'<p>{html.escape(reason)}</p><p><a href="{install}">Start the installation again</a>.</p>'
    )
    return BoltResponse(
        status=args.suggested_status_code,
        body=_page("Deskmate was not installed", body),
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Set-Cookie": args.settings.state_utils.build_set_cookie_for_deletion(),
        },
    )


CALLBACK_OPTIONS = AsyncCallbackOptions(success=_success, failure=_failure)


# -- which bot serves a workspace ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspaceBot:
    token: str
    bot_user_id: str
    bot_id: str


class WorkspaceBots:
    """Each workspace's bot (token and ids) for the adapter's own Web API calls;
    looked up in the database and kept for ``BOT_CACHE_SECONDS``."""

    def __init__(self, repository: SlackRepository, *, ttl: float = BOT_CACHE_SECONDS) -> None:
        self.repository = repository
        self.ttl = ttl
        self._cache: dict[str, tuple[float, WorkspaceBot | None]] = {}
        self._linked: set[tuple[str, str]] = set()

    async def get(self, team: str) -> WorkspaceBot | None:
        hit = self._cache.get(team)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        record = await self.repository.bot_for_team(team)
        bot = (
            WorkspaceBot(record.bot_token, record.bot_user_id, record.bot_id)
            if record is not None and record.bot_token
            else None
        )
        self._cache[team] = (time.monotonic(), bot)
        if len(self._cache) > 10_000:
            self._cache.pop(next(iter(self._cache)))
        return bot

    def forget(self, teams: list[str]) -> None:
        for team in teams:
            self._cache.pop(team, None)
        # An org-wide uninstall names the org's workspaces, not every one cached.
        self._cache.clear()

    async def link(self, team: str, enterprise: str) -> None:
        """Remember (once per process) that ``team`` is a workspace of org ``enterprise``."""
        if (team, enterprise) in self._linked:
            return
        await self.repository.link_team(team, enterprise)
        self._linked.add((team, enterprise))
        self._cache.pop(team, None)


# -- the purge -------------------------------------------------------------------------


class PurgeJob:
    """Deletes uninstalled workspaces' data once ``retention`` has passed: checked
    every ``interval`` seconds and whenever ``wake`` is called (an uninstall)."""

    def __init__(
        self,
        repository: SlackRepository,
        *,
        retention: timedelta,
        interval: float = PURGE_INTERVAL,
    ) -> None:
        self.repository = repository
        self.retention = retention
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="slack-purge")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> list[str]:
        """Purge every workspace that is due; returns their team ids."""
        cutoff = datetime.now(UTC) - self.retention
        purged = []
        for team in await self.repository.uninstalled_before(cutoff):
            result = await self.repository.purge_workspace(team, cutoff)
            if result is not None:
                log.info(
                    "Slack: purged uninstalled workspace %s (%d conversations, %d FAQ entries)",
                    team,
                    result.conversations,
                    result.faq_entries,
                )
                purged.append(team)
        return purged

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError as exc:
                log.error("Slack: the purge of uninstalled workspaces failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()


__all__ = [
    "CALLBACK_OPTIONS",
    "INSTALL_PATH",
    "REDIRECT_PATH",
    "InstallationStore",
    "OAuthConfig",
    "PurgeJob",
    "StateStore",
    "WorkspaceBot",
    "WorkspaceBots",
    "authorization_url",
    "manifest_scopes",
    "to_installation",
    "to_record",
]
