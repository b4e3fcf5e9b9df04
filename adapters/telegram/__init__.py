"""Telegram: polling or webhook, through python-telegram-bot.

Imported only when ``TELEGRAM_BOT_TOKEN`` is set; PTB types stay inside this
package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.telegram.adapter import WEBHOOK_PATH, TelegramAdapter

if TYPE_CHECKING:
    from adapters.web import HttpServer
    from bot.settings import Settings

__all__ = ["WEBHOOK_PATH", "TelegramAdapter", "create_adapter"]


def create_adapter(*, settings: Settings, http: HttpServer) -> TelegramAdapter:
    """The adapter for ``settings``; in webhook mode its route is added to ``http``."""
    adapter = TelegramAdapter(
        token=settings.telegram_bot_token,
        api_url=settings.telegram_api_url,
        webhook_url=settings.telegram_webhook_url,
        webhook_secret=settings.telegram_webhook_secret,
        edit_interval=settings.telegram_edit_interval,
    )
    if settings.telegram_webhook_url:
        http.add_route("POST", WEBHOOK_PATH, adapter.handle_webhook)
    # A revoked token stops Telegram alone; the rest of the process keeps serving.
    http.checks["telegram"] = adapter.health
    return adapter
