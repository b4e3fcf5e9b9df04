"""A relay Telegram answers too late, through a real ``deskmate run``.

The fake Bot API answers the relay after the process's 10 s request timeout,
having carried it out or not. Either way the customer never gets it twice by
itself, the agents are told in the ticket's topic, and their Send again button
sends it once. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.test_handoff_telegram import (  # noqa: F401 (fixtures)
    AGENT,
    FORUM,
    JOINED,
    SIGNATURE,
    Deskmate,
    database_url,
    model,
    running,
    settle,
)
from tests.fakes.telegram_api import FakeTelegram, SentMessage

# Past the adapter's 10 s request timeout.
LATE = 11.0
CUSTOMER = 4343


def warnings(fake: FakeTelegram) -> list[SentMessage]:
    return [m for m in fake.messages[FORUM] if "could not be confirmed" in m.text]


async def test_a_late_relay_is_shown_once_and_sent_again_when_an_agent_presses(
    fake: FakeTelegram,
    running: Callable[[dict[str, str]], Deskmate],  # noqa: F811 (the imported fixture)
) -> None:
    fake.make_forum(FORUM)
    deskmate = running({"DESKMATE_HANDOFF_CHAT": f"telegram:{FORUM}"})
    await deskmate.start()
    fake.send_user_message(CUSTOMER, "/human")
    await fake.wait_for(lambda: bool(fake.texts(FORUM)), within=20, what="the ticket")
    [thread] = fake.topics[FORUM]
    fake.send_user_message(FORUM, "/claim", thread_id=thread, **AGENT)
    await fake.wait_for(lambda: JOINED in fake.texts(CUSTOMER), what="the claim notice")
    await fake.wait_for(
        lambda: fake.texts(FORUM, thread)[-1].endswith("replies here go to the customer."),
        what="the agent told",
    )

    # Carried out, answered too late: shown once, and the agents are told.
    fake.stall("sendMessage", LATE, apply=True)
    fake.send_user_message(FORUM, "Your refund is on its way", thread_id=thread, **AGENT)
    arrived = f"{SIGNATURE}: Your refund is on its way"
    await fake.wait_for(lambda: len(warnings(fake)) == 1, within=30, what="the first warning")
    await settle()
    assert fake.texts(CUSTOMER).count(arrived) == 1
    assert warnings(fake)[0].thread_id == thread

    # Never carried out: the customer has nothing until an agent presses Send again.
    fake.stall("sendMessage", LATE, apply=False)
    fake.send_user_message(FORUM, "It left the depot today", thread_id=thread, **AGENT)
    lost = f"{SIGNATURE}: It left the depot today"
    await fake.wait_for(lambda: len(warnings(fake)) == 2, within=30, what="the second warning")
    await settle()
    assert lost not in fake.texts(CUSTOMER)
    warning = warnings(fake)[1]
    assert "It left the depot today" in warning.text
    fake.push(fake.press(warning, "Send again", **AGENT))
    await fake.wait_for(lambda: lost in fake.texts(CUSTOMER), within=20, what="the relay")
    fake.push(fake.press(warning, "Send again", **AGENT))  # pressed twice: sent once
    await fake.wait_for(
        lambda: fake.texts(FORUM, thread)[-1].startswith("Message "), what="the second press"
    )
    await settle()
    assert fake.texts(CUSTOMER).count(lost) == 1
    assert fake.texts(CUSTOMER).count(arrived) == 1
    assert fake.calls_to("editMessageText", CUSTOMER) == []
    assert await deskmate.stop() == 0
