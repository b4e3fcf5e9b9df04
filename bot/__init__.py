"""Deskmate core: settings, the conversation manager, commands and the CLI."""
