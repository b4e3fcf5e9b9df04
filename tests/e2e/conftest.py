"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.telegram_api import FakeTelegram


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API server on a free local port."""
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture(scope="session", autouse=True)
def echoes_company_questions_too() -> Iterator[None]:
    """The processes these tests start answer with an echoing model whatever
    is asked ("where is my order?"): with no FAQ loaded, the check that
    escalates company questions instead would stand in its way. It has its
    own tests (tests/bot/knowledge/test_company_facts.py)."""
    before = os.environ.get("DESKMATE_COMPANY_FACTS")
    os.environ["DESKMATE_COMPANY_FACTS"] = "answer"
    yield
    if before is None:
        os.environ.pop("DESKMATE_COMPANY_FACTS", None)
    else:
        os.environ["DESKMATE_COMPANY_FACTS"] = before
