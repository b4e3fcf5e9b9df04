"""Log output: one line per record, as text or JSON, with personal data and
secrets masked in every line (tracebacks included).

Customers write e-mail addresses, phone and card numbers into support chats,
and SDKs sometimes echo tokens in their errors; none of that belongs in a log
file that operators ship elsewhere.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SLACK_TOKEN = re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]{6,}")
# Not \b-anchored: in the Bot API's URLs the token follows "bot" ("/bot123:AA…/").
_TELEGRAM_TOKEN = re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}(?![A-Za-z0-9_-])")
_BEARER = re.compile(
    r"(?i)\b(bearer|token|secret|api[_-]?key)([\"']?\s*[:=]\s*[\"']?|\s+)[^\s\"',]{8,}"
)
# International numbers, or local ones written in groups ("070-123 45 67").
PHONE = re.compile(
    r"(?<![\w:/.-])(?!\d{4}-\d{2}-\d{2})"
    r"(?:\+\d[\d ().-]{6,}\d|\(?\d{2,4}\)?[ .-]\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4})?)"
    r"(?![\w/])"
)
# Local numbers written without separators start with the trunk prefix 0
# ("0701234567", "07911123456", or "0046701234567" for abroad); ids never do.
# A run of digits without it cannot be told from a platform id and is kept.
LOCAL_PHONE = re.compile(r"(?<![\w:/.+-])0\d{8,12}(?![\w/])")
CARD = re.compile(r"(?<![\w:.-])(?:\d[ -]?){12,18}\d(?![\w-])")


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if 13 <= len(digits) <= 19 and luhn(digits) else match.group()


def redact(text: str) -> str:
    """``text`` with e-mail addresses, phone and card numbers and tokens masked."""
    text = _SLACK_TOKEN.sub("[token]", text)
    text = _TELEGRAM_TOKEN.sub("[token]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", text)
    text = EMAIL.sub("[email]", text)
    text = CARD.sub(_card, text)
    text = PHONE.sub("[phone]", text)
    return LOCAL_PHONE.sub("[phone]", text)


class RedactingFormatter(logging.Formatter):
    """The usual one-line text format, with the message and traceback masked
    (the time stamp and logger name are left alone: they are ours)."""

    def format(self, record: logging.LogRecord) -> str:
        masked = logging.makeLogRecord(
            {**record.__dict__, "msg": redact(record.getMessage()), "args": None}
        )
        return super().format(masked)

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))  # type: ignore[arg-type]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; masked like the text format."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


# The platform SDKs' loggers: at DEBUG they write whole API calls, with
# customers' messages and names (which no pattern can mask).
SDK_LOGGERS = ("telegram", "slack_sdk", "slack_bolt", "httpx", "httpcore")


def setup(
    level: str,
    *,
    json_lines: bool = False,
    stream: TextIO | None = None,
    sdk_debug: bool = False,
) -> None:
    """Send every log record to ``stream`` (stderr), masked, as text or JSON.

    At DEBUG the platform SDKs (``SDK_LOGGERS``) still log at INFO only,
    unless ``sdk_debug`` lets their debug lines through too.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    held = root.level < logging.INFO and not sdk_debug
    for name in SDK_LOGGERS:
        # NOTSET: as verbose as the root, and never more (a level of their own
        # would let their records through below the root's level).
        logging.getLogger(name).setLevel(logging.INFO if held else logging.NOTSET)
    if sdk_debug and root.level < logging.INFO:
        logging.getLogger(__name__).warning(
            "LOG_SDK_DEBUG is on: the platform SDKs log customers' messages and names"
        )
