"""LLM layer: backends behind one streaming protocol (see ``llm.base``)."""

from llm.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
    TextDelta,
    Usage,
)

__all__ = [
    "Backend",
    "ChatMessage",
    "GenerationRequest",
    "LLMBusy",
    "LLMError",
    "LLMTimeout",
    "SamplingParams",
    "TextDelta",
    "Usage",
]
