"""The customer's language: detected in each message, remembered per
conversation, defaulted per tenant and deployment.

Detection uses py3langid (langid.py's model, shipped inside the package,
numpy only): about 0.05 ms a message, and on short support questions in the
shipped languages it was right more often than langdetect, which also needs
a fixed seed to answer the same twice (README, "Languages"). It is asked to
choose among ``SUPPORTED_LANGUAGES`` only: a short Swedish question otherwise
reads as Norwegian, and a language without texts or prompt instructions would
help nobody. A message too short to tell (under ``MIN_CONFIDENCE``: "ok",
"thanks", a number, an emoji) has no language of its own, and the message is
answered in, in order: the conversation's last detected language, the
tenant's default (``/language xx``), the deployment's ``DESKMATE_LANGUAGE``,
English.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from llm.base import ChatMessage
from storage.languages_repo import LanguageRepository

log = logging.getLogger(__name__)

FALLBACK_LANGUAGE = "en"

# Code → the language's own name, as a ticket shows it to agents and
# `/language` lists it.
SUPPORTED_LANGUAGES: dict[str, str] = {
    "en": "English",
    "sv": "svenska",
    "de": "Deutsch",
    "es": "español",
    "fr": "français",
    "zh": "中文",
}

# The English names, for instructions to the model ("Write in Swedish").
ENGLISH_NAMES: dict[str, str] = {
    "en": "English",
    "sv": "Swedish",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "zh": "Chinese (简体中文)",
}

# Below this normalised probability among the supported languages the
# message's own language is unknown; chosen on short messages: "Hej" (0.34),
# "merci" (0.26) and "refund" (0.29) fall back, "ja tack" (0.90), "bonjour"
# (0.83) and "Hur gör jag?" (0.99) do not.
MIN_CONFIDENCE = 0.8
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_KANA_OR_HANGUL = re.compile(r"[\u3040-\u30ff\uac00-\ud7af]")
_URL_OR_MENTION = re.compile(r"https?://\S+|<[@#!][^>]*>|@\w+|\S+@\S+\.\w+")

_identifier: Any = None
_identifier_lock = threading.Lock()


def _classifier() -> Any:
    """The model, loaded once (about a second: it is unpacked from its
    archive) and restricted to our languages."""
    global _identifier
    with _identifier_lock:
        if _identifier is None:
            from py3langid.langid import _load_identifier

            _identifier = _load_identifier(norm_probs=True, langs=list(SUPPORTED_LANGUAGES))
        return _identifier


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of ``text``'s language among ``SUPPORTED_LANGUAGES``,
    or None when it is too short or too mixed to tell."""
    text = _URL_OR_MENTION.sub(" ", text)
    letters = _LETTER.findall(text)
    if not letters:
        return None
    if _KANA_OR_HANGUL.search(text):
        # Japanese or Korean: not a shipped language, and never Chinese.
        return None
    han = len(_HAN.findall(text))
    if han and han * 2 >= len(letters):
        return "zh"
    if len(letters) < 3:
        return None
    language, confidence = _classifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return None
    return str(language)


def resolve_language(
    detected: str | None,
    *,
    conversation: str | None = None,
    tenant: str | None = None,
    deployment: str = FALLBACK_LANGUAGE,
) -> str:
    """The language to answer in: the message's own, else the conversation's
    last detected one, else the tenant's default, else the deployment's."""
    for language in (detected, conversation, tenant, deployment):
        if language and language in SUPPORTED_LANGUAGES:
            return language
    return FALLBACK_LANGUAGE


def accepted_language(header: str) -> str:
    """The browser's most wanted language that Deskmate ships (``Accept-Language:
    fr-CH, de;q=0.9`` → ``fr``); English when it names none. The web chat's
    refusals and the console's pages both read it so."""
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        code = tag.strip().split("-")[0].lower()
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if code in SUPPORTED_LANGUAGES and weight > 0:
            # Highest weight first; among equals, the browser's own order.
            wanted.append((-weight, position, code))
    return min(wanted)[2] if wanted else FALLBACK_LANGUAGE


def parse_language(raw: str) -> str | None:
    """A supported code from what an admin typed ("sv", "SV", "zh-CN", "svenska")."""
    value = raw.strip().lower()
    if not value:
        return None
    code = value.replace("_", "-").split("-")[0]
    if code in SUPPORTED_LANGUAGES:
        return code
    for code, name in SUPPORTED_LANGUAGES.items():
        if value in (name.lower(), ENGLISH_NAMES[code].lower().split(" ")[0]):
            return code
    return None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A message's language: ``detected`` its own (None: too short to tell),
    ``language`` the one it is answered in."""

    detected: str | None
    language: str


class Languages:
    """Resolves each message's language and keeps what is stored about it.

    A tenant's default is read once every ``TENANT_TTL`` seconds (it changes
    rarely, and only by ``/language``, which this process sees at once);
    another worker's ``/language`` reaches this one within that time.
    """

    TENANT_TTL = 30.0

    def __init__(self, repository: LanguageRepository, *, default: str = FALLBACK_LANGUAGE):
        self.repository = repository
        self.default = default
        self._tenants: dict[tuple[str, str], tuple[float, str | None]] = {}
        if _identifier is None:
            # Loaded beside start-up, not in the first customer's answer.
            threading.Thread(target=_classifier, name="language-model", daemon=True).start()

    def accepted(
        self, detected: str | None, conversation: str | None, tenant: str | None
    ) -> Resolved:
        """A message's language from what was read when it was accepted."""
        return Resolved(
            detected,
            resolve_language(
                detected, conversation=conversation, tenant=tenant, deployment=self.default
            ),
        )

    async def resolve(
        self, text: str, *, conversation_id: int, platform: str, tenant: str, command: bool
    ) -> Resolved:
        """``text``'s language, stored as the conversation's when it has one
        (a command's words are the bot's, not the customer's language)."""
        detected = None if command else detect_language(text)
        if detected is not None:
            await self.repository.detected(conversation_id, detected)
            return Resolved(detected, detected)
        return Resolved(None, await self.fallback(conversation_id, platform, tenant))

    async def fallback(self, conversation_id: int | None, platform: str, tenant: str) -> str:
        """The language of a conversation whose current message tells nothing."""
        conversation = (
            None
            if conversation_id is None
            else await self.repository.of_conversation(conversation_id)
        )
        if conversation in SUPPORTED_LANGUAGES:
            return str(conversation)
        return resolve_language(
            None, tenant=await self.of_tenant(platform, tenant), deployment=self.default
        )

    async def of_tenant(self, platform: str, tenant: str) -> str | None:
        key = (platform, tenant)
        cached = self._tenants.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.TENANT_TTL:
            return cached[1]
        language = await self.repository.of_tenant(platform, tenant)
        if len(self._tenants) > 10_000:
            self._tenants.clear()
        self._tenants[key] = (now, language)
        return language

    async def set_tenant(self, platform: str, tenant: str, language: str, *, by: str) -> None:
        await self.repository.set_tenant(platform, tenant, language, by=by)
        self._tenants[(platform, tenant)] = (time.monotonic(), language)

    async def clear_tenant(self, platform: str, tenant: str) -> None:
        await self.repository.clear_tenant(platform, tenant)
        self._tenants[(platform, tenant)] = (time.monotonic(), None)


def answer_language_rule(language: str) -> str:
    """The instruction that makes the model write in ``language``; said in
    English, the language small instruction models follow best, and naming
    the language rather than its code."""
    name = ENGLISH_NAMES.get(language, ENGLISH_NAMES[FALLBACK_LANGUAGE])
    if language == "zh":
        return f"{_WRITE_IN.format(name=name)} 请用简体中文回答。"
    return _WRITE_IN.format(name=name)


_WRITE_IN = "Always write your answer in {name}, whatever language the sources are in."


def translation_messages(text: str, *, source: str, target: str) -> list[ChatMessage]:
    """The prompt that asks the model to translate ``text`` from ``source``
    into ``target`` and say nothing else."""
    system = (
        f"You translate customer support messages from {ENGLISH_NAMES[source]} into "
        f"{ENGLISH_NAMES[target]}. Reply with the translation only: no notes, no quotes, "
        "no explanations. Keep names, numbers, links, commands and Markdown as they are."
    )
    return [ChatMessage("system", system), ChatMessage("user", text)]
