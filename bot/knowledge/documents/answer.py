"""Answers from document passages: the extractive answer and citations.

An extractive answer quotes the run of (at most ``MAX_SENTENCES``) sentences
of the best passage that shares the most content words with the question:
the passage's own words, so nothing is invented, with the citation below.
Words are compared by their first five letters, which matches most English
inflections ("refunds" / "refunded") without a stemmer.

Below the citation, a quote names up to ``SEE_ALSO`` other sections the
ranking put next ("See also"): when the quoted passage is not the one the
customer needed, the right section is often the second or third
(bench/README.md, "Documents").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from bot.knowledge.documents.chunking import SEPARATOR, sentences
from bot.knowledge.passages import DOCUMENT, Passage
from bot.messages import say
from storage.keywords import keyword_terms

MAX_SENTENCES = 3
MAX_CHARS = 600
# Sections named below a quote besides the quoted one, when their passage's
# score is within SEE_ALSO_GAP of the quoted one's: on the tuning half of the
# manual benchmark (bench/data/manual) every second or third section that was
# the right one was within 0.09, HTML and PDF; further behind, it is noise.
SEE_ALSO = 2
SEE_ALSO_GAP = 0.1


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


def where(passage: Passage, language: str = "en") -> str:
    """A document passage's place: title, section, page and link."""
    parts = [passage.title]
    section = passage.section
    if section.startswith(f"{passage.title}{SEPARATOR}"):
        section = section[len(passage.title) + len(SEPARATOR) :]
    if section and section != passage.title:
        parts.append(section)
    if passage.page is not None:
        parts.append(say("knowledge.doc.page", language, page=passage.page))
    text = SEPARATOR.join(parts)
    return f"{text} — {passage.url}" if passage.url else text


def source_line(number: int, passage: Passage, language: str = "en") -> str:
    return say("knowledge.doc.source_line", language, number=number, where=where(passage, language))


def see_also(
    cited: Passage, ranked: Iterable[Passage], limit: int = SEE_ALSO
) -> tuple[Passage, ...]:
    """The best of ``ranked`` (best first) from places (sections, and pages)
    other than ``cited``'s and each other's: public document passages scored
    within ``SEE_ALSO_GAP`` of it, at most ``limit``."""
    # A PDF's pages are places of their own: its sections' passages link to them.
    seen = {(cited.origin, cited.section, cited.page)}
    out: list[Passage] = []
    for passage in ranked:
        key = (passage.origin, passage.section, passage.page)
        if len(out) >= limit:
            break
        if passage.kind != DOCUMENT or passage.internal or key in seen:
            continue
        if passage.dense < cited.dense - SEE_ALSO_GAP:
            continue
        seen.add(key)
        out.append(passage)
    return tuple(out)


def quoted(passage: Passage, language: str = "en", also: Sequence[Passage] = ()) -> str:
    """A document passage quoted, ``[1]`` after it and the citation below;
    ``also``: other sections, listed apart under "See also"."""
    lines = [say("knowledge.sources", language), source_line(1, passage, language)]
    if also:
        lines += ["", say("knowledge.doc.see_also", language)]
        lines += [
            say("knowledge.doc.see_also_line", language, where=where(p, language)) for p in also
        ]
    sources = "\n".join(lines)
    return say("knowledge.doc.quote", language, text=passage.text, sources=sources)
