"""Sections into passages of a few hundred tokens, never across a heading.

A passage keeps its section's heading path ("Billing › Refunds"), anchor and
page. Paragraphs are packed whole while they fit; a paragraph longer than a
passage is cut at sentence ends. Words stand in for tokens (a sub-word
tokenizer makes about 1.3 tokens of an English word), so ``MAX_WORDS`` keeps a
passage within the embedding model's 256-token window with its heading.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bot.knowledge.documents.parsing import Section

MAX_WORDS = 160
# A passage shorter than this is joined to the next one of the same section.
MIN_WORDS = 40
SEPARATOR = " › "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True, slots=True)
class Chunk:
    section: str
    anchor: str
    page: int | None
    text: str

    def embedded_texts(self, title: str) -> tuple[str, str]:
        """What is embedded: the heading path, and heading path + text."""
        heading = self.section or title
        return heading, f"{heading}\n{self.text}"

    def hash(self, title: str) -> str:
        """Changes exactly when what is embedded changes."""
        joined = "\x1f".join(self.embedded_texts(title))
        return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def sentences(text: str) -> list[str]:
    """``text`` cut at sentence ends (a heuristic good enough for packing and quoting)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _pieces(text: str) -> Iterator[str]:
    """Paragraphs, with those longer than a passage cut at sentence ends."""
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        if len(words) <= MAX_WORDS:
            if words:
                yield paragraph
            continue
        current: list[str] = []
        size = 0
        for sentence in sentences(paragraph):
            count = len(sentence.split())
            if current and size + count > MAX_WORDS:
                yield " ".join(current)
                current, size = [], 0
            if count > MAX_WORDS:
                # A "sentence" with no end in sight (a list, a table): cut by words.
                split = sentence.split()
                for start in range(0, len(split), MAX_WORDS):
                    yield " ".join(split[start : start + MAX_WORDS])
                continue
            current.append(sentence)
            size += count
        if current:
            yield " ".join(current)


def chunk_sections(sections: Sequence[Section]) -> list[Chunk]:
    """The passages of a document's sections, in reading order."""
    out: list[Chunk] = []
    for section in sections:
        path = SEPARATOR.join(section.path)
        current: list[str] = []
        size = 0
        for piece in _pieces(section.text):
            count = len(piece.split())
            if current and size + count > MAX_WORDS and size >= MIN_WORDS:
                out.append(Chunk(path, section.anchor, section.page, "\n\n".join(current)))
                current, size = [], 0
            current.append(piece)
            size += count
        if current:
            out.append(Chunk(path, section.anchor, section.page, "\n\n".join(current)))
    return out
