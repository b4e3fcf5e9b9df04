"""Deskmate on Slack (slack-bolt): Socket Mode or the HTTP Events API.

Only ``create_adapter`` is public; the composition root imports this package
lazily, when ``SLACK_BOT_TOKEN`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.web import HttpServer
    from bot.settings import Settings
    from bot.types import ChatAdapter

EVENTS_PATH = "/slack/events"


def create_adapter(*, settings: Settings, http: HttpServer) -> ChatAdapter:
    """Build the Slack adapter; in HTTP mode also route ``POST /slack/events`` to it."""
    from adapters.slack.adapter import SlackAdapter

    adapter = SlackAdapter(
        bot_token=settings.slack_bot_token,
        app_token=settings.slack_app_token,
        signing_secret=settings.slack_signing_secret,
        api_url=settings.slack_api_url,
        edit_interval=settings.slack_edit_interval,
    )
    if not adapter.socket_mode:
        http.add_route("POST", EVENTS_PATH, adapter.handle_http)
    return adapter
