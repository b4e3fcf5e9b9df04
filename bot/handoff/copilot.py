"""The agents' copilot: a reply drafted for a ticket from the knowledge
sources, posted in the ticket's thread or topic with its sources and the
buttons Send, Edit and Discard.

A customer's message in a claimed or waiting ticket is relayed to the agents
first (queued in the outbox); the draft is written afterwards in the
background, so drafting never delays the relay. A passage the policy would
quote verbatim is suggested as it is (no model call); between the thresholds
the model writes a reply from the best passages and the ticket's history,
and it must pass the citation guard; with nothing close enough, the post says
that the knowledge does not cover the question instead of guessing.

The suggestion is stored once per cause (the customer's message, or the
``/suggest`` that asked for it) and posted through the outbox under a key
derived from its id: a replayed message or a restart posts nothing twice.
It is never relayed to the customer unless an agent sends it
(``bot.handoff.suggested``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.generation import Generation, GenerationPath
from bot.handoff.desk import HelpDesk, customer_language
from bot.handoff.live import LiveDraft
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import check_grounded, grounded_prompt
from bot.language import (
    SUPPORTED_LANGUAGES,
    answer_language_rule,
    detect_language,
    translation_messages,
)
from bot.messages import say
from bot.types import Accepted
from llm.base import ChatMessage, SamplingParams
from storage.handoff_repo import Ticket
from storage.suggestions_repo import POST_KEY, Suggestion

log = logging.getLogger(__name__)

# A suggestion is a short reply; the ticket's thread is not the place for essays.
SUGGESTION_SAMPLING = SamplingParams(max_new_tokens=220, temperature=0.0)
# Turns of the ticket the model reads besides the passages.
HISTORY_TURNS = 8
SOURCES_SHOWN = 3
# A translation for the agents is as long as the reply, give or take.
TRANSLATION_SAMPLING = SamplingParams(max_new_tokens=300, temperature=0.0)


@dataclass(frozen=True, slots=True)
class Drafted:
    """A reply drafted for the agents: ``path`` is ``quoted`` (a passage as it
    is), ``written`` (the model, from ``sources``) or ``unsupported``."""

    path: str
    text: str
    sources: tuple[Passage, ...]

    @property
    def topic(self) -> str:
        return self.sources[0].title if self.sources else ""


class Copilot:
    """Drafts and posts suggested replies in tickets."""

    def __init__(
        self,
        *,
        desk: HelpDesk,
        knowledge: KnowledgeBase | None,
        generation: GenerationPath,
    ) -> None:
        self.desk = desk
        self.knowledge = knowledge
        self.generation = generation
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.knowledge is not None and self.desk.connected

    # -- when a customer writes ------------------------------------------------------

    def after_relay(self, accepted: Accepted, ticket: Ticket) -> None:
        """Draft a suggestion for the customer's message in the background (the
        relay to the agents is already queued)."""
        if not self.enabled or not ticket.open or not accepted.text.strip():
            return
        if accepted.command is not None:
            return  # a command relayed as it is asks nothing of the knowledge
        task = asyncio.create_task(
            # The language this message of the customer's is answered in.
            self._safely(
                accepted, ticket, accepted.text, f"message:{accepted.inbound_id}", accepted.language
            ),
            name=f"suggest:{accepted.inbound_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask_again(self, accepted: Accepted, ticket: Ticket) -> str:
        """``/suggest`` in a ticket: a new suggestion for the customer's last message."""
        kb = self.knowledge
        if not self.enabled or kb is None:
            return say("copilot.unavailable", accepted.language)
        if not await kb.has_passages(ticket.customer_address.tenant):
            return say("copilot.unavailable", accepted.language)
        question = await self.last_question(ticket)
        if not question:
            return say("copilot.no_question", accepted.language, id=ticket.id)
        task = asyncio.create_task(
            self._safely(
                accepted,
                ticket,
                question,
                f"asked:{accepted.inbound_id}",
                customer_language(ticket),
            ),
            name=f"suggest-again:{accepted.inbound_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return say("copilot.drafting", accepted.language, id=ticket.id)

    async def settle(self, within: float = 30.0) -> None:
        """Wait for the drafts in progress (at shutdown, and in tests)."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(set(self._tasks), timeout=within)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.settle(5.0)

    async def _safely(
        self, accepted: Accepted, ticket: Ticket, question: str, cause: str, language: str
    ) -> None:
        try:
            await self.suggest(
                accepted,
                ticket,
                question=question,
                cause=cause,
                language=language,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # A suggestion is help, not a promise: the agents answer as before.
            log.exception("ticket #%s: no suggestion for %s", ticket.id, cause)

    async def suggest(
        self, accepted: Accepted, ticket: Ticket, *, question: str, cause: str, language: str = ""
    ) -> Suggestion | None:
        """Draft, store and post the suggestion for ``cause`` (None: drafted before)."""
        repo = self.desk.tickets.suggestions
        if await repo.exists(cause):
            return None
        kb = self.knowledge
        if kb is None or not await kb.has_passages(ticket.customer_address.tenant):
            return None  # no knowledge for this tenant: nothing to suggest from, nothing said
        live = await self.live_draft(ticket, cause)
        kept: Suggestion | None = None
        try:
            kept = await self._kept(accepted, ticket, question, cause, language, live)
        finally:
            if live is not None and kept is None:
                await live.withdraw()
        return kept

    async def live_draft(self, ticket: Ticket, cause: str) -> LiveDraft | None:
        """A message for the suggestion to stream into, in ``ticket``'s thread;
        None where the thread's platform cannot edit messages (posted when done)."""
        live = self.desk.live
        if live is None or not await self.desk.reaches_space(ticket):
            return None
        space = self.desk.space_address(ticket)
        interval = live.edit_interval(space.platform)
        if interval is None:
            return None
        return LiveDraft(
            live=live,
            tickets=self.desk.tickets,
            space=space,
            ticket_id=ticket.id,
            cause=cause,
            interval=interval,
            # The agents' language (their tenant's /language), for the words around the draft.
            language=await self.desk.ticket_language(ticket),
        )

    async def _kept(
        self,
        accepted: Accepted,
        ticket: Ticket,
        question: str,
        cause: str,
        language: str,
        live: LiveDraft | None,
    ) -> Suggestion | None:
        """Draft, store and post; None when the suggestion was not kept."""
        repo = self.desk.tickets.suggestions
        drafted = await self.draft(accepted, ticket, question, language=language, live=live)
        if live is not None:
            await live.close()  # every streaming edit before the finished post
        current = await self.desk.tickets.get(ticket.id)
        if current is None or not current.open or not current.customer:
            # Closed, or its customer forgotten, while the draft was written.
            return None
        suggestion, created = await repo.create(
            ticket_id=ticket.id,
            conversation_id=ticket.conversation_id,
            tenant=ticket.customer_address.tenant,
            cause=cause,
            inbound_id=accepted.inbound_id if cause.startswith("message:") else None,
            question=question,
            text=drafted.text,
            path=drafted.path,
            topic=drafted.topic or question[:300],
            sources=[_source(p) for p in drafted.sources],
            language=language,
        )
        if not created:
            if live is not None:
                live.leave()  # drafted by another process, which owns its message
            return None
        agents = await self.desk.ticket_language(ticket)
        translation = await self.translation(accepted, suggestion, agents)
        await self.post(ticket, suggestion, translation)
        if await repo.withdraw_if_forgotten(suggestion.id):
            return None
        return suggestion

    async def post(self, ticket: Ticket, suggestion: Suggestion, translation: str = "") -> None:
        """Queue the suggestion for the ticket's thread (never for the customer),
        with ``translation`` of it for the agents below it."""
        if not await self.desk.reaches_space(ticket):
            return
        # Written to the agents of the ticket's space: their tenant's /language,
        # else the deployment's, as every other text in a ticket.
        agents = await self.desk.ticket_language(ticket)
        buttons: tuple[tuple[str, str], ...] = ()
        if suggestion.sendable:
            buttons = (
                (say("copilot.send_button", agents), f"/suggest send {suggestion.id}"),
                (say("copilot.edit_button", agents), f"/suggest edit {suggestion.id}"),
                (say("copilot.discard_button", agents), f"/suggest discard {suggestion.id}"),
            )
        await self.desk.tickets.enqueue(
            POST_KEY.format(id=suggestion.id),
            self.desk.space_address(ticket),
            suggestion_text(suggestion, translation, agents),
            kind="to_ticket",
            ticket_id=ticket.id,
            buttons=buttons,
        )

    # -- drafting --------------------------------------------------------------------

    async def draft(
        self,
        accepted: Accepted,
        ticket: Ticket,
        question: str,
        *,
        language: str = "",
        live: LiveDraft | None = None,
    ) -> Drafted:
        """What the knowledge supports as a reply to ``question`` for this ticket's
        customer (their tenant's passages and the shared ones)."""
        kb = self.knowledge
        tenant = ticket.customer_address.tenant
        if kb is None or not await kb.has_passages(tenant):
            return Drafted("unsupported", "", ())
        found = await kb.lookup(
            question, tenant=tenant, limit=max(kb.policy.grounded_entries, 3), agents=True
        )
        decision = kb.decide_hits(found.passages, found.scope)
        if decision.path == "verbatim":
            return Drafted("quoted", decision.hits[0].text, decision.hits[:1])
        if decision.path == "escalated" or not decision.hits:
            return Drafted("unsupported", "", tuple(found.passages[:1]))
        hits = decision.hits
        text = await self._written(accepted, ticket, question, hits, language, live)
        if text:
            return Drafted("written", text, hits)
        if hits[0].dense >= kb.policy.fallback_verbatim_score:
            return Drafted("quoted", hits[0].text, hits[:1])
        return Drafted("unsupported", "", hits[:1])

    async def _written(
        self,
        accepted: Accepted,
        ticket: Ticket,
        question: str,
        hits: Sequence[Passage],
        language: str,
        live: LiveDraft | None = None,
    ) -> str:
        """The model's reply from ``hits`` ("" when it failed or the citation guard
        refused it), streamed into ``live`` as it is written."""
        kb = self.knowledge
        assert kb is not None
        persona = (await kb.persona(ticket.customer_address.tenant)).strip()
        messages = await self.messages(ticket, question, hits, persona, language)
        if live is not None:
            await live.start()
        text = await self._model_text(accepted, messages, SUGGESTION_SAMPLING, live)
        if not text:
            return ""
        why = check_grounded(text, question, hits)
        if why:
            log.info("ticket #%s: suggestion refused: %s", ticket.id, why)
            return ""
        return text

    async def _model_text(
        self,
        accepted: Accepted,
        messages: list[ChatMessage],
        sampling: SamplingParams,
        live: LiveDraft | None = None,
    ) -> str:
        """What the model wrote for ``messages`` ("" when it failed or the output
        guard withheld it)."""
        request = self.generation.request(accepted, messages, sampling)
        generation = Generation(request)
        async for _ in self.generation.model_text(accepted, generation, asyncio.Event()):
            if live is not None:
                live.show(generation.text)
        if generation.error is not None or generation.withheld is not None:
            return ""
        return generation.text.strip()

    async def translation(self, accepted: Accepted, suggestion: Suggestion, target: str) -> str:
        """A machine translation of the suggestion for agents who read ``target``,
        another language than the customer's ("" when none is needed or the model
        gave none: the agents still get the suggestion)."""
        if not suggestion.sendable:
            return ""
        # The reply's own language first: a quoted passage may not be in the
        # customer's language, and one already in the agents' needs nothing.
        source = detect_language(suggestion.text) or suggestion.language or target
        if source == target or source not in SUPPORTED_LANGUAGES:
            return ""
        messages = translation_messages(suggestion.text, source=source, target=target)
        try:
            return await self._model_text(accepted, messages, TRANSLATION_SAMPLING)
        except Exception:
            log.exception("suggestion #%s: no translation for the agents", suggestion.id)
            return ""

    async def messages(
        self,
        ticket: Ticket,
        question: str,
        hits: Sequence[Passage],
        persona: str,
        language: str,
    ) -> list[ChatMessage]:
        """The grounded prompt, with the ticket's recent turns and the language rule."""
        history = await self.history(ticket)
        where = (
            answer_language_rule(language)
            if language in SUPPORTED_LANGUAGES
            else "Write the reply in the language of the customer's last message."
        )
        system = (
            f"{persona}\n\n" if persona else ""
        ) + f"You draft a reply that a support agent may send to the customer. {where}"
        prompt = grounded_prompt(question, hits, system)
        if history:
            turns = "\n".join(history)
            prompt[-1] = ChatMessage(
                "user", f"Conversation so far:\n{turns}\n\n{prompt[-1].content}"
            )
        return prompt

    async def history(self, ticket: Ticket) -> list[str]:
        """The ticket's last turns, as lines the model reads."""
        lines = [
            f"{'Customer' if t.get('role') == 'user' else 'Assistant'}: {t.get('text', '')!s}"
            for t in ticket.details.get("turns") or []
        ]
        for event in await self.desk.tickets.events(ticket.id):
            if event.kind == "from_customer" and event.text:
                lines.append(f"Customer: {event.text}")
            elif event.kind == "to_customer" and event.text:
                lines.append(f"Agent: {event.text}")
        return [line[:600] for line in lines[-HISTORY_TURNS:]]

    async def last_question(self, ticket: Ticket) -> str:
        for event in reversed(await self.desk.tickets.events(ticket.id)):
            if event.kind == "from_customer" and event.text.strip():
                return event.text.strip()
        turns = ticket.details.get("turns") or []
        said = [str(t.get("text", "")) for t in turns if t.get("role") == "user"]
        return said[-1].strip() if said else ""


def _source(passage: Passage) -> dict[str, object]:
    return {
        "kind": passage.kind,
        "ref": passage.ref,
        "label": passage.label,
        "title": passage.title,
        "score": round(passage.dense, 3),
        **passage.location(),
    }


def suggestion_text(
    suggestion: Suggestion, translation: str = "", agents_language: str = ""
) -> str:
    """The suggestion as posted in the ticket: a heading line, the reply, and
    its sources with how to act on it (and a machine translation for the
    agents, marked as one, which Send never sends). ``suggestion_body`` reads
    the reply back out of it, so the three parts are kept apart by blank
    lines, and the translation, in the last part, has none of its own."""
    language = agents_language or "en"
    if not suggestion.sendable:
        return say(
            "copilot.unsupported",
            language,
            id=suggestion.id,
            question=suggestion.question[:200],
            considered=_sources_line(suggestion, language) or say("copilot.no_sources", language),
        )
    path = say(f"copilot.path.{suggestion.path}", language)
    head = say("copilot.head", language, id=suggestion.id, path=path)
    tail = [_sources_line(suggestion, language), say("copilot.how", language, id=suggestion.id)]
    if translation.strip():
        lines = [line for line in translation.strip().splitlines() if line.strip()]
        named = SUPPORTED_LANGUAGES.get(agents_language, agents_language)
        tail.insert(0, say("copilot.translation", language, language=named, text="\n".join(lines)))
    return f"{head}\n\n{suggestion.text}\n\n" + "\n".join(line for line in tail if line)


def _sources_line(suggestion: Suggestion, language: str = "en") -> str:
    shown = [
        say(
            "copilot.source",
            language,
            label=s.get("label", ""),
            title=str(s.get("title", ""))[:80],
            score=s.get("score", 0),
        )
        for s in suggestion.sources[:SOURCES_SHOWN]
    ]
    return say("copilot.sources", language, sources="; ".join(shown)) if shown else ""


def suggestion_body(posted: str) -> str:
    """The reply inside a posted suggestion's text (what an edit starts from)."""
    for escaped, plain in (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        posted = posted.replace(escaped, plain)
    parts = posted.strip().split("\n\n")
    if len(parts) < 3:
        return ""
    return "\n\n".join(parts[1:-1]).strip()
