"""Log lines carry no personal data or secrets, as text and as JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import redact, setup

SECRETS = {
    "anna.svensson@example.se": "[email]",
    "+46 70 123 45 67": "[phone]",
    "070-123 45 67": "[phone]",
    "4111 1111 1111 1111": "[card]",
    "5500-0000-0000-0004": "[card]",
    "xoxb-1234-5678-abcdefghijkl": "[token]",
    "xapp-1-A0123-456-abcdef": "[token]",
    "123456789:AAEhBP0av18ZzG9zzkLzHE6yq0AxCMaIPs0": "[token]",
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
