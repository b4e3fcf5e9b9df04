"""The LLM seam: one narrow protocol every backend implements.

Nothing in this module imports torch or transformers; backends that need them
import lazily inside their own module so the rest of Deskmate starts fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from llm.errors import LLMBusy, LLMError, LLMTimeout

__all__ = [
    "DTYPES",
    "FAST_DECODE_MODES",
    "QUANTIZATIONS",
    "Backend",
    "ChatMessage",
    "GenerationRequest",
    "LLMBusy",
    "LLMError",
    "LLMTimeout",
    "SamplingParams",
    "Scorer",
    "TextDelta",
    "Usage",
]

Role = Literal["system", "user", "assistant"]

# Accepted values of the local model's quantization and dtype settings.
QUANTIZATIONS = ("none", "8bit", "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Accepted values of DESKMATE_FAST_DECODE. ``auto``: build the packed decode step
# after load where the model allows it; ``off``: always decode eagerly.
FAST_DECODE_MODES = ("auto", "off")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: Sequence[ChatMessage]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Seconds the whole generation may take before it is abandoned; None = no limit.
    timeout: float | None = None
    # Free-form label for logs (e.g. the conversation id); never sent to the model.
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Seconds the model itself spent on this answer, when the backend can tell
    # (queueing and transport excluded); None: callers measure wall time instead.
    model_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text.

    The last delta of a stream carries ``usage`` (its ``text`` may be empty);
    earlier ones carry ``usage=None``.
    """

    text: str
    usage: Usage | None = None


@runtime_checkable
class Backend(Protocol):
    """A text generator that streams.

    ``stream`` yields ``TextDelta`` items as text is produced and raises
    ``LLMError`` (or a subclass) on failure. Cancelling the consuming task must
    stop the generation and free whatever it held.
    """

    name: str
    # Total tokens (prompt + completion) the model can attend to.
    context_window: int

    async def load(self) -> None: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary (no template overhead)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Scorer(Protocol):
    """A backend that can also say how likely a text is after another.

    Used to re-rank knowledge-base candidates with the local model; a backend
    behind an HTTP chat API cannot score, and retrieval then works without it.
    """

    async def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """For each ``(context, continuation)``: the summed log-probability of the
        continuation's tokens after the context's, one forward pass for all pairs."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the scoring model's vocabulary."""
        ...
