"""Log lines carry no personal data or secrets, as text and as JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from telegram import Bot

from bot.logs import SDK_LOGGERS, redact, setup
from tests.fakes.telegram_api import FakeTelegram

SECRETS = {
    "anna.svensson@example.se": "[email]",
    "+46 70 123 45 67": "[phone]",
    "070-123 45 67": "[phone]",
    "4111 1111 1111 1111": "[card]",
    "5500-0000-0000-0004": "[card]",
    "xoxb-1234-5678-abcdefghijkl": "[token]",
    "xapp-1-A0123-456-abcdef": "[token]",
    "123456789:AAEhBP0av18ZzG9zzkLzHE6yq0AxCMaIPs0": "[token]",
    # Inside the Bot API's address, right after "bot".
    "https://api.telegram.org/bot123456789:AAEhBP0av18ZzG9zzkLzHE6yq0AxCMaIPs0/getMe": (
        "https://api.telegram.org/bot[token]/getMe"
    ),
    # Local numbers without separators.
    "0701234567": "[phone]",
    "07911123456": "[phone]",
    "0046701234567": "[phone]",
}
# Ids an operator needs to read stay as they are.
KEPT = [
    "inbound 1234567",
    "telegram:123456789",
    "chat -1001234567890",
    "update 987654321",
    "ts 1712345678.123456",
    "on 2026-11-27 08:55",
    "T0123ABCD/C0456EFGH",
    "order 4111111111111112",  # not a card number: the checksum fails
    "update 1234567890",
    "took 0.000123456 s",
    "version 2.0.1",
]


@pytest.mark.parametrize(("secret", "mask"), SECRETS.items())
def test_secrets_are_masked(secret: str, mask: str) -> None:
    assert redact(f"the customer wrote {secret} here") == f"the customer wrote {mask} here"


@pytest.mark.parametrize("text", KEPT)
def test_ids_are_kept(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_every_line_is_masked_tracebacks_included(restore_logging: None) -> None:
    for json_lines in (False, True):
        out = io.StringIO()
        setup("INFO", json_lines=json_lines, stream=out)
        log = logging.getLogger("deskmate.test")
        log.info("message from %s: call me on %s", "anna@example.com", "+46 70 123 45 67")
        try:
            raise RuntimeError("token xoxb-1234-5678-abcdefghijkl refused")
        except RuntimeError:
            log.exception("sending failed")
        text = out.getvalue()
        for secret in ("anna@example.com", "+46 70 123 45 67", "xoxb-1234"):
            assert secret not in text
        if json_lines:
            lines = [json.loads(line) for line in text.splitlines()]
            assert lines[0]["message"] == "message from [email]: call me on [phone]"
            assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "deskmate.test"
            assert "RuntimeError: token [token] refused" in lines[1]["exception"]
        else:
            assert "INFO deskmate.test: message from [email]: call me on [phone]" in text
            assert "RuntimeError: token [token] refused" in text


# A token of the real shape, so the fake Bot API's addresses carry one.
TOKEN = "123456789:AAEhBP0av18ZzG9zzkLzHE6yq0AxCMaIPs0"


async def _send_through_the_sdk(text: str) -> None:
    """A real python-telegram-bot call to the local fake Bot API."""
    fake = FakeTelegram(token=TOKEN, bot_id=123456789)
    await fake.start()
    try:
        async with Bot(TOKEN, base_url=f"{fake.api_url}/bot") as bot:
            await bot.send_message(42, text)
        assert fake.texts(42) == [text]
    finally:
        await fake.close()


async def test_the_bot_token_in_the_sdks_request_lines_is_masked(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    setup("INFO", stream=out)
    await _send_through_the_sdk("hello")
    text = out.getvalue()
    assert "HTTP Request: POST" in text  # httpx's own line, with the address in it
    assert "/bot[token]/sendMessage" in text
    assert TOKEN.split(":")[1] not in text


async def test_at_debug_the_sdks_do_not_log_what_customers_wrote(
    restore_logging: None,
) -> None:
    said = "Hi, this is Anna Svensson, my parcel never came"
    out = io.StringIO()
    setup("DEBUG", stream=out)
    logging.getLogger("deskmate.test").debug("our own debug line")
    await _send_through_the_sdk(said)
    text = out.getvalue()
    assert "our own debug line" in text
    assert "Anna Svensson" not in text and "parcel" not in text
    assert "HTTP Request: POST" in text  # the SDKs' INFO lines still come

    # Asked for, their debug lines come too: still masked, but with the words.
    out = io.StringIO()
    setup("DEBUG", stream=out, sdk_debug=True)
    await _send_through_the_sdk(f"{said}, call 0701234567")
    text = out.getvalue()
    assert "LOG_SDK_DEBUG is on" in text
    assert "Anna Svensson" in text and "[phone]" in text
    assert "0701234567" not in text and TOKEN.split(":")[1] not in text
