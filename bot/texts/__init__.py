"""Blocks of fixed texts, one module per area, merged into ``bot.messages.CATALOG``."""
