"""Content drafting: replies, announcements, posts, emails and release notes.

A draft is text for a person to review and send; nothing here sends it
anywhere. ``/draft`` starts one; while it is open, every plain message in the
conversation is an instruction that revises it ("shorter", "more formal");
``/draft done`` closes it. Nothing here calls the model: ``/draft`` and each
revision return a ``ReviseDraft`` plan that the conversation manager executes.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from bot.language import answer_language_rule
from bot.messages import say
from llm.base import ChatMessage, SamplingParams

KINDS: dict[str, str] = {
    "reply": "a reply to a customer",
    "announcement": "an announcement to customers",
    "social": "a short social media post",
    "email": "an email (with a subject line first, as 'Subject: ...')",
    "release-note": "release notes",
}
ALIASES = {
    "reply-to-customer": "reply",
    "customer-reply": "reply",
    "social-post": "social",
    "post": "social",
    "release-notes": "release-note",
    "releasenote": "release-note",
    "mail": "email",
}
TONES = ("friendly", "formal", "neutral", "enthusiastic", "apologetic")
LENGTHS = {"short": "at most 60 words", "medium": "about 120 words", "long": "about 250 words"}
# A draft nobody revised for this long is closed: its next message is answered normally.
DRAFT_TTL = 24 * 3600.0

_OPTION = re.compile(r"(?:^|\s)--(tone|length)[= ](\S+)")


class DraftError(ValueError):
    """The /draft request is malformed; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Draft:
    kind: str
    brief: str
    tone: str = "friendly"
    length: str = "medium"
    text: str = ""
    # Who opened it (a platform user id): only they revise or close it.
    author: str = ""
    # When it was opened or last revised (Unix time); it expires DRAFT_TTL later.
    updated: float = 0.0
    # The language it is written in: its brief's ("": the model's choice).
    language: str = ""

    def belongs_to(self, platform_user: str) -> bool:
        # Drafts stored before drafts had authors belong to whoever continues them.
        return not self.author or self.author == platform_user

    def expired(self, now: float) -> bool:
        return bool(self.updated) and now - self.updated > DRAFT_TTL

    def dumps(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str) -> Draft:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})


def usage(language: str = "en") -> str:
    """How /draft is written, with its kinds and tones."""
    return say("knowledge.draft.usage", language, kinds=", ".join(KINDS), tones=", ".join(TONES))


def parse_request(args: str, language: str = "en") -> Draft:
    """The ``/draft`` request in ``args``; ``DraftError`` says, in
    ``language``, what is wrong with it."""
    options = dict(_OPTION.findall(args))
    rest = _OPTION.sub(" ", args).strip()
    kind, _, brief = rest.partition(" ")
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind not in KINDS:
        if not kind:
            raise DraftError(usage(language))
        raise DraftError(
            say("knowledge.draft.unknown_kind", language, kind=kind, usage=usage(language))
        )
    if not brief.strip():
        raise DraftError(
            say("knowledge.draft.no_brief", language, kind=kind, usage=usage(language))
        )
    tone = options.get("tone", "friendly").lower()
    length = options.get("length", "medium").lower()
    if tone not in TONES:
        raise DraftError(
            say("knowledge.draft.unknown_tone", language, tone=tone, tones=", ".join(TONES))
        )
    if length not in LENGTHS:
        raise DraftError(say("knowledge.draft.unknown_length", language, length=length))
    return Draft(kind, brief.strip(), tone, length)


def draft_messages(draft: Draft, persona: str, instruction: str = "") -> list[ChatMessage]:
    system = (
        (persona.strip() + "\n\n" if persona.strip() else "")
        + "You write drafts for a support team to review. Write only the draft text itself, "
        "no preamble or commentary. Do not invent facts, prices or dates that the brief "
        "does not give; leave a [placeholder] instead."
    )
    spec = (
        f"Write {KINDS[draft.kind]}. Tone: {draft.tone}. Length: {LENGTHS[draft.length]}.\n"
        f"Brief: {draft.brief}"
    )
    if draft.language:
        system += " " + answer_language_rule(draft.language)
    messages = [ChatMessage("system", system), ChatMessage("user", spec)]
    if draft.text and instruction:
        messages.append(ChatMessage("assistant", draft.text))
        messages.append(
            ChatMessage("user", f"Revise the draft: {instruction}. Write the whole new draft.")
        )
    return messages


def revise_options(draft: Draft, instruction: str) -> Draft:
    """Apply tone/length words in an instruction so later revisions keep them."""
    words = instruction.lower()
    length = draft.length
    if "shorter" in words:
        length = {"long": "medium", "medium": "short"}.get(draft.length, "short")
    elif "longer" in words:
        length = {"short": "medium", "medium": "long"}.get(draft.length, "long")
    tone = next((t for t in TONES if t in words), draft.tone)
    return replace(draft, tone=tone, length=length)


# Drafts want some variety, unlike answers.
SAMPLING = SamplingParams(max_new_tokens=400, temperature=0.7)


def heading(draft: Draft) -> str:
    """What a draft's text follows: the label that says nothing was sent, and its settings."""
    return say(
        "knowledge.draft.heading",
        label=say("knowledge.draft.label"),
        kind=draft.kind,
        tone=draft.tone,
        length=draft.length,
    )


def present(draft: Draft) -> str:
    return heading(draft) + draft.text
