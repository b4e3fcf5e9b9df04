"""Engines and migrations.

``DATABASE_URL`` takes any SQLAlchemy URL; synchronous driver names are
mapped to their asyncio drivers so operators can paste the URL they know.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.errors import ConfigError

log = logging.getLogger(__name__)

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}
_SUPPORTED = ("sqlite+aiosqlite", "postgresql+asyncpg")


def normalize_url(raw: str) -> URL:
    """Map ``sqlite://``/``postgresql://`` (and friends) to async drivers."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"DATABASE_URL {raw!r} is not a database URL; "
            "use e.g. sqlite:///data/deskmate.db or postgresql://user@host/db"
        ) from None
    driver = _ASYNC_DRIVERS.get(url.drivername, url.drivername)
    if driver not in _SUPPORTED:
        raise ConfigError(
            f"DATABASE_URL uses {url.drivername!r}; Deskmate supports SQLite and PostgreSQL "
            "(sqlite:///path.db, postgresql://user@host/db)"
        )
    return url.set(drivername=driver)


def create_engine(raw_url: str, *, echo: bool = False) -> AsyncEngine:
    url = normalize_url(raw_url)
    kwargs: dict[str, Any] = {"echo": echo}
    if url.drivername.startswith("sqlite"):
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 10
    engine = create_async_engine(url, **kwargs)
    if url.drivername.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run during a write; NORMAL is durable across process
    # crashes in WAL mode (only an OS crash can lose the last commits).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (idempotent)."""
    from alembic import command

    cfg = _alembic_config()

    def run(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await _lock_for_migration(conn)
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def _lock_for_migration(conn: AsyncConnection) -> None:
    # Several workers starting together against one PostgreSQL must not run
    # the same migration twice; the lock is released at commit.
    if conn.dialect.name == "postgresql":
        from sqlalchemy import text

        await conn.execute(text("SELECT pg_advisory_xact_lock(7263541)"))
