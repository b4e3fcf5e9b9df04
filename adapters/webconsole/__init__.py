"""The operator console at ``/console``: overview, conversations, tickets and
the knowledge base, served by the bot's own HTTP server."""

from adapters.webconsole.console import WebConsole, mount_console

__all__ = ["WebConsole", "mount_console"]
