"""Turning a conversation's stored history into the model's prompt."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from llm.base import ChatMessage
from storage.repository import HistoryItem

# Tokens a chat template adds around each message (role markers, separators).
MESSAGE_OVERHEAD = 6


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[HistoryItem],
    budget: int,
    count_tokens: Callable[[str], int],
) -> list[ChatMessage]:
    """System prompt plus the newest history that fits in ``budget`` tokens.

    The system prompt and the last message (the question being answered) are
    always kept; the question is cut short if it alone would not fit.
    """
    question = history[-1].text if history else ""
    system_prompt = with_language(system_prompt, question)
    system = ChatMessage("system", system_prompt)
    remaining = budget - count_tokens(system_prompt) - MESSAGE_OVERHEAD
    kept: list[ChatMessage] = []
    for i, item in enumerate(reversed(history)):
        cost = count_tokens(item.text) + MESSAGE_OVERHEAD
        if cost > remaining:
            if i == 0:
                kept.append(ChatMessage("user", _shorten(item.text, remaining, count_tokens)))
            break
        kept.append(ChatMessage("assistant" if item.role == "assistant" else "user", item.text))
        remaining -= cost
    kept.reverse()
    # A prompt must not open with an answer to a question that was trimmed away.
    while len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
    return [system, *kept]


def with_language(system_prompt: str, question: str) -> str:
    """``system_prompt`` closed by a line asking for the answer in the question's language.

    Small models ignore "the customer's language" but follow a language they
    are told by name, so a script that names its language (Chinese, Japanese,
    Korean) is named; other questions get the general line.
    """
    line = language_line(question)
    return f"{system_prompt.rstrip()}\n\n{line}" if system_prompt.strip() else line


def language_line(question: str) -> str:
    """The instruction on the answer's language for ``question``."""
    name = _script_language(question)
    if name is None:
        return "Answer in the language the customer writes in."
    return f"The customer writes in {name}. Write your whole answer in {name}."


_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Kana first: Japanese text is full of Han characters as well.
    ("Japanese (日本語)", re.compile(r"[\u3040-\u30ff]")),
    ("Korean (한국어)", re.compile(r"[\uac00-\ud7af]")),
    ("Chinese (中文)", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")),
)


def _script_language(text: str) -> str | None:
    letters = sum(1 for ch in text if ch.isalpha())
    if not letters:
        return None
    for name, pattern in _SCRIPTS:
        # A Latin-script question quoting one CJK word stays with the general line.
        if len(pattern.findall(text)) * 3 >= letters:
            return name
    return None


def _shorten(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    budget = max(budget - MESSAGE_OVERHEAD, 1)
    lo, hi = 0, len(text)
    # Binary search on characters: tokenizers are not linear in length.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def with_canary(messages: Sequence[ChatMessage], marker: str) -> list[ChatMessage]:
    """``messages`` with ``marker`` (the output guard's canary line) closing
    their system message, or opening the prompt as one when there is none:
    an answer that repeats it has repeated the instructions."""
    if not marker:
        return list(messages)
    for i, message in enumerate(messages):
        if message.role == "system":
            content = f"{message.content.rstrip()}\n\n{marker}" if message.content else marker
            return [*messages[:i], ChatMessage("system", content), *messages[i + 1 :]]
    return [ChatMessage("system", marker), *messages]
