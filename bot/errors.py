"""Deskmate's error tree. One place catches (the manager, the CLI); users see
short messages, operators see the cause in the log."""

from __future__ import annotations


class DeskmateError(Exception):
    """Base class; ``user_message`` is safe to show a customer."""

    user_message = "Sorry, something went wrong on my side. Please try again in a moment."


class ConfigError(DeskmateError):
    """Settings are missing or contradictory; the message tells the operator the fix."""


class ModelNotFound(ConfigError):
    """The configured model file or directory does not exist."""


class StorageError(DeskmateError):
    """The database refused or failed an operation."""
