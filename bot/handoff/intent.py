"""Recognising a customer who asks for a person, in English and Chinese."""

from __future__ import annotations

import re

_ENGLISH = re.compile(
    r"\b(?:"
    r"(?:talk|speak|chat)\s+(?:to|with)\s+(?:a\s+|an\s+|some\s*one|somebody|your\s+)?"
    r"(?:real\s+|live\s+|actual\s+)?(?:human|person|people|agent|someone|somebody|"
    r"representative|rep|operator|staff|support\s+(?:agent|person))"
    r"|(?:real|live|actual)\s+(?:human|person|agent)"
    r"|human\s+(?:agent|being|support|please)"
    r"|(?:get|connect|transfer|put)\s+me\s+(?:to|through\s+to|with)\s+(?:a\s+|an\s+)?"
    r"(?:human|person|agent|someone|representative|operator)"
    r"|(?:i\s+)?(?:want|need|would\s+like)\s+(?:to\s+talk\s+to\s+)?(?:a\s+|an\s+)?"
    r"(?:human|person|real\s+person|agent|representative)\b"
    r")",
    re.IGNORECASE,
)
_CHINESE = re.compile(r"人工(?:客服|服务)?|转人工|真人|找客服|人工坐席|客服人员|联系客服")
_ALONE = re.compile(r"^\s*(?:human|agent|operator|representative)\s*[.!?]*\s*$", re.IGNORECASE)


def wants_human(text: str) -> bool:
    """Whether ``text`` asks to be put through to a person (not a question about one)."""
    if len(text) > 300:
        return False  # a long message is a question that merely mentions people
    return bool(_ALONE.match(text) or _ENGLISH.search(text) or _CHINESE.search(text))
