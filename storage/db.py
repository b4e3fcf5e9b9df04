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
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

import asyncpg
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.errors import DatabaseConfigError, StorageError

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
        raise DatabaseConfigError(
            f"DATABASE_URL {raw!r} is not a database URL; "
            "use e.g. sqlite:///data/deskmate.db or postgresql://user@host/db"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise DatabaseConfigError(
            f"DATABASE_URL uses {url.drivername!r}; Deskmate supports SQLite and PostgreSQL "
            "(sqlite:///path.db, postgresql://user@host/db)"
        )
    return url.set(drivername=driver)


def utcnow() -> datetime:
    """Now, in UTC: every timestamp Deskmate stores is UTC."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored timestamp with its zone: SQLite hands them back without one,
    and they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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
                hide_parameters=True,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            self._sqlite = _SqliteWorker(engine)
        else:
            self._async = create_async_engine(
                url, pool_pre_ping=True, pool_size=10, hide_parameters=True
            )

    async def run(self, fn: Callable[[Connection], T], *, what: str = "use the database") -> T:
        """Run ``fn(connection)`` in one transaction, committed when it returns.

        Any database failure comes out as ``StorageError`` ("could not
        ``what``: cause"), whichever driver or layer raised it.
        """
        try:
            if self._async is not None:
                async with self._async.begin() as conn:
                    return await conn.run_sync(fn)
            assert self._sqlite is not None
            return await self._sqlite.submit(fn)
        except DATABASE_ERRORS as exc:
            raise storage_error(what, exc, self.url) from exc

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the database answers a trivial query."""
        await self.run(lambda conn: conn.execute(text("SELECT 1")), what="reach the database")

    async def dispose(self) -> None:
        if self._async is not None:
            await self._async.dispose()
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)
            self._sqlite = None

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (idempotent)."""
        await self.run(lambda conn: _upgrade(conn, revision), what="migrate the database")

    async def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return await self.run(
            lambda conn: MigrationContext.configure(conn).get_current_revision(),
            what="read the schema revision",
        )


# What a database failure can surface as. SQLAlchemy wraps what the drivers
# raise while running statements, but not everything: asyncpg's connect
# failures (refused, reset, timed out, rejected by the server) come out raw,
# and so does anything the raw sqlite3 fast path runs into (locked, full,
# I/O error).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    SQLAlchemyError,
    sqlite3.Error,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def storage_error(what: str, exc: BaseException, url: URL) -> StorageError:
    """The ``StorageError`` for ``exc``: the operation, the cause, the database.

    The message names the failure without quoting driver text that can carry
    row values; the same values are removed from the chained causes, which
    end up in logs.
    """
    _redact(exc)
    where = url.render_as_string(hide_password=True)
    return StorageError(f"could not {what}: {_describe(exc)} (database {where})")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__]
        if isinstance(orig, BaseException):
            todo.append(orig)


# asyncpg quotes the offending value when it cannot encode an argument.
_ARGUMENT = re.compile(r"(query argument \$\d+): .*?( \([^()\n]*\))?$", re.MULTILINE)


def _redact(exc: BaseException) -> None:
    for item in _chain(exc):
        if isinstance(item, asyncpg.PostgresError):
            # DETAIL quotes row values ("Key (...)=(...)", "Failing row contains ...").
            item.detail = None  # type: ignore[attr-defined]
        if item.args and isinstance(item.args[0], str) and "query argument $" in item.args[0]:
            hidden = _ARGUMENT.sub(r"\1: (value hidden)\2", item.args[0])
            item.args = (hidden, *item.args[1:])


def _describe(exc: BaseException) -> str:
    # The driver's own error says most; SQLAlchemy's wrappers add the statement.
    for item in _chain(exc):
        name = type(item).__name__
        if isinstance(item, asyncpg.PostgresError):
            state = getattr(item, "sqlstate", None) or "?"
            # Class 22 (data exception) messages can quote the rejected value.
            message = "" if state.startswith("22") else f": {item.args[0]}"
            return f"{name} (SQLSTATE {state}){message}"
        if isinstance(item, (sqlite3.Error, OSError, asyncpg.InterfaceError)):
            return f"{name}: {item}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# A transaction to run, and where to send its outcome.
_Job = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class _SqliteWorker:
    """One thread owns the SQLite connection and runs every transaction.

    A whole transaction is one hand-off between the event loop and this
    thread; SQLite serialises writers anyway, so more threads would only
    contend for its lock. Transactions that queue up while one runs are each
    committed on their own, but their results go back to the event loop in
    one wake-up.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Held for the worker's life: checking a connection out of the pool
        # for every transaction costs as much as a short transaction.
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self.engine.dispose()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            done: list[tuple[_Job, bool, Any]] = []
            while job is not None:
                done.append((job, *self._transaction(job[0])))
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            _settle(done)
            if job is None:
                if self._conn is not None:
                    self._conn.close()
                return

    def _transaction(self, fn: Callable[[Connection], Any]) -> tuple[bool, Any]:
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            with self._conn.begin():
                return True, fn(self._conn)
        except Exception as exc:
            return False, exc


def _settle(done: list[tuple[_Job, bool, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_fn, loop, future), ok, value in done:
        by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, results in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_deliver, results)


def _deliver(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():  # the caller was cancelled
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


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
