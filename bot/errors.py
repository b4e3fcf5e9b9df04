"""Deskmate's error tree, and what a user is told about each failure.

Users see short messages (``user_message``, texts from ``bot.messages``);
operators see the cause in the log. ``llm`` and ``storage`` own their errors;
they are named here so that the bot maps them to what a user is told in one
function.
"""

from __future__ import annotations

from bot.messages import DEFAULT_LANGUAGE, say
from llm.errors import LLMBusy, LLMError, LLMTimeout, ModelConfigError, ModelNotFound
from storage.errors import DatabaseConfigError, StorageError

__all__ = [
    "CONFIG_ERRORS",
    "FAILURES",
    "ConfigError",
    "DatabaseConfigError",
    "DeskmateError",
    "ModelConfigError",
    "ModelNotFound",
    "StorageError",
    "busy_message",
    "user_message",
]


class DeskmateError(Exception):
    """Base class; ``user_message`` is safe to show a customer."""

    user_message = say("conversation.error")


class ConfigError(DeskmateError):
    """Settings are missing or contradictory; the message tells the operator the fix."""


# Operator mistakes, from any layer: one line that says what to fix.
CONFIG_ERRORS: tuple[type[Exception], ...] = (ConfigError, ModelConfigError, DatabaseConfigError)
# Failures a command or the CLI reports in one line (the cause is logged).
FAILURES: tuple[type[Exception], ...] = (DeskmateError, StorageError)

STORAGE_MESSAGE = say("conversation.records_unreachable")


def busy_message(position: int | None, language: str = DEFAULT_LANGUAGE) -> str:
    """The model's queue is full; ``position``: where the message would have stood."""
    if position:
        return say("conversation.busy_in_line", language, position=position)
    return say("conversation.busy", language)


def user_message(exc: BaseException, language: str = DEFAULT_LANGUAGE) -> str:
    """What a user is told about ``exc`` (the cause goes to the log).

    The one mapping from failures to texts: the records unreachable, the
    model busy, timed out or failed, and any ``DeskmateError``'s own message.
    """
    if isinstance(exc, StorageError):
        return say("conversation.records_unreachable", language)
    if isinstance(exc, LLMBusy):
        return busy_message(exc.position, language)
    if isinstance(exc, TimeoutError | LLMTimeout):
        return say("conversation.timeout", language)
    if isinstance(exc, LLMError):
        return say("conversation.failed", language)
    own = getattr(exc, "user_message", None)
    if own is None or own == DeskmateError.user_message:
        return say("conversation.error", language)
    return str(own)
