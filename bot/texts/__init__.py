"""Fixed texts of areas with many, merged into ``bot.messages.CATALOG``."""
