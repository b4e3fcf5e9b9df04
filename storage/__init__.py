"""SQL storage: models, migrations and the repositories the bot calls."""
