"""A verbatim answer written in a language other than the customer's.

An FAQ entry may have no version in the customer's language (``faq import
--language`` adds versions; many entries have none). Its answer then reaches
the customer in one of two ways, chosen by ``DESKMATE_FOREIGN_ANSWERS``:

- ``quote``: the original, word for word, after one line in the customer's
  language saying which language it is in;
- ``translate``: the model's translation, headed as a machine translation,
  with the original quoted below it. A translation that comes back in the
  wrong language, drops one of the original's numbers or fails is not shown:
  the customer gets the quote instead.

``auto`` chooses per model, from ``bench/foreign_answers.py``: the embedded
SmolLM2-135M translated Swedish answers into the right language too rarely to
be shown (bench/README.md, "Answers in another language"), so it quotes; a
served model (``DESKMATE_LLM_URL``) or another local model translates.
"""

from __future__ import annotations

import re

from bot.knowledge.passages import DOCUMENT, Passage
from bot.language import detect_language, translation_messages
from bot.messages import say
from llm.base import ChatMessage, SamplingParams

QUOTE = "quote"
TRANSLATE = "translate"
AUTO = "auto"
MODES = (AUTO, TRANSLATE, QUOTE)

# Models measured to translate too poorly to be shown (bench/foreign_answers.py).
_QUOTING_MODELS = frozenset({"embedded"})

_DIGITS = re.compile(r"\d+")
# Acronyms and codes (PBL, BBR, ROT, SE-123): kept as they are in any language.
_CODES = re.compile(r"\b[A-ZÅÄÖÆØ]{2,}\b")
# A capitalised word inside a sentence: a name (Helsingborg, Boverket), but
# not in German, which capitalises every noun.
_NAME = re.compile(r"(?<=[a-zåäöæøéèáíóúñç,] )([A-ZÅÄÖÆØÉ][\w-]{3,})")


def resolve_mode(setting: str, *, model: str, llm_url: str) -> str:
    """``translate`` or ``quote`` for ``DESKMATE_FOREIGN_ANSWERS`` = ``setting``."""
    if setting != AUTO:
        return setting
    if llm_url:
        return TRANSLATE
    return QUOTE if model in _QUOTING_MODELS else TRANSLATE


def written_in(passage: Passage) -> str | None:
    """The language ``passage``'s text is written in: as stored, else detected
    (an FAQ imported without ``--language`` does not say)."""
    return passage.language or detect_language(passage.text)


def foreign_language(passage: Passage, language: str) -> str | None:
    """The language of ``passage`` when a customer writing ``language`` cannot
    read it as it is; None when it is theirs or cannot be told."""
    source = written_in(passage)
    return source if source and source != language else None


def language_name(code: str, language: str) -> str:
    """The name of the language ``code``, said in ``language``."""
    return say(f"language.name_{code}", language)


def quote_note(source: str, language: str) -> str:
    """The one line in the customer's language before a quoted foreign answer."""
    return say("foreign.quoted", language, language=language_name(source, language))


def translatable(passage: Passage) -> bool:
    """A curated answer (FAQ, learned) is translated; a document's quote,
    with its citation marks and links, is quoted."""
    return passage.kind != DOCUMENT


def translation_request(
    passage: Passage, *, source: str, target: str
) -> tuple[list[ChatMessage], SamplingParams]:
    """The prompt and sampling that translate ``passage``'s answer."""
    # Room for a script that takes more tokens per word, and no more: a small
    # model that loops is cut off early.
    budget = min(700, max(64, len(passage.text) // 2 + 32))
    sampling = SamplingParams(max_new_tokens=budget, temperature=0.0)
    return translation_messages(passage.text, source=source, target=target), sampling


def faithful(original: str, translation: str, target: str, source: str = "") -> bool:
    """Whether ``translation`` may be shown: in ``target``, every number and
    acronym of ``original`` kept, half of its names (of two or more) where the target
    writes them in Latin letters, and not a runaway several times the
    original's length. A fluent answer about something else that happens to
    share them is not caught: only a model that translates should be asked."""
    text = translation.strip()
    if not text or detect_language(text) != target:
        return False
    if len(text) > 3 * len(original) + 80:
        return False
    if not set(_CODES.findall(original)) <= set(_CODES.findall(text)):
        return False
    names = set(_NAME.findall(original)) if source != "de" and target != "zh" else set()
    # One name may be translated ("Stadsbyggnadsförvaltningen": "the planning office").
    if len(names) > 1 and 2 * sum(1 for name in names if name in text) < len(names):
        return False
    return set(_DIGITS.findall(original)) <= set(_DIGITS.findall(text))


def translated_text(quoted: str, translation: str, *, source: str, language: str) -> str:
    """The customer's reply: the translation, marked as a machine translation,
    above ``quoted`` (the original as a verbatim answer shows it)."""
    name = language_name(source, language)
    return (
        f"{say('foreign.translated', language, language=name)}\n{translation.strip()}\n\n"
        f"{say('foreign.original', language, language=name)}\n{quoted}"
    )
