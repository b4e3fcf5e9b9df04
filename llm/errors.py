"""The LLM layer's errors. ``str(err)`` is for the operator's log; the bot
decides what a user is told."""

from __future__ import annotations


class LLMError(Exception):
    """A generation failed. ``str(err)`` is for the operator's log, never the user."""


class LLMTimeout(LLMError):
    """A generation did not finish within its request's timeout."""


class LLMBusy(LLMError):
    """The backend's queue is full; ``position`` is where the request would have stood."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class ModelConfigError(Exception):
    """The configured model cannot be used as asked; the message says what to change."""


class ModelNotFound(ModelConfigError):
    """The configured model file or directory does not exist."""
