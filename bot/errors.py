"""Deskmate's error tree. One place catches (the manager, the CLI); users see
short messages, operators see the cause in the log.

``llm`` and ``storage`` own their errors; they are named here so that the bot
catches them in one place and maps them to what a user is told.
"""

from __future__ import annotations

from llm.errors import ModelConfigError, ModelNotFound
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
    "user_message",
]


class DeskmateError(Exception):
    """Base class; ``user_message`` is safe to show a customer."""

    user_message = "Sorry, something went wrong on my side. Please try again in a moment."


class ConfigError(DeskmateError):
    """Settings are missing or contradictory; the message tells the operator the fix."""


# Operator mistakes, from any layer: one line that says what to fix.
CONFIG_ERRORS: tuple[type[Exception], ...] = (ConfigError, ModelConfigError, DatabaseConfigError)
# Failures a command or the CLI reports in one line (the cause is logged).
FAILURES: tuple[type[Exception], ...] = (DeskmateError, StorageError)

STORAGE_MESSAGE = "Sorry, I can't reach my records just now. Please try again in a moment."


def user_message(exc: BaseException) -> str:
    """What a user is told about ``exc`` (the cause goes to the log)."""
    if isinstance(exc, StorageError):
        return STORAGE_MESSAGE
    return getattr(exc, "user_message", DeskmateError.user_message)
