"""Every fixed text Deskmate sends, looked up by key and language.

A text is a key here, never a literal at the place that sends it, so a
translation, a change of tone or a test of wording touches this module only.
Placeholders use ``str.format`` names: ``say("handoff.opened", hours="9-17")``.
Languages other than English fall back to English text by text, so a
catalog may be translated piece by piece.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_LANGUAGE = "en"

# Each area of the bot keeps its texts in its own block; keys are
# "<area>.<name>" so a key says where the text is used.

# -- conversations: answers, failures, limits ----------------------------------
_CONVERSATION: dict[str, str] = {
    # (filled by the conversation code)
}

# -- the help desk: tickets, agents, notices -----------------------------------
_HANDOFF: dict[str, str] = {
    # (filled by the help desk code)
}

# -- knowledge: escalation, "did you mean", citations -------------------------
_KNOWLEDGE: dict[str, str] = {
    "knowledge.no_reliable_answer": (
        "I don't have a reliable answer to that in our knowledge base, so I won't guess."
    ),
    # Without a support team connected nobody follows up in the chat, so the
    # customer is promised nothing beyond the question being kept for the team.
    "knowledge.escalation": (
        "I don't have a reliable answer to that in our knowledge base, so I won't guess. "
        "I've noted your question so a human colleague can look into it."
    ),
    # How a passage is named in citations: "{name} {id}", the name by its kind.
    "knowledge.kind.faq": "FAQ",
    "knowledge.label": "{name} {id}",
    "knowledge.verbatim": "{text}\n\nSource: {source} ({label})",
    "knowledge.sources": "Sources:",
    "knowledge.source_line": "[{number}] {title} ({label})",
    "knowledge.source_line_with_origin": "[{number}] {title} ({label}, {origin})",
    "knowledge.suggestions": "I couldn't find an exact answer. The closest FAQ entries are:",
    "knowledge.suggestion_line": "- {title} ({label})",
    "knowledge.clarify": "I'm not sure which of these you mean:",
    "knowledge.clarify_line": "{number}. {title}",
    "knowledge.clarify_how": "Reply {numbers} to get that answer, or {human} to ask a person.",
    "knowledge.clarify_or": " or ",
    "knowledge.none_of_these": "None of these — ask a person",
    "knowledge.draft.label": "DRAFT — review before sending; nothing has been sent.",
    "knowledge.draft.heading": "{label}\n({kind}, {tone}, {length})\n\n",
    "knowledge.draft.empty": (
        "The model returned an empty draft; please try again with more detail."
    ),
}

# -- team: roles, quotas, ratings, learning -----------------------------------
_TEAM: dict[str, str] = {
    # (filled by the team code)
}

# -- commands: help, refusals, housekeeping ------------------------------------
_COMMANDS: dict[str, str] = {
    # (filled by the command code)
}

CATALOG: Mapping[str, Mapping[str, str]] = {
    "en": {**_CONVERSATION, **_HANDOFF, **_KNOWLEDGE, **_TEAM, **_COMMANDS},
}


def say(key: str, language: str = DEFAULT_LANGUAGE, /, **values: object) -> str:
    """The text ``key`` in ``language`` (English where it has no translation).

    Raises ``KeyError`` for a key no language has: a typo must fail in tests,
    not reach a customer as an empty message.
    """
    texts = CATALOG.get(language) or CATALOG[DEFAULT_LANGUAGE]
    template = texts.get(key)
    if template is None:
        template = CATALOG[DEFAULT_LANGUAGE][key]
    return template.format(**values) if values else template


def keys() -> frozenset[str]:
    """Every key of the English catalog (the reference language)."""
    return frozenset(CATALOG[DEFAULT_LANGUAGE])
