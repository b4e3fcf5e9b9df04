"""Text for Telegram: lengths in UTF-16 code units, splitting, and HTML.

Telegram measures message length in UTF-16 code units (4096 per message) after
entity parsing; a character outside the Basic Multilingual Plane (most emoji)
counts twice. Pieces produced here are exact slices of the input, so joining
them gives the original text back.
"""

from __future__ import annotations

import html
import re

MESSAGE_LIMIT = 4096

# Preferred split points, best first: paragraph, line, sentence, word.
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n\s*"),
    re.compile(r"(?<=[.!?…。])[\"')\]]*\s+"),
    re.compile(r"\s+"),
)


def utf16_len(text: str) -> int:
    """Length of ``text`` as Telegram counts it."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _prefix_within(text: str, limit: int) -> int:
    """Number of characters of ``text`` whose UTF-16 length is at most ``limit``."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_first(text: str, limit: int = MESSAGE_LIMIT) -> tuple[str, str]:
    """Cut the longest good first piece of at most ``limit`` UTF-16 units.

    The cut falls after a paragraph break if there is one in the window, else
    a line break, a sentence end, a space, and only as a last resort inside a
    word. Whitespace at the cut stays with the first piece, so the second
    starts with visible text.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    fit = _prefix_within(text, limit)
    if fit >= len(text):
        return text, ""
    window = text[:fit]
    # A cut in the first fifth of the window would leave a tiny message; a
    # worse boundary further on is the better trade.
    floor = fit // 5
    for pattern in _BOUNDARIES:
        best = -1
        for match in pattern.finditer(window):
            if match.start() > floor:
                best = match.end()
        if best > 0:
            return text[:best], text[best:]
    return text[:fit], text[fit:]


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into ordered pieces of at most ``limit`` UTF-16 units each.

    ``"".join(split_message(t)) == t``. Returns ``[]`` for blank text.
    """
    if not text.strip():
        return []
    pieces: list[str] = []
    rest = text
    while rest:
        head, rest = split_first(rest, limit)
        if not head.strip() and pieces:
            pieces[-1] += head
            continue
        pieces.append(head)
    # Trailing whitespace alone is no message; it belongs to the piece before.
    if len(pieces) > 1 and not pieces[-1].strip():
        tail = pieces.pop()
        if utf16_len(pieces[-1] + tail) <= limit:
            pieces[-1] += tail
        else:
            pieces.append(tail)  # pragma: no cover - only whitespace past the limit
    return pieces


_FENCE = re.compile(r"```(?:[A-Za-z0-9_+-]*\n)?(.+?)```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL)


def to_html(text: str) -> str:
    """Render model text (plain, a little Markdown) as Telegram HTML.

    Every ``<``, ``>`` and ``&`` is escaped; ```` ```fenced``` ```` blocks become
    ``<pre>``, `` `code` `` becomes ``<code>``, ``**bold**`` becomes ``<b>``.
    Markers without a partner (a half-streamed answer) stay as literal text.
    """
    out: list[str] = []
    pos = 0
    for match in _FENCE.finditer(text):
        out.append(_inline(text[pos : match.start()]))
        out.append(f"<pre>{html.escape(match.group(1), quote=False)}</pre>")
        pos = match.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _CODE.finditer(text):
        out.append(_bold(text[pos : match.start()]))
        out.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        pos = match.end()
    out.append(_bold(text[pos:]))
    return "".join(out)


def _bold(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _BOLD.finditer(text):
        out.append(html.escape(text[pos : match.start()], quote=False))
        out.append(f"<b>{html.escape(match.group(1), quote=False)}</b>")
        pos = match.end()
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out)
