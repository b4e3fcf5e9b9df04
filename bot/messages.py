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
    "conversation.empty": "I can only read text. Please type your question and I'll help.",
    "conversation.failed": "Sorry, I couldn't answer that just now. Please try again in a moment.",
    "conversation.timeout": (
        "Sorry, that took too long and I had to stop. Please try again in a moment."
    ),
    "conversation.stopped": "(stopped)",
    "conversation.busy": (
        "I'm helping a lot of people right now. Please send your message again in a minute."
    ),
    "conversation.busy_in_line": (
        "I'm helping a lot of people right now. You'd be number {position} in line. "
        "Please send your message again in a minute."
    ),
    "conversation.too_fast": (
        "You're sending messages faster than I can answer them. Please wait "
        "about {seconds} seconds, then send your question again."
    ),
    "conversation.truncated": (
        "(Your message was very long, so I read only its first {chars:,} characters.)\n\n"
    ),
    "conversation.unknown_command": (
        "I don't know the command /{name}. Send /help to see what I can do."
    ),
    "conversation.error": "Sorry, something went wrong on my side. Please try again in a moment.",
    "conversation.records_unreachable": (
        "Sorry, I can't reach my records just now. Please try again in a moment."
    ),
    # The message stays stored and is answered once the records are back, so
    # the customer is not asked to send it again (that would earn them two answers).
    "conversation.records_delayed": (
        "Sorry, I can't reach my records just now. I'll answer this as soon as they're back."
    ),
}

# -- the help desk: tickets, agents, notices -----------------------------------
_HANDOFF: dict[str, str] = {
    # (filled by the help desk code)
}

# -- knowledge: escalation, "did you mean", citations -------------------------
_KNOWLEDGE: dict[str, str] = {
    # (filled by the knowledge code)
}

# -- team: roles, quotas, ratings, learning -----------------------------------
_TEAM: dict[str, str] = {
    "team.invitation": (
        "How did I do? Reply 👍 or 👎 (or /rate good, or /rate bad and what was missing)."
    ),
    "team.ticket_invitation": (
        "How did our team do? Reply 👍 or 👎 (or /rate good, or /rate bad and what was missing)."
    ),
    "team.quota_notice": (
        "You've reached today's limit of answers I can write for you. I'll still answer "
        "from our FAQ where it has the answer, commands keep working, and /human reaches a "
        "person. The limit resets at midnight UTC."
    ),
    "team.nothing_to_rate": "There's nothing to rate here right now.",
    "team.rating_not_yours": "Only the person who was answered can rate this answer.",
    "team.rated_good": "Thanks for the feedback!",
    "team.rated_bad_with_comment": "Thanks for telling us; the team will look at it.",
    "team.rated_bad": (
        "Thanks for telling us. If you like, say what was missing: /rate bad WHAT WAS MISSING."
    ),
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
