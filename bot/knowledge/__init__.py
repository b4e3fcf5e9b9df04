"""Knowledge base: FAQ import/export, hybrid retrieval and the answering policy."""

from bot.knowledge.base import (
    Decision,
    KnowledgeAnswer,
    KnowledgeBase,
    Policy,
    grounded_prompt,
)
from bot.knowledge.importer import KnowledgeImportError

__all__ = [
    "Decision",
    "KnowledgeAnswer",
    "KnowledgeBase",
    "KnowledgeImportError",
    "Policy",
    "grounded_prompt",
]
