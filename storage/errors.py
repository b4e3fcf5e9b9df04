"""The storage layer's errors. The bot maps them to what a user is told."""

from __future__ import annotations


class StorageError(Exception):
    """The database refused or failed an operation (the message is for the operator)."""


class DatabaseConfigError(Exception):
    """``DATABASE_URL`` cannot be used; the message says what to change."""
