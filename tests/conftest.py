"""Fixtures shared by every test package: databases and a manager on the fake LLM."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import create_manager
from bot.manager import ConversationManager
from llm.base import SamplingParams
from llm.fake import FakeBackend
from storage.db import Database
from storage.repository import Repository

# The server every machine of this project runs; `make test` starts one if absent.
POSTGRES_ADMIN_URL = os.environ.get(
    "DESKMATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Model work is what makes the suite long: `pytest -m "not slow"` leaves it out.
    for item in items:
        if item.get_closest_marker("model") is not None:
            item.add_marker(pytest.mark.slow)


def _run(coro_fn: object) -> object:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn).result()  # type: ignore[arg-type]


def _postgres_available() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return bool(_run(probe()))


@pytest.fixture(scope="session")
def model_data_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the converted embedded model is kept between test sessions.

    Converting the GGUF file takes ~30 s, loading the converted folder ~3 s:
    pytest's cache directory (or ``DESKMATE_TEST_MODEL_CACHE``) keeps it.
    """
    configured = os.environ.get("DESKMATE_TEST_MODEL_CACHE")
    if configured:
        return Path(configured)
    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("deskmate-models"))
    return tmp_path_factory.mktemp("deskmate-models")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session, dropped afterwards."""
    import asyncpg

    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
    name = f"deskmate_test_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(run(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _fresh_pg_repository(url: str) -> Repository:
    from sqlalchemy import Connection, text

    def wipe(conn: Connection) -> None:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))

    db = Database(url)
    await db.run(wipe)
    await db.upgrade()
    return Repository(db)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def repository(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    """A migrated, empty repository on SQLite (file, WAL) and on PostgreSQL."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'deskmate.db'}")
        await db.upgrade()
        repo = Repository(db)
    else:
        repo = await _fresh_pg_repository(request.getfixturevalue("postgres_url"))
    yield repo
    await repo.aclose()


@pytest.fixture
async def sqlite_repository(tmp_path: Path) -> AsyncIterator[Repository]:
    db = Database(f"sqlite:///{tmp_path / 'deskmate.db'}")
    await db.upgrade()
    repo = Repository(db)
    yield repo
    await repo.aclose()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(context_window=2048)


def make_manager(
    repository: Repository, backend: FakeBackend, **overrides: object
) -> ConversationManager:
    options: dict[str, object] = {
        "repository": repository,
        "backend": backend,
        "system_prompt": "You are a test assistant.",
        "sampling": SamplingParams(max_new_tokens=64, temperature=0.0),
        "llm_timeout": 5.0,
        "max_input_chars": 4000,
        "history_messages": 40,
        "admins": {"test:admin"},
    }
    options.update(overrides)
    return create_manager(**options)  # type: ignore[arg-type]


@pytest.fixture
def manager(sqlite_repository: Repository, backend: FakeBackend) -> ConversationManager:
    return make_manager(sqlite_repository, backend)
