"""Composition root: the one place that builds and wires every component."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from bot.answers import RECORD_RETRY_FOR
from bot.commands import CommandRegistry, builtin_commands
from bot.foreign_answers import resolve_mode
from bot.guard import OutputGuard, stable_canary
from bot.handoff.desk import HelpDesk
from bot.handoff.desk_command import register_desk_command
from bot.handoff.worker import OutboxWorker
from bot.knowledge.commands import register_knowledge_commands
from bot.knowledge.company_facts import CompanyFacts
from bot.knowledge.documents.library import DocumentLibrary, Limits
from bot.knowledge.documents.source import DocumentSource
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import DOCUMENT
from bot.knowledge.policy import Policy, scale_of
from bot.knowledge.rerank import LikelihoodReranker
from bot.language import Languages
from bot.language_commands import register_language_commands
from bot.manager import ConversationManager
from bot.metrics import CONTENT_TYPE, Metrics
from bot.services import ConsoleParts
from bot.settings import IPNetwork, Settings
from bot.startclock import mark
from bot.team.commands import register_team_commands
from bot.team.service import Team, TeamSettings
from bot.throttle import CircuitBreaker
from bot.types import Channel, ChatAdapter
from bot.widget_sites import WidgetSites
from llm.base import Backend, SamplingParams, Scorer
from llm.embeddings import BASE_MODEL_NAME
from storage.console_repo import ConsoleRepository
from storage.db import Database
from storage.documents_repo import DocumentsRepository
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.languages_repo import LanguageRepository
from storage.repository import Repository
from storage.slack_repo import SlackRepository, TokenCipher
from storage.team_repo import TeamRepository
from storage.web_repo import WebRepository
from storage.widget_repo import WidgetRepository

if TYPE_CHECKING:
    from adapters.web import HttpServer

log = logging.getLogger(__name__)

# How long a claim on an inbound event outlives its last renewal (renewed
# every CLAIM_LEASE / 6 s): the time a killed worker's messages wait before
# another process takes them over.
CLAIM_LEASE = 15.0


@dataclass(slots=True)
class Core:
    settings: Settings
    repository: Repository
    backend: Backend
    manager: ConversationManager
    # The support team's tickets (its outbox worker needs the adapters, so
    # ``serve`` starts it once they run).
    desk: HelpDesk


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
        fast_decode=settings.fast_decode,
    )


def create_team(db: Database, settings: Settings) -> Team:
    """Roles per tenant, the audit trail, quotas and ratings, on ``db``."""
    return Team(
        TeamRepository(db),
        owners=settings.admins,
        settings=TeamSettings(
            ask_rating=settings.ask_rating,
            daily_user_tokens=settings.daily_user_tokens,
            daily_tenant_tokens=settings.daily_tenant_tokens,
        ),
    )


def create_widget_sites(db: Database, settings: Settings, team: Team | None = None) -> WidgetSites:
    """The websites that embed the chat widget, their changes audited (by ``team``)."""
    return WidgetSites(WidgetRepository(db), team=team or create_team(db, settings))


def create_knowledge_base(
    db: Database, settings: Settings, backend: Backend | None = None
) -> KnowledgeBase:
    """The knowledge base ``deskmate run`` and the ``faq`` commands share.

    The FAQ is its first knowledge source; each further source is one
    ``kb.register(source)`` line here. ``backend`` re-ranks close FAQ calls
    when it can score (the local model) and ``DESKMATE_FAQ_RERANK`` allows it.
    """
    from llm.embeddings import (
        EMBEDDING_MODELS,
        configured_model_name,
        crosslingual_embedder,
        named_embedder,
    )

    folder = settings.embedding_model
    name = None
    if folder is not None and str(folder) not in EMBEDDING_MODELS:
        name = configured_model_name(folder)
    embedder = named_embedder(folder, name=name)
    reranker = None
    # The re-ranker reads questions with the English-centric local model: with the
    # multilingual embedding model, whose customers write any language, it stays off.
    if settings.faq_rerank and isinstance(backend, Scorer) and not settings.multilingual:
        reranker = LikelihoodReranker(backend)
    thresholds: dict[str, float] = {}
    if settings.faq_verbatim_score is not None:
        thresholds["verbatim_score"] = settings.faq_verbatim_score
    if settings.faq_grounded_score is not None:
        thresholds["grounded_score"] = settings.faq_grounded_score
    if thresholds:
        # Between the two: still likely enough to show verbatim when a
        # model answer fails the citation check.
        scale = scale_of(embedder.name)
        chosen = {"verbatim_score": scale.verbatim_score, "grounded_score": scale.grounded_score}
        chosen.update(thresholds)
        thresholds["fallback_verbatim_score"] = sum(chosen.values()) / 2
    kb = KnowledgeBase(
        repository=KnowledgeRepository(db),
        embedder=embedder,
        policy=Policy.for_model(
            embedder.name, verbatim_margin=settings.faq_verbatim_margin, **thresholds
        ),
        model_store=settings.data_dir / "embeddings",
        reranker=reranker,
        document_answers=settings.docs_answers,
        crosslingual=crosslingual_embedder(folder),
    )
    kb.register(
        DocumentSource(
            repository=DocumentsRepository(db),
            embedder=kb.retriever.base_embedder,
            base_url=settings.docs_base_url,
        )
    )
    return kb


def create_document_library(
    db: Database, settings: Settings, knowledge: KnowledgeBase | None
) -> DocumentLibrary | None:
    """The documents ``deskmate docs`` and the console add, list, remove and
    sync; embedded with the knowledge base's base model, and seen at once by
    this process's document source (other processes within seconds)."""
    if knowledge is None:
        return None
    source = knowledge.source(DOCUMENT)
    return DocumentLibrary(
        repository=DocumentsRepository(db),
        embedder=knowledge.retriever.base_embedder,
        limits=Limits(max_bytes=settings.docs_max_bytes, timeout=settings.docs_timeout),
        on_change=source.invalidate if isinstance(source, DocumentSource) else lambda: None,
    )


def create_company_facts(settings: Settings, knowledge: KnowledgeBase) -> CompanyFacts | None:
    """The check that keeps the model from answering for the company in
    support mode (None with ``DESKMATE_COMPANY_FACTS=answer``); ``open_core``
    warms its embedding model up in the background."""
    if settings.company_facts != "refuse":
        return None
    embedder = knowledge.retriever.base_embedder
    # Its margin was measured with the shipped model: another gets the patterns alone.
    return CompanyFacts(embedder=embedder if embedder.name == BASE_MODEL_NAME else None)


def create_manager(
    *,
    repository: Repository,
    backend: Backend,
    system_prompt: str,
    sampling: SamplingParams,
    llm_timeout: float | None,
    max_input_chars: int,
    history_messages: int,
    admins: Collection[str] = (),
    commands: CommandRegistry | None = None,
    knowledge: KnowledgeBase | None = None,
    desk: HelpDesk | None = None,
    team: Team | None = None,
    metrics: Metrics | None = None,
    user_rate: int = 0,
    breaker: CircuitBreaker | None = None,
    memory: int = 10_000,
    heartbeat: float | None = None,
    record_retry_for: float = RECORD_RETRY_FOR,
    guard: OutputGuard | None = None,
    company_facts: CompanyFacts | None = None,
    language: str = "en",
    foreign_answers: str = "quote",
) -> ConversationManager:
    """The conversation manager, with every part not given built here.

    The commands are the built-in ones plus the knowledge base's and the
    team's (registered once, unless the registry has them already); the team
    (on ``repository``'s database, ``admins`` its owners) approves learned
    answers into ``knowledge`` and is the help desk's unless it has its own.
    """
    commands = commands or builtin_commands()
    if knowledge is not None and commands.get("faq") is None:
        register_knowledge_commands(commands, knowledge)
    team = team or Team(TeamRepository(repository.db), owners=admins)
    if team.knowledge is None:
        team.knowledge = knowledge
    if commands.get("role") is None:
        register_team_commands(commands)
    if desk is not None and desk.team is None:
        desk.team = team
    if desk is not None and commands.get("desk") is None:
        register_desk_command(commands, desk)
    languages = Languages(LanguageRepository(repository.db), default=language)
    if desk is not None:
        # Agents are written to in their tenant's language, else the deployment's.
        desk.language, desk.languages = language, languages
    if commands.get("language") is None:
        register_language_commands(commands, languages)
    return ConversationManager(
        repository=repository,
        backend=backend,
        team=team,
        metrics=metrics or Metrics(),
        breaker=breaker if breaker is not None else CircuitBreaker(),
        commands=commands,
        system_prompt=system_prompt,
        sampling=sampling,
        llm_timeout=llm_timeout,
        max_input_chars=max_input_chars,
        history_messages=history_messages,
        admins=admins,
        knowledge=knowledge,
        desk=desk,
        user_rate=user_rate,
        memory=memory,
        heartbeat=heartbeat,
        record_retry_for=record_retry_for,
        guard=guard,
        company_facts=company_facts,
        languages=languages,
        foreign_answers=foreign_answers,
    )


@asynccontextmanager
async def open_core(settings: Settings, *, backend: Backend | None = None) -> AsyncIterator[Core]:
    """Migrated storage, a loaded model and a manager; closed on exit.

    The model loads in its worker thread while the database is migrated and
    the rest is built: the two overlap wherever the load waits on the disk or
    runs torch code outside the interpreter lock.
    """
    db = Database(settings.effective_database_url)
    loading: asyncio.Task[None] | None = None
    try:
        backend = backend or create_backend(settings)
        log.info("loading model (%s)…", backend.name)
        loading = asyncio.create_task(backend.load())
        await db.upgrade()
        mark("database at head")
        repository = Repository(db, claim_lease=CLAIM_LEASE)
        desk = HelpDesk(settings=settings.handoff, tickets=HandoffRepository(db))
        # Adapters ask whether a chat is a support space before any message is stored.
        await desk.spaces.refresh()
        metrics = Metrics()
        knowledge = create_knowledge_base(db, settings, backend)
        facts = create_company_facts(settings, knowledge)
        warming = asyncio.create_task(_warm_company_facts(facts, knowledge, backend))
        manager = create_manager(
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
            knowledge=knowledge,
            desk=desk,
            team=create_team(db, settings),
            metrics=metrics,
            user_rate=settings.user_rate,
            guard=OutputGuard(
                secrets=settings.configured_secrets,
                canary=stable_canary(settings.secret_key),
            ),
            company_facts=facts,
            language=settings.language,
            foreign_answers=resolve_mode(
                settings.foreign_answers, model=settings.model, llm_url=settings.llm_url
            ),
        )
        await loading
        mark("model loaded")
        stats = getattr(backend, "stats", None)
        if callable(stats):
            metrics.watch_model(stats)
        manager.start()
        filling = asyncio.create_task(_fill_faq_vectors(knowledge, backend))
        try:
            yield Core(settings, repository, backend, manager, desk)
        finally:
            warming.cancel()
            filling.cancel()
            await manager.aclose()
            if facts is not None:
                await asyncio.to_thread(facts.join, WARM_UP_JOIN_TIMEOUT)
    finally:
        if loading is not None:
            loading.cancel()
            # A failed load is the error being raised, or lost to the one that is.
            await asyncio.gather(loading, return_exceptions=True)
            await backend.aclose()
        await db.dispose()


# How long the model must have had nothing to do before the embedding model loads:
# after its first answer, and when no answer has come since the start.
IDLE_AFTER_ANSWER = 1.0
IDLE_WITHOUT_ANSWER = 30.0
# How long closing waits for the embedding model's load still under way.
WARM_UP_JOIN_TIMEOUT = 60.0


async def _warm_company_facts(
    facts: CompanyFacts | None, knowledge: KnowledgeBase, backend: Backend
) -> None:
    """Load the company-fact check's embedding model without delaying the first answer.

    With passages to search, the first question needs that model anyway: it
    loads at once, beside the chat model. Otherwise it waits until the chat
    model has finished an answer and been idle for a moment (or has had
    nothing to do for a long while), since loading it (sentence-transformers,
    scikit-learn, scipy) holds the interpreter for seconds that a first
    answer would wait out. Until it is ready the check's patterns decide.
    """
    if facts is None:
        return
    if not await knowledge.has_passages():
        await _until_idle(backend)
    facts.start_warming()


async def _fill_faq_vectors(knowledge: KnowledgeBase, backend: Backend) -> None:
    """Embed the FAQ texts the multilingual model has no stored vectors of (after an
    upgrade from a version without them) once the chat model is idle, rather than
    inside the first question in another language. A failure is logged: that
    question would then embed them itself, as before."""
    await _until_idle(backend, without_answer=IDLE_WITHOUT_ANSWER)
    try:
        filled = await knowledge.fill_text_vectors()
    except Exception as exc:  # a background task: reported here, or lost at exit
        log.warning("could not embed the FAQ for questions in other languages: %s", exc)
        return
    if filled:
        log.info("embedded %d FAQ texts for questions in other languages", filled)


async def _until_idle(
    backend: Backend,
    *,
    after_answer: float = IDLE_AFTER_ANSWER,
    without_answer: float = IDLE_WITHOUT_ANSWER,
    poll: float = 0.25,
) -> None:
    """Return once ``backend`` is loaded and has run nothing for a while: ``after_answer``
    seconds once it has completed an answer, ``without_answer`` before that.

    A question on its way to the model (stored, routed, its prompt built) does
    not show in the scheduler yet, hence the longer wait before the first answer.
    A backend without a scheduler of its own counts as idle and unanswered.
    """
    stats = getattr(backend, "stats", None)
    idle_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        busy, answered = False, False
        if callable(stats):
            current = stats()
            # None: not loaded yet.
            busy = current is None or bool(current.running or current.waiting)
            answered = current is not None and current.completed > 0
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= (after_answer if answered else without_answer):
            return
        await asyncio.sleep(poll)


def create_platform_adapters(
    settings: Settings, http: HttpServer, db: Database | None = None
) -> list[ChatAdapter]:
    """Adapters for every platform whose credentials are configured (``db``: where
    Slack OAuth keeps its installations)."""
    adapters: list[ChatAdapter] = []
    if settings.telegram_enabled:
        from adapters.telegram import create_adapter as create_telegram

        adapters.append(create_telegram(settings=settings, http=http))
    if settings.slack_enabled:
        from adapters.slack import create_adapter as create_slack

        installs = None
        if settings.slack_oauth_enabled and db is not None:
            installs = SlackRepository(db, TokenCipher(settings.secret_key))
        adapters.append(create_slack(settings=settings, http=http, installs=installs))
    return adapters


def _report_fast_decode(http: HttpServer, backend: Backend) -> None:
    """/healthz says whether the packed decode step has taken over from the eager one yet."""
    from llm.transformers import TransformersBackend

    if isinstance(backend, TransformersBackend):
        http.facts["fast_decode"] = lambda: backend.fast_decode


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
        adapters: list[ChatAdapter] = create_platform_adapters(settings, http, core.repository.db)
        if settings.web_chat_enabled:
            web_chat = WebChat(
                http=http,
                store=WebRepository(core.repository.db),
                token=settings.web_token,
                secret_key=settings.secret_key,
                trusted=settings.proxy_networks,
            )
            adapters.insert(0, web_chat)
        adapters.append(create_widget(settings, http, core.repository.db))
        if len(adapters) == 1:
            log.warning(
                "no platform is configured and the web chat is off: only the website widget "
                "answers (deskmate widget add ORIGIN adds a site)"
            )
        http.checks["database"] = core.repository.db.ping
        _report_fast_decode(http, core.backend)
        http.add_route(
            "GET",
            "/metrics",
            _metrics_endpoint(
                core.manager.metrics,
                token=settings.metrics_token,
                trusted=settings.proxy_networks,
            ),
        )
        from adapters.webconsole import mount_console

        mount_console(http, settings=settings, services=create_console_services(core))
        await http.start()
        started: list[ChatAdapter] = []
        worker: OutboxWorker | None = None
        try:
            for adapter in adapters:
                await adapter.start(core.manager)
                started.append(adapter)
            if core.desk.connected:
                channels = {a.name: a for a in started if isinstance(a, Channel)}
                worker = OutboxWorker(desk=core.desk, channels=channels)
                worker.start()
            http.ready = True
            names = ", ".join(a.name for a in adapters)
            chat = (
                f" Local chat: http://{settings.host}:{http.port}/"
                if settings.web_chat_enabled
                else ""
            )
            mark("ready")
            log.info("Deskmate is ready (%s).%s", names, chat)
            await stop.wait()
            log.info("shutting down: finishing the work in hand")
        finally:
            http.ready = False
            if worker is not None:
                # Rows not sent yet stay queued for the next start.
                await worker.stop(grace=2.0)
            for adapter in reversed(started):
                try:
                    await adapter.stop()
                except Exception:
                    log.exception("adapter %s did not stop cleanly", adapter.name)
            await http.stop()


def create_widget(settings: Settings, http: HttpServer, db: Database) -> ChatAdapter:
    """The website chat widget: served whenever a site exists, whatever
    ``DESKMATE_WEB_CHAT`` says about the local page."""
    from adapters.widget import WidgetChat

    hours = settings.handoff.hours
    return WidgetChat(
        http=http,
        sites=create_widget_sites(db, settings),
        store=WebRepository(db),
        secret_key=settings.secret_key,
        trusted=settings.proxy_networks,
        visitor_rate=settings.widget_visitor_rate,
        site_rate=settings.widget_site_rate,
        is_open=hours.is_open if hours is not None else None,
    )


def create_console_services(core: Core) -> ConsoleParts:
    """The parts of a running core the operator console may use, and its own repository."""
    stats = getattr(core.backend, "stats", None)
    return ConsoleParts(
        repository=ConsoleRepository(core.repository.db),
        knowledge=core.manager.knowledge,
        team=core.manager.team,
        desk=core.desk,
        metrics=core.manager.metrics,
        backend_name=core.backend.name,
        model_stats=stats if callable(stats) else None,
        forget=core.manager.forget_user,
        sites=create_widget_sites(core.repository.db, core.settings, core.manager.team),
        documents=create_document_library(
            core.repository.db, core.settings, core.manager.knowledge
        ),
    )


def _metrics_endpoint(
    metrics: Metrics, *, token: str = "", trusted: Sequence[IPNetwork] = ()
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /metrics``: with ``token``, for its bearer only (401); without,
    for clients on this machine only (403), as the trusted proxies tell."""
    from adapters.clients import client_of

    expected = f"Bearer {token}".encode()
    refused: set[str] = set()  # told the operator once per address

    async def handler(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "send Authorization: Bearer <DESKMATE_METRICS_TOKEN>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        else:
            client = client_of(request, trusted)
            if not client.loopback:
                if client.address not in refused and len(refused) < 1000:
                    refused.add(client.address)
                    log.warning(
                        "/metrics refused to %s: without DESKMATE_METRICS_TOKEN it is served "
                        "to this machine only",
                        client.address,
                    )
                return web.json_response(
                    {"error": "metrics are served to this machine only"}, status=403
                )
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return handler
