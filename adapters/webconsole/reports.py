"""Pure shaping of what the console shows: transcripts with their answers'
paths and sources, their exports, and the gap report's groups."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.messages import say
from storage.console_repo import EscalatedQuestion, LoggedAnswer, Transcript, TranscriptMessage
from storage.keywords import keyword_terms

PATH_NAMES = {
    "verbatim": "verbatim FAQ",
    "grounded": "grounded",
    "escalated": "escalated",
    "person": "handed to a person",
    "chat": "plain chat",
}


@dataclass(frozen=True, slots=True)
class Source:
    ref: str
    question: str
    source: str
    score: float | None
    keyword: float | None
    present: bool  # False: the entry was removed since


@dataclass(frozen=True, slots=True)
class Turn:
    message: TranscriptMessage
    author: str
    path: str = ""  # "" when the knowledge base logged nothing for it
    sources: tuple[Source, ...] = ()


def annotate(transcript: Transcript, language: str = "en") -> list[Turn]:
    """Each message with who wrote it (a customer without a name, and the bot,
    named in ``language``) and, for an answer, how it was answered.

    The answer log names conversations, not messages: an answer is matched to
    the logged entry for the question it replies to (else the same text),
    each logged entry used once, in order.
    """
    by_id = {m.id: m for m in transcript.messages}
    unused: list[LoggedAnswer] = list(transcript.answers)
    turns: list[Turn] = []
    customer = say("console.author.customer", language)
    bot = say("console.author.bot", language)
    for message in transcript.messages:
        if message.role != "assistant":
            name = transcript.names.get(message.user_id, "")
            author = f"{name} ({message.user_id})" if name else message.user_id or customer
            turns.append(Turn(message, author))
            continue
        asked = by_id.get(message.reply_to) if message.reply_to is not None else None
        logged = _take(unused, question=asked.text if asked is not None else None)
        if logged is None:
            logged = _take(unused, answer=message.text.strip())
        if logged is None:
            turns.append(Turn(message, bot))
            continue
        sources = []
        for item in logged.entries:
            entry = transcript.entries.get(int(item.get("id", -1)))
            sources.append(
                Source(
                    ref=str(item.get("ref") or item.get("id") or "?"),
                    question=entry.question if entry is not None else "",
                    source=entry.source if entry is not None else "",
                    score=_float(item.get("score")),
                    keyword=_float(item.get("keyword")),
                    present=entry is not None,
                )
            )
        turns.append(Turn(message, bot, logged.path, tuple(sources)))
    return turns


def _take(
    items: list[LoggedAnswer], *, question: str | None = None, answer: str | None = None
) -> LoggedAnswer | None:
    for index, item in enumerate(items):
        if (question is not None and item.question == question) or (
            answer is not None and item.answer.strip() == answer
        ):
            return items.pop(index)
    return None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def transcript_json(transcript: Transcript, turns: Sequence[Turn]) -> str:
    a = transcript.address
    body = {
        "conversation": {
            "id": transcript.id,
            "platform": a.platform,
            "tenant": a.tenant,
            "chat": a.chat,
            "thread": a.thread,
            "key": a.key,
            "tickets": transcript.ticket_ids,
        },
        "messages": [
            {
                "id": t.message.id,
                "role": t.message.role,
                "kind": t.message.kind,
                "author": t.author,
                "user_id": t.message.user_id,
                "text": t.message.text,
                "created_at": t.message.created_at.isoformat(),
                "latency_ms": t.message.latency_ms,
                "prompt_tokens": t.message.prompt_tokens,
                "completion_tokens": t.message.completion_tokens,
                "path": t.path or None,
                "sources": [
                    {
                        "ref": s.ref,
                        "question": s.question,
                        "source": s.source,
                        "score": s.score,
                        "keyword": s.keyword,
                    }
                    for s in t.sources
                ],
            }
            for t in turns
        ],
    }
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def transcript_markdown(transcript: Transcript, turns: Sequence[Turn]) -> str:
    a = transcript.address
    lines = [
        f"# Conversation {transcript.id}",
        "",
        f"- Platform: {a.platform}",
        f"- Tenant: {a.tenant or '(none)'}",
        f"- Chat: {a.chat}" + (f", thread {a.thread}" if a.thread else ""),
        "",
    ]
    for t in turns:
        stamp = t.message.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"## {_md(t.author)} · {stamp}")
        lines.append("")
        lines += [f"> {line}" if line else ">" for line in t.message.text.splitlines() or [""]]
        lines.append("")
        if t.path:
            lines.append(f"Answered: **{PATH_NAMES.get(t.path, t.path)}**")
            for s in t.sources:
                score = f" (score {s.score:.2f})" if s.score is not None else ""
                text = f": {_md(s.question)}" if s.question else ""
                where = f" — {_md(s.source)}" if s.source else ""
                lines.append(f"- FAQ {_md(s.ref)}{score}{text}{where}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md(text: str) -> str:
    return text.replace("\n", " ").replace("*", "\\*").replace("_", "\\_")


@dataclass(slots=True)
class Gap:
    question: str  # the group's most recent phrasing
    terms: frozenset[str]
    count: int = 0
    examples: list[str] = field(default_factory=list)
    tenants: set[str] = field(default_factory=set)
    last_at: datetime | None = None
    escalated: int = 0
    rated_bad: int = 0


def group_gaps(questions: Sequence[EscalatedQuestion], *, threshold: float = 0.5) -> list[Gap]:
    """Escalated and badly rated questions grouped by keyword overlap, most
    frequent first.

    Two questions share a group when their content words (crudely stemmed:
    "shipping" is "ship") overlap by at least ``threshold`` (Jaccard) with
    the group's first question; cheap, and it needs no model, which keeps the
    page fast over thousands of questions.
    """
    groups: list[Gap] = []
    for item in sorted(questions, key=lambda q: q.created_at, reverse=True):
        terms = frozenset(_stem(w) for w in keyword_terms(item.question, limit=40))
        best: Gap | None = None
        best_score = 0.0
        for group in groups:
            if terms and group.terms:
                score = len(terms & group.terms) / len(terms | group.terms)
            else:
                score = 1.0 if item.question.strip().lower() == group.question.lower() else 0.0
            if score >= threshold and score > best_score:
                best, best_score = group, score
        if best is None:
            best = Gap(question=item.question.strip(), terms=terms, last_at=item.created_at)
            groups.append(best)
        best.count += 1
        if item.why == "rated bad":
            best.rated_bad += 1
        else:
            best.escalated += 1
        best.tenants.add(item.tenant)
        phrasing = item.question.strip()
        if phrasing not in best.examples and len(best.examples) < 5:
            best.examples.append(phrasing)
    groups.sort(key=lambda g: (-g.count, -(g.last_at.timestamp() if g.last_at else 0)))
    return groups


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # shipp -> ship
    return word
