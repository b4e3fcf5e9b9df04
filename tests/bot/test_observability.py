"""/metrics in the Prometheus text format, and /healthz that notices a
database gone (a real PostgreSQL behind a proxy the test shuts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from adapters.web import HttpServer
from bot.app import _metrics_endpoint
from llm.base import LLMError
from llm.fake import FakeBackend
from llm.scheduler import SchedulerStats
from storage.db import Database
from storage.repository import Repository
from tests.conftest import make_manager
from tests.faults import TcpProxy
from tests.support import Rendered, make_inbound


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer(host="127.0.0.1", port=0)
    yield http
    await http.stop()


async def test_metrics_count_events_latency_tokens_and_the_model_queue(
    server: HttpServer, sqlite_repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(sqlite_repository, backend)
    manager.metrics.watch_model(lambda: SchedulerStats(running=3, waiting=5, steps=9, completed=2))
    server.add_route("GET", "/metrics", _metrics_endpoint(manager.metrics))
    await server.start()
    duplicate = make_inbound("hello", event_id="same")
    await manager.handle(duplicate, Rendered())
    await manager.handle(duplicate, Rendered())
    backend.enqueue(error=LLMError("down"))
    await manager.handle(make_inbound("again"), Rendered())
    url = f"http://127.0.0.1:{server.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    lines = set(text.splitlines())
    assert 'deskmate_events_total{outcome="received",platform="test"} 2.0' in lines
    assert 'deskmate_events_total{outcome="duplicate",platform="test"} 1.0' in lines
    assert 'deskmate_events_total{outcome="answered",platform="test"} 1.0' in lines
    assert 'deskmate_events_total{outcome="failed",platform="test"} 1.0' in lines
    assert 'deskmate_answer_seconds_count{platform="test"} 1.0' in lines
    assert 'deskmate_tokens_total{kind="completion"} 2.0' in lines
    assert "deskmate_model_queue_depth 5.0" in lines and "deskmate_model_batch_size 3.0" in lines


@pytest.mark.postgres
async def test_healthz_reports_a_database_that_went_away(
    server: HttpServer, postgres_url: str
) -> None:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    db = Database(url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False))
    server.checks["database"] = db.ping
    await server.start()
    health = f"http://127.0.0.1:{server.port}/healthz"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(health) as response:
                assert response.status == 503  # not serving yet
                assert await response.json() == {"status": "starting"}
            server.ready = True
            async with session.get(health) as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok", "database": "ok"}
            await proxy.shut()
            async with session.get(health) as response:
                assert response.status == 503
                assert await response.json() == {"status": "degraded", "database": "unavailable"}
    finally:
        await db.dispose()


async def test_healthz_reports_facts_without_changing_its_status(server: HttpServer) -> None:
    state = {"fast_decode": "building"}
    server.facts["fast_decode"] = lambda: state["fast_decode"]
    server.ready = True
    await server.start()
    health = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession() as session:
        async with session.get(health) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "fast_decode": "building"}
        state["fast_decode"] = "ready"
        async with session.get(health) as response:
            assert (await response.json())["fast_decode"] == "ready"
