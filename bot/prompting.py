"""Turning a conversation's stored history into the model's prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.language import answer_language_rule
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
    language: str = "",
) -> list[ChatMessage]:
    """System prompt plus the newest history that fits in ``budget`` tokens.

    The system prompt and the last message (the question being answered) are
    always kept; the question is cut short if it alone would not fit.
    ``language``: the customer's, which the answer must be written in ("":
    the prompt says nothing of it).
    """
    if language:
        system_prompt = f"{system_prompt.rstrip()}\n\n{answer_language_rule(language)}".strip()
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
