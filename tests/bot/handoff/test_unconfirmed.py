"""A relay to a Telegram customer whose send timed out after it went out.

The real Telegram adapter sends through the fake Bot API, which answers the
relay only after the client's read timeout, having carried it out or not (a
real injected fault: the client cannot tell which). The relay must reach the
customer at most once by itself, the agents must be told and may send it
again; nothing may edit a message in the customer's chat to find out.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from adapters.telegram import TelegramAdapter
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.manager import ConversationManager
from bot.types import ConversationRef, Reply, TicketThread
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.fakes.telegram_api import FakeTelegram
from tests.support import Rendered, make_inbound

CUSTOMER = 42
SIGNATURE = "Acme support"
RELAYED = f"{SIGNATURE}: Your refund is on its way"
JOINED = f"A person from the support team ({SIGNATURE}) has joined the conversation."
# The adapter's read timeout, and how late the fake answers the stalled send.
TIMEOUT = 0.5
STALL = 1.0


@dataclass
class Posted:
    ref: ConversationRef
    text: str
    buttons: tuple[tuple[str, str], ...]


class SupportChannel:
    """The support space's platform, in memory: what was posted, with its buttons."""

    name = "slack"

    def __init__(self) -> None:
        self.posts: list[Posted] = []
        self._ids = itertools.count(100)

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        self.posts.append(Posted(ref, text, tuple(buttons)))
        return str(next(self._ids))

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        message = str(next(self._ids))
        return TicketThread(thread=message, message=message)


@dataclass
class Desk:
    manager: ConversationManager
    worker: OutboxWorker
    fake: FakeTelegram
    space: SupportChannel
    repository: HandoffRepository

    async def say(self, text: str, **where: str) -> Reply:
        return await self.manager.handle(make_inbound(text, **where), Rendered())  # type: ignore[arg-type]

    async def customer(self, text: str) -> Reply:
        return await self.say(
            text, platform="telegram", tenant="123456", chat=str(CUSTOMER), user=str(CUSTOMER)
        )

    async def agent(self, text: str, *, space: str = "C1", thread: str = "100") -> Reply:
        tenant = {"C1": "T1", "C2": "T2"}[space]
        return await self.say(
            text, platform="slack", tenant=tenant, chat=space, thread=thread, user="U9"
        )

    def warnings(self) -> list[Posted]:
        return [p for p in self.space.posts if "could not be confirmed" in p.text]


async def telegram(fake: FakeTelegram) -> TelegramAdapter:
    adapter = TelegramAdapter(
        token=fake.token,
        api_url=fake.api_url,
        per_chat_interval=0.0,
        group_interval=0.0,
        request_timeout=TIMEOUT,
        retry_delay=0.05,
    )
    await adapter.bot.initialize()
    return adapter


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def desk(
    repository: Repository, backend: FakeBackend, fake: FakeTelegram
) -> AsyncIterator[Desk]:
    """A Telegram customer whose ticket an agent claimed in a Slack support space."""
    adapter = await telegram(fake)
    tickets = HandoffRepository(repository.db)
    help_desk = HelpDesk(
        settings=HandoffSettings(
            spaces=parse_spaces("slack:T1/C1,slack:T2/C2"), signature=SIGNATURE
        ),
        tickets=tickets,
    )
    manager = make_manager(repository, backend, desk=help_desk)
    space = SupportChannel()
    worker = OutboxWorker(desk=help_desk, channels={"telegram": adapter, "slack": space})
    setup = Desk(manager, worker, fake, space, tickets)
    backend.enqueue("The customer wants a refund.")  # the case summary
    await setup.customer("/human")
    await worker.flush()
    await setup.agent("/claim")
    await worker.flush()
    assert fake.texts(CUSTOMER) == [JOINED]
    yield setup
    await adapter.bot.shutdown()


async def flush_until_settled(worker: OutboxWorker) -> None:
    """Flush, then again once every first retry would be due."""
    await worker.flush()
    await asyncio.sleep(STALL + 0.3)
    await worker.flush()
    await worker.flush()


@pytest.mark.parametrize("applied", [True, False], ids=["arrived", "lost"])
async def test_timed_out_relay_reaches_the_customer_once_and_the_agents_decide(
    desk: Desk, applied: bool
) -> None:
    fake = desk.fake
    fake.stall("sendMessage", STALL, apply=applied)
    assert (await desk.agent("Your refund is on its way")).text == ""
    await flush_until_settled(desk.worker)

    # Never sent twice by itself, and nothing edited to find out.
    assert fake.texts(CUSTOMER).count(RELAYED) == (1 if applied else 0)
    assert len(fake.calls_to("sendMessage", CUSTOMER)) == 2  # the notice, the relay once
    assert fake.calls_to("editMessageText", CUSTOMER) == []
    assert fake.calls_to("editMessageReplyMarkup", CUSTOMER) == []
    # The agents are told in the ticket, with the relay and a button to send it again.
    [warning] = desk.warnings()
    assert warning.ref.chat == "C1" and warning.ref.thread == "100"
    assert "Your refund is on its way" in warning.text
    [(label, command)] = warning.buttons
    row = re.fullmatch(r"/resend (\d+)", command)
    assert label == "Send again" and row is not None and f"/resend {row[1]}" in warning.text

    # Another tenant's support space cannot send it.
    refused = await desk.agent(command, space="C2", thread="")
    assert refused.text == f"No message {row[1]} of a ticket in this support space."
    await flush_until_settled(desk.worker)
    assert fake.texts(CUSTOMER).count(RELAYED) == (1 if applied else 0)

    # The ticket's agents send it again: once, however often they ask.
    assert (await desk.agent(command)).text == f"Sending message {row[1]} to the customer again."
    assert (await desk.agent(command, thread="")).text.startswith(f"Message {row[1]} is not")
    await flush_until_settled(desk.worker)
    assert fake.texts(CUSTOMER).count(RELAYED) == (2 if applied else 1)
    assert len(desk.warnings()) == 1
    [sent] = [r for r in await desk.repository.outbox_rows() if r["id"] == int(row[1])]
    assert sent["status"] == "sent"


async def test_a_retry_never_edits_a_message_another_worker_sent(
    desk: Desk, fake: FakeTelegram
) -> None:
    """While the relay's answer is late, another worker's message lands right
    after it in the chat: nothing touches it, and the relay is not sent again."""
    other = await telegram(fake)
    try:
        fake.stall("sendMessage", STALL, apply=True)
        await desk.agent("Your refund is on its way")
        sending = asyncio.create_task(desk.worker.flush())
        await fake.wait_for(lambda: RELAYED in fake.texts(CUSTOMER), what="the relay carried out")
        ref = ConversationRef("telegram", "123456", str(CUSTOMER))
        await other.post(ref, "Another worker's notice")
        await sending
        await flush_until_settled(desk.worker)
    finally:
        await other.bot.shutdown()

    assert fake.texts(CUSTOMER) == [JOINED, RELAYED, "Another worker's notice"]
    assert all(not m.edits for m in fake.messages[CUSTOMER])
    assert fake.calls_to("editMessageText", CUSTOMER) == []
    assert fake.calls_to("editMessageReplyMarkup", CUSTOMER) == []
    assert len(desk.warnings()) == 1


async def test_the_warning_goes_with_the_words_it_quotes(desk: Desk) -> None:
    """An agent's words erased at their request leave the warning quoting them too."""
    desk.fake.stall("sendMessage", STALL, apply=True)
    await desk.agent("Your refund is on its way")
    await desk.worker.flush()
    await desk.worker.flush()
    assert len(desk.warnings()) == 1
    await desk.repository.forget("slack:U9")
    rows = await desk.repository.outbox_rows()
    assert not [r for r in rows if "Your refund" in r["text"]]
    [row] = [r for r in rows if r["status"] == "unconfirmed"]
    refused = await desk.agent(f"/resend {row['id']}")
    assert refused.text.endswith("it cannot be sent again.")
