"""What retrieval returns, whatever the knowledge comes from: ``Passage``s.

A knowledge source (the FAQ with its approved learned answers; documents
later) implements ``KnowledgeSource``: it finds passages for a question and
looks one up by id. The knowledge base asks every registered source and
merges their passages into one ranking (``merge``), so the answering policy,
the plans, citations, ``deskmate ask --json`` and the console see passages
only, never a source's own records.

Scores. ``score`` orders passages (a source's ranking score on the cosine
scale); ``dense`` is the calibrated confidence the policy compares with its
thresholds. Each source also judges how likely a question is to be about it
at all (``Found.scope``, compared with ``Policy.grounded_score``): the FAQ by
its base model against everyday background questions; a source without a
scope model of its own uses its best passage's ``dense`` (``Found.of``). The
question's scope is the highest scope among the sources that found passages.

Adding a source: one class implementing ``KnowledgeSource`` (its own module of
this package), and one ``kb.register(...)`` line in
``bot.app.create_knowledge_base``. ``tests/bot/knowledge/test_sources.py``
does it with a dict of passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.messages import keys, say

FAQ = "faq"
DOCUMENT = "document"
# Where a passage sits in its document, in the order ``deskmate ask --json`` lists them.
LOCATION_FIELDS = ("section", "anchor", "page", "url")


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved piece of knowledge, ready to be quoted, cited or offered.

    ``id`` names the passage within its source (an FAQ entry's id as people
    see it); ``title`` is what a citation or a "did you mean" option shows (an
    FAQ entry's question); ``text`` is what a verbatim answer quotes.
    ``origin`` is where a customer can check it (an FAQ entry's source: a link
    or a document's name; "" when none). ``question`` is set when the passage
    answers a stated question (FAQ entries): the model then reads it as a
    question and its answer. ``language`` is the language of the text ("" when
    not known). ``entry_id`` is the stored FAQ row (None for other sources),
    which answer logs and the console link to. ``internal`` passages serve
    agents (``/faq search``, suggestions in tickets), never customers.
    """

    kind: str
    id: str
    title: str
    text: str
    score: float = 0.0
    dense: float = 0.0
    keyword: float = 0.0
    language: str = ""
    tenant: str = ""  # "" for every tenant's
    origin: str = ""
    question: str = ""
    section: str = ""
    anchor: str = ""
    page: int | None = None
    url: str = ""
    entry_id: int | None = None
    # For agents only (an ``--internal`` document): never quoted to customers.
    internal: bool = False

    @property
    def ref(self) -> str:
        """What ``/answer`` takes to quote this passage: an FAQ entry's own id
        (people type it), ``kind:id`` for other sources."""
        return self.id if self.kind == FAQ else f"{self.kind}:{self.id}"

    @property
    def label(self) -> str:
        """How citations name the passage ("FAQ 12")."""
        return say("knowledge.label", name=kind_name(self.kind), id=self.id)

    def location(self) -> dict[str, Any]:
        """The location fields that are set, by name."""
        values = {name: getattr(self, name) for name in LOCATION_FIELDS}
        return {name: value for name, value in values.items() if value not in (None, "")}

    def logged(self) -> dict[str, Any]:
        """How an answer log records the passage. FAQ entries keep the record
        reports and the gap report read (row ``id``, ``ref``, ``question``);
        other passages name their kind, id and location, and carry no row id."""
        scores = {"score": round(self.dense, 4), "keyword": round(self.keyword, 4)}
        if self.entry_id is not None:
            return {"id": self.entry_id, "ref": self.ref, "question": self.title, **scores}
        return {
            "kind": self.kind,
            "ref": self.ref,
            "passage": self.id,
            "title": self.title,
            "document": self.origin,
            **scores,
            **self.location(),
        }


def kind_name(kind: str) -> str:
    """What citations call a kind of knowledge ("FAQ"), by its text key
    ``knowledge.kind.<kind>``; the kind itself where the catalog has none."""
    key = f"knowledge.kind.{kind}"
    return say(key) if key in keys() else kind


@dataclass(frozen=True, slots=True)
class Found:
    """A source's passages for a question (best first) and the question's scope."""

    passages: tuple[Passage, ...]
    scope: float

    @classmethod
    def of(cls, passages: Sequence[Passage]) -> Found:
        """Passages of a source without a scope model: its best ``dense`` is the scope."""
        ordered = tuple(sorted(passages, key=lambda p: p.score, reverse=True))
        return cls(ordered, max((p.dense for p in ordered), default=0.0))


class KnowledgeSource(Protocol):
    """One kind of knowledge the bot answers from.

    A source registered with ``KnowledgeBase.register`` takes part in every
    answer: its passages are ranked with the others', quoted verbatim,
    offered as "did you mean" options (``/answer <passage.ref>``) and cited.
    """

    @property
    def kind(self) -> str:
        """The ``Passage.kind`` of every passage of this source."""
        ...

    async def lookup(self, question: str, *, tenant: str, limit: int) -> Found:
        """At most ``limit`` passages ``tenant`` may see, best first, with the scope.

        A larger ``limit`` only adds passages after the same first ones, and
        leaves the scope as it is.
        """
        ...

    async def passage(self, id: str, *, tenant: str) -> Passage | None:
        """The passage ``id`` as ``tenant`` sees it (None when it sees none)."""
        ...

    async def has_passages(self, tenant: str) -> bool:
        """Whether ``tenant`` sees any passage of this source."""
        ...


def merge(found: Sequence[Found], limit: int) -> Found:
    """One ranking over several sources' results, best ``score`` first.

    Each source's own order is kept (the FAQ's re-ranking may leave its scores
    out of order), so a single source's ranking comes back unchanged; the
    scope is the highest among the sources that found anything.
    """
    lists = [list(f.passages) for f in found if f.passages]
    if not lists:
        return Found((), 0.0)
    scope = max(f.scope for f in found if f.passages)
    if len(lists) == 1:
        return Found(tuple(lists[0][:limit]), scope)
    merged: list[Passage] = []
    heads = [0] * len(lists)
    while len(merged) < limit:
        live = [i for i, items in enumerate(lists) if heads[i] < len(items)]
        if not live:
            break
        # Ties go to the earlier registered source (the FAQ first).
        best = max(live, key=lambda i: (lists[i][heads[i]].score, -i))
        merged.append(lists[best][heads[best]])
        heads[best] += 1
    return Found(tuple(merged), scope)
