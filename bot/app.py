"""Composition root: the one place that builds and wires every component."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.knowledge.rerank import LikelihoodReranker
from bot.manager import ConversationManager
from bot.settings import Settings
from bot.types import ChatAdapter
from llm.base import Backend, SamplingParams, Scorer
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository

if TYPE_CHECKING:
    from adapters.web import HttpServer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Core:
    settings: Settings
    repository: Repository
    backend: Backend
    manager: ConversationManager


def create_backend(settings: Settings) -> Backend:
    """The configured LLM backend, not yet loaded.

    An OpenAI-compatible HTTP backend when ``DESKMATE_LLM_URL`` is set, else a
    local model. Nothing heavy happens here: the local backend imports torch
    and reads the model only in ``load()``.
    """
    if settings.llm_url:
        from llm.openai_http import OpenAIBackend

        return OpenAIBackend(
            base_url=settings.llm_url,
            api_key=settings.llm_api_key,
            model_name=settings.llm_model_name,
            timeout=settings.llm_timeout,
            retries=2,
        )
    if settings.model == "fake":
        # Echoes the question; for exercising adapters and deployments
        # without a model.
        from llm.fake import FakeBackend

        return FakeBackend()
    from llm.transformers import TransformersBackend

    return TransformersBackend(
        model=settings.model,
        quantization=settings.quantization,
        device=settings.device,
        allow_quantization_fallback=settings.allow_quantization_fallback,
        dtype=settings.dtype,
        data_dir=settings.data_dir,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        threads=settings.threads,
    )


def create_knowledge_base(
    db: Database, settings: Settings, backend: Backend | None = None
) -> KnowledgeBase:
    """The knowledge base ``deskmate run`` and the ``faq`` commands share.

    ``backend`` re-ranks close calls when it can score (the local model) and
    ``DESKMATE_FAQ_RERANK`` allows it.
    """
    from llm.embeddings import configured_model_name, shared_embedder

    folder = settings.embedding_model
    name = configured_model_name(folder) if folder is not None else None
    reranker = None
    if settings.faq_rerank and isinstance(backend, Scorer):
        reranker = LikelihoodReranker(backend)
    return KnowledgeBase(
        repository=KnowledgeRepository(db),
        embedder=shared_embedder(model_dir=folder, name=name),
        policy=Policy(
            verbatim_score=settings.faq_verbatim_score,
            verbatim_margin=settings.faq_verbatim_margin,
            grounded_score=settings.faq_grounded_score,
            # Between the two: still likely enough to show verbatim when a
            # model answer fails the citation check.
            fallback_verbatim_score=(settings.faq_grounded_score + settings.faq_verbatim_score) / 2,
        ),
        model_store=settings.data_dir / "embeddings",
        reranker=reranker,
    )


@asynccontextmanager
async def open_core(settings: Settings, *, backend: Backend | None = None) -> AsyncIterator[Core]:
    """Migrated storage, a loaded model and a manager; closed on exit."""
    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        repository = Repository(db, claim_lease=settings.llm_timeout + 60)
        backend = backend or create_backend(settings)
        log.info("loading model (%s)…", backend.name)
        await backend.load()
        try:
            manager = ConversationManager(
                repository=repository,
                backend=backend,
                system_prompt=settings.system_prompt,
                sampling=SamplingParams(
                    max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    repetition_penalty=settings.repetition_penalty,
                ),
                llm_timeout=settings.llm_timeout,
                max_input_chars=settings.max_input_chars,
                history_messages=settings.history_messages,
                admins=settings.admins,
                knowledge=create_knowledge_base(db, settings, backend),
            )
            yield Core(settings, repository, backend, manager)
        finally:
            await backend.aclose()
    finally:
        await db.dispose()


def create_platform_adapters(settings: Settings, http: HttpServer) -> list[ChatAdapter]:
    """Adapters for every platform whose credentials are configured."""
    adapters: list[ChatAdapter] = []
    if settings.telegram_enabled:
        from adapters.telegram import create_adapter as create_telegram

        adapters.append(create_telegram(settings=settings, http=http))
    if settings.slack_enabled:
        from adapters.slack import create_adapter as create_slack

        adapters.append(create_slack(settings=settings, http=http))
    return adapters


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every configured adapter (and the local web chat) until stopped.

    SIGTERM and SIGINT stop it: adapters finish the work in hand first.
    """
    from adapters.web import HttpServer, WebChat

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not possible off the main thread (tests) or on some platforms.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    async with open_core(settings) as core:
        http = HttpServer(host=settings.host, port=settings.port)
        web_chat = WebChat(http=http)
        adapters: list[ChatAdapter] = [web_chat, *create_platform_adapters(settings, http)]
        await http.start()
        started: list[ChatAdapter] = []
        try:
            for adapter in adapters:
                await adapter.start(core.manager)
                started.append(adapter)
            http.ready = True
            names = ", ".join(a.name for a in adapters)
            log.info(
                "Deskmate is ready (%s). Local chat: http://%s:%d/",
                names,
                settings.host,
                http.port,
            )
            await stop.wait()
            log.info("shutting down: finishing the work in hand")
        finally:
            http.ready = False
            for adapter in reversed(started):
                try:
                    await adapter.stop()
                except Exception:
                    log.exception("adapter %s did not stop cleanly", adapter.name)
            await http.stop()
