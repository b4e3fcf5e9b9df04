"""Recognising a customer who asks for a person, in English, Swedish, German,
Spanish, French and Chinese."""

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
# The shipped languages' plain ways of asking for a person.
_OTHERS = re.compile(
    r"\b(?:"
    # Swedish
    r"(?:prata|tala)\s+med\s+(?:en\s+)?(?:riktig\s+)?(?:människa|person|handläggare|kundtjänst)"
    r"|riktig\s+människa|mänsklig\s+handläggare"
    # German
    r"|(?:mit\s+)?(?:einem|einer)\s+(?:echten\s+)?(?:menschen|mitarbeiter(?:in)?|person|"
    r"berater(?:in)?)\s+(?:sprechen|reden)"
    r"|echte[nr]?\s+(?:menschen|mensch|person)"
    # Spanish
    r"|hablar\s+con\s+(?:una\s+|un\s+)?(?:persona|humano|agente|operador|asesor)"
    r"|persona\s+real|agente\s+humano"
    # French
    r"|parler\s+(?:à|a|avec)\s+(?:un\s+|une\s+)?(?:vraie\s+)?(?:humain|personne|conseill[eè]re?|"
    r"agent|opérateur)"
    r"|vraie\s+personne"
    r")",
    re.IGNORECASE,
)
_CHINESE = re.compile(r"人工(?:客服|服务)?|转人工|真人|找客服|人工坐席|客服人员|联系客服")
_ALONE = re.compile(r"^\s*(?:human|agent|operator|representative)\s*[.!?]*\s*$", re.IGNORECASE)


def wants_human(text: str) -> bool:
    """Whether ``text`` asks to be put through to a person (not a question about one)."""
    if len(text) > 300:
        return False  # a long message is a question that merely mentions people
    return bool(
        _ALONE.match(text) or _ENGLISH.search(text) or _OTHERS.search(text) or _CHINESE.search(text)
    )
