"""Database access: one ``Database`` per process, and migrations.

Repository operations are plain functions over a SQLAlchemy ``Connection``,
run as one transaction by ``Database.run``. How they run depends on the
server, not on the caller:

- PostgreSQL: an asyncpg engine; the function runs through SQLAlchemy's
  greenlet bridge (``AsyncConnection.run_sync``), so it never blocks the loop.
- SQLite: the stdlib driver in one dedicated thread. An asyncio SQLite driver
  hops threads for every cursor call (dozens per message); here a whole
  transaction is one hop, and one thread is all SQLite's single writer can use.

``DATABASE_URL`` takes any SQLAlchemy URL; driver names are mapped to the ones
above so operators can paste the URL they know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_url(raw: str) -> URL:
    """Map ``sqlite://``/``postgresql://`` (and friends) to the drivers we run."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"DATABASE_URL {raw!r} is not a database URL; "
            "use e.g. sqlite:///data/deskmate.db or postgresql://user@host/db"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(
            f"DATABASE_URL uses {url.drivername!r}; Deskmate supports SQLite and PostgreSQL "
            "(sqlite:///path.db, postgresql://user@host/db)"
        )
    return url.set(drivername=driver)


class Database:
    """Runs functions over a connection, each as one transaction."""

    def __init__(self, raw_url: str) -> None:
        url = normalize_url(raw_url)
        self.url = url
        self.dialect = url.get_backend_name()
        # The SQLAlchemy dialect, for compiling statements ahead of time.
        self.dialect_impl = url.get_dialect()()
        self._async: AsyncEngine | None = None
        self._sqlite: _SqliteWorker | None = None
        if self.dialect == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_sync_engine(
                url,
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=1,
                max_overflow=0,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            self._sqlite = _SqliteWorker(engine)
        else:
            self._async = create_async_engine(url, pool_pre_ping=True, pool_size=10)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in one transaction, committed when it returns."""
        if self._async is not None:
            async with self._async.begin() as conn:
                return await conn.run_sync(fn)
        assert self._sqlite is not None
        return await self._sqlite.submit(fn)

    async def dispose(self) -> None:
        if self._async is not None:
            await self._async.dispose()
        if self._sqlite is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._sqlite.close)
            self._sqlite = None

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (idempotent)."""
        await self.run(lambda conn: _upgrade(conn, revision))

    async def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return await self.run(lambda conn: MigrationContext.configure(conn).get_current_revision())


class _SqliteWorker:
    """One thread owns the SQLite connection and runs every transaction.

    A whole transaction is one hand-off between the event loop and this
    thread; SQLite serialises writers anyway, so more threads would only
    contend for its lock.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        # Held for the worker's life: checking a connection out of the pool
        # for every transaction costs as much as a short transaction.
        self._conn: Connection | None = None

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = self.engine.connect()
        with self._conn.begin():
            return fn(self._conn)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._pool.submit(self._close_connection).result()
        self._pool.shutdown(wait=True)
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run during a write; NORMAL is durable across process
    # crashes in WAL mode (only an OS crash can lose the last commits).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    if conn.dialect.name == "postgresql":
        # Workers starting together must not run one migration twice; the
        # lock is released at commit.
        conn.execute(text("SELECT pg_advisory_xact_lock(7263541)"))
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
