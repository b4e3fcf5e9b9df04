"""Deskmate on Slack (slack-bolt): Socket Mode or the HTTP Events API, with one
bot token or installed into many workspaces through OAuth.

Only ``create_adapter`` is public; the composition root imports this package
lazily, when ``SLACK_BOT_TOKEN`` (or ``SLACK_CLIENT_ID``) is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.web import HttpServer
    from bot.settings import Settings
    from bot.types import ChatAdapter
    from storage.slack_repo import SlackRepository

EVENTS_PATH = "/slack/events"


def create_adapter(
    *, settings: Settings, http: HttpServer, installs: SlackRepository | None = None
) -> ChatAdapter:
    """Build the Slack adapter; in HTTP mode also route ``POST /slack/events`` to it.

    With OAuth (``installs``, the installations' storage) it also serves the
    "Add to Slack" page at ``/slack/install`` and Slack's redirect back at
    ``/slack/oauth_redirect``.
    """
    from datetime import timedelta

    from adapters.slack.adapter import SlackAdapter
    from adapters.slack.oauth import INSTALL_PATH, REDIRECT_PATH, OAuthConfig

    oauth = None
    if settings.slack_oauth_enabled:
        if installs is None:
            raise ValueError("Slack OAuth needs the installations' storage")
        oauth = OAuthConfig(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            repository=installs,
            redirect_uri=settings.slack_redirect_uri,
            retention=timedelta(days=settings.slack_retention_days),
        )
    adapter = SlackAdapter(
        bot_token=settings.slack_bot_token,
        oauth=oauth,
        app_token=settings.slack_app_token,
        signing_secret=settings.slack_signing_secret,
        api_url=settings.slack_api_url,
        edit_interval=settings.slack_edit_interval,
    )
    if not adapter.socket_mode:
        http.add_route("POST", EVENTS_PATH, adapter.handle_http)
    if oauth is not None:
        http.add_route("GET", INSTALL_PATH, adapter.handle_install)
        http.add_route("GET", REDIRECT_PATH, adapter.handle_oauth_redirect)
    return adapter
