"""Answers from document passages: the extractive answer and citations.

An extractive answer quotes the run of (at most ``MAX_SENTENCES``) sentences
of the best passage that shares the most content words with the question:
the passage's own words, so nothing is invented, with the citation below.
Words are compared by their first five letters, which matches most English
inflections ("refunds" / "refunded") without a stemmer.
"""

from __future__ import annotations

import dataclasses

from bot.knowledge.documents.chunking import SEPARATOR, sentences
from bot.knowledge.passages import Passage
from bot.messages import say
from storage.knowledge_repo import keyword_terms

MAX_SENTENCES = 3
MAX_CHARS = 600


def _stems(text: str) -> set[str]:
    return {w[:5] for w in keyword_terms(text, limit=10_000)}


def extract(passage: Passage, question: str) -> Passage:
    """``passage`` with its text cut to the sentences that answer ``question``."""
    units = [s for paragraph in passage.text.split("\n\n") for s in sentences(paragraph)]
    if len(units) <= 1:
        return passage
    wanted = _stems(question)
    stems = [_stems(s) for s in units]
    best, best_score = 0, -1.0
    for start in range(len(units)):
        covered: set[str] = set()
        size = 0
        for offset in range(MAX_SENTENCES):
            if start + offset >= len(units):
                break
            size += len(units[start + offset])
            if offset and size > MAX_CHARS:
                break
            covered |= stems[start + offset] & wanted
        # The first sentence of the run must itself match: a run is quoted from its start.
        score = len(covered) + (0.5 if stems[start] & wanted else -1.0)
        if score > best_score:
            best, best_score = start, score
    picked: list[str] = []
    size = 0
    for unit in units[best : best + MAX_SENTENCES]:
        if picked and size + len(unit) > MAX_CHARS:
            break
        picked.append(unit)
        size += len(unit)
    return dataclasses.replace(passage, text=" ".join(picked))


def where(passage: Passage) -> str:
    """A document passage's place: title, section, page and link."""
    parts = [passage.title]
    section = passage.section
    if section.startswith(f"{passage.title}{SEPARATOR}"):
        section = section[len(passage.title) + len(SEPARATOR) :]
    if section and section != passage.title:
        parts.append(section)
    if passage.page is not None:
        parts.append(say("knowledge.doc.page", page=passage.page))
    text = SEPARATOR.join(parts)
    return f"{text} — {passage.url}" if passage.url else text


def source_line(number: int, passage: Passage) -> str:
    return say("knowledge.doc.source_line", number=number, where=where(passage))


def quoted(passage: Passage) -> str:
    """A document passage quoted, ``[1]`` after it and the citation below."""
    sources = "\n".join((say("knowledge.sources"), source_line(1, passage)))
    return say("knowledge.doc.quote", text=passage.text, sources=sources)
