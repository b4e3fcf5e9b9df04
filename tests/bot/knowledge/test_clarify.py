""" "Did you mean ...?": options as buttons and a numbered list, a choice answered
verbatim, and the choice learned as a phrasing of the asking tenant only.

Model-free (``HashingEmbedder``); the real model's figures are in bench/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.knowledge.cli import answer_json
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.plans import Clarify, Verbatim
from bot.types import Reply
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import make_inbound

CSV = (
    "id,question,answer,source\n"
    'ret-1,Can I return an item?,"Yes, within 30 days of delivery.",Returns policy\n'
    "ret-2,Can I return an item bought on sale?,Sale items cannot be returned.,Returns policy\n"
    "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.,Shipping policy\n"
    "pay-1,Which payment methods do you accept?,Card and invoice.,Payments page\n"
)
QUESTION = "return something I bought last week"


class Seen:
    """Records each reply's text and buttons, as an adapter's render gets them."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    async def __call__(self, reply: Reply) -> None:
        text = "".join([chunk async for chunk in reply])
        self.replies.append((text, reply.buttons))


@pytest.fixture
async def setup(
    repository: Repository, tmp_path: Path
) -> tuple[ConversationManager, KnowledgeBase]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.1, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    path = tmp_path / "faq.csv"
    path.write_text(CSV, encoding="utf-8")
    await kb.import_file(path)
    return make_manager(repository, FakeBackend(), knowledge=kb), kb


async def say(
    manager: ConversationManager, text: str, *, chat: str = "c1", tenant: str = "t1"
) -> tuple[str, tuple[tuple[str, str], ...]]:
    seen = Seen()
    await manager.handle(make_inbound(text, platform="web", chat=chat, tenant=tenant), seen)
    assert len(seen.replies) == 1
    return seen.replies[0]


async def test_a_choice_is_answered_verbatim_and_learned_for_its_tenant(
    setup: tuple[ConversationManager, KnowledgeBase],
) -> None:
    manager, kb = setup
    text, buttons = await say(manager, QUESTION)
    assert ". Can I return an item?\n" in text and "/human" in text
    assert ("Can I return an item?", "/answer ret-1") in buttons
    assert buttons[-1] == ("None of these — ask a person", "/human")
    assert len(buttons) <= 4
    logged = (await kb.repository.answers(limit=1))[0]
    record = answer_json(logged)
    assert record["path"] == "clarify"
    assert {"id": "ret-1", "question": "Can I return an item?"} in record["options"]
    assert all({"id", "question", "score"} <= set(s) for s in record["sources"])
    json.dumps(record)

    # The button sends its command as a message; anyone may send it.
    chosen, _ = await say(manager, "/answer ret-1")
    assert chosen.startswith("Yes, within 30 days of delivery.")
    assert (await kb.repository.answers(limit=1))[0]["path"] == "verbatim"
    assert [p.text for p in await kb.repository.phrasings()] == [QUESTION]

    # Asked again, in another conversation of the same tenant: answered directly.
    again, buttons = await say(manager, QUESTION, chat="c2")
    assert again.startswith("Yes, within 30 days of delivery.") and buttons == ()
    # Another tenant did not teach it: it still gets the options.
    other, _ = await say(manager, QUESTION, chat="c3", tenant="t2")
    assert ". Can I return an item?\n" in other


async def test_a_number_right_after_the_options_chooses(
    setup: tuple[ConversationManager, KnowledgeBase],
) -> None:
    manager, kb = setup
    text, _ = await say(manager, QUESTION)
    first = text.splitlines()[1].removeprefix("1. ")
    number, _ = await say(manager, "1")
    entry = next(e for e in await kb.repository.entries() if e.question == first)
    assert number.startswith(entry.answer)
    # Not after the options any more: "1" is a plain message again.
    plan = await kb.plan("1", tenant="t1", conversation_key="web:t1:c1:")
    assert not isinstance(plan, Verbatim) or plan.reason != "chosen by the customer"


async def test_clarify_plan_and_unknown_choice(
    setup: tuple[ConversationManager, KnowledgeBase],
) -> None:
    manager, kb = setup
    plan = await kb.plan(QUESTION, tenant="t1", conversation_key="k")
    assert isinstance(plan, Clarify) and 1 <= len(plan.options) <= 3
    assert plan.path == "clarify"
    text, _ = await say(manager, "/answer nope")
    assert "no FAQ entry nope" in text
    # Other /faq subcommands stay with admins.
    refused, _ = await say(manager, "/faq list")
    assert "only for" in refused


async def test_web_chat_offers_options_and_a_number_chooses(
    setup: tuple[ConversationManager, KnowledgeBase],
) -> None:
    """End to end over the web chat's HTTP API: the numbered list works without buttons."""
    import aiohttp

    from adapters.web import HttpServer, WebChat
    from storage.web_repo import WebRepository

    manager, _ = setup
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http, tenant="t1", store=WebRepository(manager.repository.db))
    await http.start()
    await chat.start(manager)
    url = f"http://127.0.0.1:{http.port}/api/chat"
    try:
        # One visitor (its identity kept in the cookie jar) in two conversations.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:

            async def post(session_id: str, text: str, n: int) -> str:
                body = {"session": session_id, "text": text, "message_id": f"message-{n:04d}"}
                async with session.post(url, json=body) as response:
                    assert response.status == 200
                    return await response.text()

            options = await post("session-aaaa0001", QUESTION, 1)
            assert options.startswith("I'm not sure which of these you mean:")
            number = next(
                line.split(".", 1)[0]
                for line in options.splitlines()
                if line.endswith(". Can I return an item?")
            )
            chosen = await post("session-aaaa0001", number, 2)
            assert chosen.startswith("Yes, within 30 days of delivery.")
            direct = await post("session-bbbb0002", QUESTION, 3)
            assert direct.startswith("Yes, within 30 days of delivery.")
    finally:
        await chat.stop()
        await http.stop()
