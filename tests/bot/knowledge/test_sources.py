"""A second knowledge source is one class and one registration line: its
passages are answered verbatim, grounded, offered as "did you mean" options
and escalated like FAQ entries, through the real conversation manager.

Model-free: the source scores by shared words, the FAQ uses ``HashingEmbedder``
and the model is the scripted ``FakeBackend``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.knowledge.cli import answer_json
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Found, Passage, merge
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.messages import say
from bot.types import Reply
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import make_inbound

PASSAGES = {
    "returns": Passage(
        kind="wiki",
        id="returns",
        title="Returning a parcel",
        text="Send it back within 30 days with the label inside.",
        origin="Help centre",
        section="Orders > Returns",
        anchor="returns",
        url="https://example.com/help#returns",
    ),
    "shipping-eu": Passage(
        kind="wiki",
        id="shipping-eu",
        title="Shipping to Europe",
        text="Parcels to Europe arrive within 3 working days.",
        origin="Help centre",
    ),
    "shipping-us": Passage(
        kind="wiki",
        id="shipping-us",
        title="Shipping to America",
        text="Parcels to America arrive within 8 working days.",
        origin="Help centre",
    ),
}
FAQ_CSV = "id,question,answer\npay-1,Which payment methods do you accept?,Card and invoice.\n"


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class DictSource:
    """A knowledge source over a dict of passages, scored by shared title words."""

    kind = "wiki"

    def __init__(self, passages: dict[str, Passage]) -> None:
        self.passages = passages

    async def lookup(self, question: str, *, tenant: str, limit: int) -> Found:
        asked = _words(question)
        scored = []
        for passage in self.passages.values():
            title = _words(passage.title)
            share = len(asked & title) / len(asked | title) if asked else 0.0
            scored.append(Passage(**{**_fields(passage), "score": share, "dense": share}))
        ranked = sorted((p for p in scored if p.dense > 0), key=lambda p: p.score, reverse=True)
        return Found.of(ranked[:limit])

    async def passage(self, id: str, *, tenant: str) -> Passage | None:
        return self.passages.get(id)

    async def has_passages(self, tenant: str) -> bool:
        return bool(self.passages)


def _fields(passage: Passage) -> dict[str, object]:
    return {name: getattr(passage, name) for name in Passage.__dataclass_fields__}


class Seen:
    def __init__(self) -> None:
        self.replies: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    async def __call__(self, reply: Reply) -> None:
        text = "".join([chunk async for chunk in reply])
        self.replies.append((text, reply.buttons))


async def _kb(repository: Repository, tmp_path: Path, *, clarify: bool = True) -> KnowledgeBase:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(
            verbatim_score=0.8, grounded_score=0.3, fallback_verbatim_score=0.5, clarify=clarify
        ),
        refresh_interval=0.0,
    )
    kb.register(DictSource(PASSAGES))
    path = tmp_path / "faq.csv"
    path.write_text(FAQ_CSV, encoding="utf-8")
    await kb.import_file(path)
    return kb


async def _ask(
    manager: ConversationManager, text: str, *, chat: str = "c1"
) -> tuple[str, tuple[tuple[str, str], ...]]:
    seen = Seen()
    await manager.handle(make_inbound(text, platform="web", chat=chat), seen)
    assert len(seen.replies) == 1
    return seen.replies[0]


async def _logged(kb: KnowledgeBase) -> dict[str, object]:
    return answer_json((await kb.repository.answers(limit=1))[0])


@pytest.fixture
async def kb(repository: Repository, tmp_path: Path) -> KnowledgeBase:
    return await _kb(repository, tmp_path)


async def test_a_confident_passage_is_quoted_with_its_source(
    repository: Repository, kb: KnowledgeBase
) -> None:
    backend = FakeBackend()
    manager = make_manager(repository, backend, knowledge=kb)
    text, buttons = await _ask(manager, "Returning a parcel?")
    assert text == (
        "Send it back within 30 days with the label inside.\n\nSource: Help centre (wiki returns)"
    )
    assert buttons == () and backend.requests == []
    record = await _logged(kb)
    assert record["path"] == "verbatim"
    assert record["sources"] == [
        {
            "id": "returns",
            "kind": "wiki",
            "document": "Help centre",
            "title": "Returning a parcel",
            "score": 1.0,
            "section": "Orders > Returns",
            "anchor": "returns",
            "page": None,
            "url": "https://example.com/help#returns",
        }
    ]
    # The FAQ answers beside it, as before.
    text, _ = await _ask(manager, "Which payment methods do you accept?", chat="c2")
    assert text.startswith("Card and invoice.\n\nSource: FAQ (FAQ pay-1)")
    assert (await _logged(kb))["sources"][0]["kind"] == "faq"


async def test_close_passages_are_offered_and_a_choice_is_quoted(
    repository: Repository, kb: KnowledgeBase
) -> None:
    manager = make_manager(repository, FakeBackend(), knowledge=kb)
    text, buttons = await _ask(manager, "shipping")
    assert text.startswith("I'm not sure which of these you mean:\n1. Shipping to Europe\n")
    assert buttons == (
        ("Shipping to Europe", "/answer wiki:shipping-eu"),
        ("Shipping to America", "/answer wiki:shipping-us"),
        ("None of these — ask a person", "/human"),
    )
    record = await _logged(kb)
    assert record["path"] == "clarify"
    assert record["options"] == [
        {"id": "shipping-eu", "title": "Shipping to Europe"},
        {"id": "shipping-us", "title": "Shipping to America"},
    ]
    # A reply "2" picks the second option; the button's command works too.
    chosen, _ = await _ask(manager, "2")
    assert chosen.startswith("Parcels to America arrive within 8 working days.")
    pressed, _ = await _ask(manager, "/answer wiki:shipping-eu", chat="c2")
    assert pressed.startswith("Parcels to Europe arrive within 3 working days.")
    assert (await kb.repository.answers(limit=1))[0]["path"] == "verbatim"


async def test_the_model_answers_from_passages_and_cites_them(
    repository: Repository, tmp_path: Path
) -> None:
    kb = await _kb(repository, tmp_path, clarify=False)
    backend = FakeBackend()
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].")
    manager = make_manager(repository, backend, knowledge=kb)
    text, _ = await _ask(manager, "shipping")
    assert text == (
        "Parcels to Europe arrive within 3 working days [1].\n\nSources:\n"
        "[1] Shipping to Europe (wiki shipping-eu, Help centre)\n"
        "[2] Shipping to America (wiki shipping-us, Help centre)"
    )
    prompt = backend.requests[0].messages[-1].content
    assert "[1] Shipping to Europe\nParcels to Europe arrive" in prompt
    record = await _logged(kb)
    assert record["path"] == "grounded"
    assert [s["id"] for s in record["sources"]] == ["shipping-eu", "shipping-us"]


async def test_a_question_no_source_covers_is_escalated(
    repository: Repository, kb: KnowledgeBase
) -> None:
    backend = FakeBackend()
    manager = make_manager(repository, backend, knowledge=kb)
    text, _ = await _ask(manager, "Will it rain tomorrow?")
    assert text == say("knowledge.escalation") and backend.requests == []
    assert (await _logged(kb))["path"] == "escalated"


def test_one_ranking_keeps_each_sources_order_and_the_highest_scope() -> None:
    def passage(kind: str, id: str, score: float) -> Passage:
        return Passage(kind=kind, id=id, title=id, text=id, score=score, dense=score)

    # The FAQ's re-ranking may leave its own scores out of order: its order stands.
    faq = Found((passage("faq", "a", 0.7), passage("faq", "b", 0.75)), scope=0.2)
    wiki = Found((passage("wiki", "x", 0.72), passage("wiki", "y", 0.7)), scope=0.4)
    empty = Found((), scope=0.9)
    merged = merge([faq, wiki, empty], limit=3)
    assert [p.id for p in merged.passages] == ["x", "a", "b"]
    assert merged.scope == 0.4  # a source that found nothing has no say
    assert merge([faq], limit=5) == faq
    assert merge([empty], limit=5) == Found((), 0.0)
