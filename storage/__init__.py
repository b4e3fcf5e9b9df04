"""SQL storage: models, migrations and the repository the manager calls."""
