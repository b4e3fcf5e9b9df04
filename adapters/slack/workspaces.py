"""Which bot serves a Slack workspace, and installing and uninstalling the app.

With one ``SLACK_BOT_TOKEN`` every call goes through one client. Installed
through OAuth, each workspace has its own bot token and bot user: calls go
through a client holding that workspace's token, and ``Installs`` wires the
installations, their OAuth pages and the uninstall events into Bolt.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.oauth import (
    CALLBACK_OPTIONS,
    INSTALL_PATH,
    REDIRECT_PATH,
    STATE_SECONDS,
    InstallationStore,
    OAuthConfig,
    PurgeJob,
    StateStore,
    WorkspaceBots,
    authorization_url,
    manifest_scopes,
)
from bot.errors import StorageError
from bot.types import Undeliverable

log = logging.getLogger(__name__)

# Clients kept for workspaces' tokens (least recently used dropped first).
_CLIENTS = 1_000


class Workspaces:
    """The Web API client and bot identity for each workspace served.

    ``bots`` is the installations' bots (OAuth); without it every workspace
    is served by ``client`` as the bot ``bot_user_id``/``bot_id`` (set once
    ``auth.test`` answered).
    """

    def __init__(self, client: AsyncWebClient, *, bots: WorkspaceBots | None = None) -> None:
        # With OAuth it has no token: each workspace's calls go through
        # ``client_for`` (and Bolt's per-request client), sharing its session.
        self.client = client
        self.bots = bots
        self.bot_user_id = ""
        self.bot_id = ""
        self._clients: OrderedDict[str, AsyncWebClient] = OrderedDict()

    async def client_for(self, team: str) -> AsyncWebClient:
        """The Web API client holding the bot token of workspace ``team``.

        Raises ``Undeliverable`` when no installation serves that workspace.
        """
        if self.bots is None:
            return self.client
        bot = await self.bots.get(team)
        if bot is None:
            raise Undeliverable(
                f"Deskmate is not installed in Slack workspace {team or '?'} "
                f"(install it from {INSTALL_PATH})"
            )
        client = self._clients.get(bot.token)
        if client is None:
            client = AsyncWebClient(
                token=bot.token,
                base_url=self.client.base_url,
                timeout=self.client.timeout,
                session=self.client.session,
                retry_handlers=list(self.client.retry_handlers or []),
            )
            self._clients[bot.token] = client
            while len(self._clients) > _CLIENTS:
                self._clients.popitem(last=False)
        return client

    async def identity(self, team: str) -> tuple[str, str]:
        """The bot's user id and bot id in workspace ``team`` (each install has its own)."""
        if self.bots is None:
            return self.bot_user_id, self.bot_id
        bot = await self.bots.get(team)
        return (bot.bot_user_id, bot.bot_id) if bot is not None else ("", "")

    def forget(self, teams: list[str]) -> None:
        """Drop what is known of ``teams`` (uninstalled) and every kept client."""
        if self.bots is not None:
            self.bots.forget(teams)
        self.clear()

    def clear(self) -> None:
        """Drop the kept clients (they share the session being closed)."""
        self._clients.clear()


class Installs:
    """Serving every workspace that installs the app (OAuth): installations,
    states and authorization in the database, the install pages, and the
    uninstall events that end a workspace's tokens and schedule its purge."""

    def __init__(
        self,
        oauth: OAuthConfig,
        *,
        base_url: str,
        workspaces: Workspaces,
        logger: logging.Logger,
    ) -> None:
        self._oauth = oauth
        self._base_url = base_url
        self._workspaces = workspaces
        self._logger = logger
        self.installations = InstallationStore(oauth.repository, on_uninstalled=self._gone)
        self.purge = PurgeJob(oauth.repository, retention=oauth.retention)

    def app_options(self) -> dict[str, Any]:
        """AsyncApp's arguments for OAuth: installs, states and authorize in our database."""
        oauth = self._oauth
        settings = AsyncOAuthSettings(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            scopes=manifest_scopes(),
            user_scopes=[],
            redirect_uri=oauth.redirect_uri or None,
            install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_PATH,
            callback_options=CALLBACK_OPTIONS,
            authorization_url=authorization_url(self._base_url),
            installation_store=self.installations,
            installation_store_bot_only=True,
            state_store=StateStore(oauth.repository),
            state_expiration_seconds=STATE_SECONDS,
            logger=self._logger,
        )
        return {
            "oauth_settings": settings,
            "installation_store": self.installations,
            "installation_store_bot_only": True,
            # A workspace's token maps to the same bot for its life: its
            # auth.test answer is kept instead of asked on every event.
            "authorize": AsyncInstallationStoreAuthorize(
                logger=self._logger,
                installation_store=self.installations,
                bot_only=True,
                cache_enabled=True,
            ),
        }

    def listen(self, app: AsyncApp) -> None:
        """Register the middleware and the uninstall events; call it before any
        catch-all event listener, which would acknowledge them unheard."""
        app.use(self._remember_workspace)
        app.event("app_uninstalled")(self._on_app_uninstalled)
        app.event("tokens_revoked")(self._on_tokens_revoked)

    def _gone(self, teams: list[str]) -> None:
        self._workspaces.forget(teams)
        self.purge.wake()

    async def _remember_workspace(
        self, context: AsyncBoltContext, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        """Bolt middleware: note which org a workspace of an org-wide install belongs
        to, so replies outside a request (the outbox) find the org's token."""
        bots = self._workspaces.bots
        if (
            bots is not None
            and context.is_enterprise_install
            and context.enterprise_id
            and context.team_id
        ):
            await bots.link(context.team_id, context.enterprise_id)
        return await next()

    async def _on_app_uninstalled(
        self, context: AsyncBoltContext, ack: Callable[[], Awaitable[Any]]
    ) -> None:
        enterprise, team = _installation_of(context)
        await self.installations.async_delete_all(enterprise_id=enterprise, team_id=team)
        await ack()

    async def _on_tokens_revoked(
        self,
        event: dict[str, Any],
        context: AsyncBoltContext,
        ack: Callable[[], Awaitable[Any]],
    ) -> None:
        enterprise, team = _installation_of(context)
        tokens = event.get("tokens") or {}
        for user in tokens.get("oauth") or []:
            await self.installations.async_delete_installation(
                enterprise_id=enterprise, team_id=team, user_id=str(user)
            )
        if tokens.get("bot"):
            await self.installations.async_delete_bot(enterprise_id=enterprise, team_id=team)
        await ack()


async def oauth_page(app: AsyncApp, request: web.Request, *, install: bool) -> web.StreamResponse:
    """``GET /slack/install`` (``install``) or ``GET /slack/oauth_redirect``, through
    Bolt's OAuth flow; 404 without OAuth, 503 when the database is unreachable."""
    flow = app.oauth_flow
    if flow is None:
        raise web.HTTPNotFound()
    bolt_request = AsyncBoltRequest(
        body="",
        query=request.query_string,
        headers=request.headers,  # type: ignore[arg-type]
    )
    try:
        if install:
            response = await flow.handle_installation(bolt_request)
        else:
            response = await flow.handle_callback(bolt_request)
    except StorageError as exc:
        what = "start" if install else "finish"
        log.error("Slack: could not %s an installation: %s", what, exc)
        return _unavailable()
    return await to_aiohttp_response(response)


def _installation_of(context: AsyncBoltContext) -> tuple[str | None, str | None]:
    """(enterprise id, team id) of the installation a request belongs to; an
    org-wide installation is the org's, whichever workspace the event came from."""
    if context.is_enterprise_install:
        return context.enterprise_id, None
    return context.enterprise_id, context.team_id


def _unavailable() -> web.Response:
    return web.Response(
        status=503,
        text="Deskmate cannot reach its database right now; try the installation again shortly.\n",
    )
