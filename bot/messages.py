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
    "knowledge.draft.usage": (
        "Usage: /draft <kind> <what it should say> [--tone T] [--length short|medium|long]\n"
        "kinds: {kinds}; tones: {tones}.\n"
        "Then reply with changes (e.g. 'shorter', 'more formal'); /draft done when finished."
    ),
    "knowledge.draft.unknown_kind": "unknown kind {kind!r}.\n{usage}",
    "knowledge.draft.no_brief": "say what the {kind} should be about.\n{usage}",
    "knowledge.draft.unknown_tone": "unknown tone {tone!r}; use one of {tones}",
    "knowledge.draft.unknown_length": "unknown length {length!r}; use short, medium or long",
    "knowledge.draft.someone_elses": (
        "Someone else's draft is open in this conversation; only they can revise "
        "or close it (it expires a day after its last change, and /reset removes it)."
    ),
    "knowledge.draft.closed": "Draft closed. Nothing was sent.",
    # The knowledge commands: what /help says of them, and their replies.
    "knowledge.command.faq": (
        "manage the FAQ: add, list, remove, search, pending, approve, reject, gaps"
    ),
    "knowledge.command.answer": "the answer to an FAQ entry I suggested: /answer <id>",
    "knowledge.command.mode": (
        "answering mode: support, faq or assistant (--tenant: the whole workspace)"
    ),
    "knowledge.command.persona": "set the assistant's persona for this workspace",
    "knowledge.command.draft": "draft a reply, announcement, social post, email or release note",
    "knowledge.faq.usage": (
        "Usage:\n"
        "/faq add <question> | <answer> [| <source>]\n"
        "/faq list [page]\n"
        "/faq remove <id>\n"
        "/faq search <question>\n"
        "/faq pending · /faq approve <id> [| <edited answer>] · /faq reject <id>\n"
        "/faq gaps (questions the FAQ did not answer well)\n"
        "/faq share <phrasing id> (owners: a workspace's learned phrasing for everyone)\n"
        "Admins edit this workspace's own entries; owners edit the shared FAQ, or this "
        "workspace's with --here."
    ),
    "knowledge.faq.add_how": "Write it as: /faq add <question> | <answer> [| <source>]",
    "knowledge.faq.added": "Added FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.updated": "Updated FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.unchanged": "Unchanged: FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.this_workspace_only": " (this workspace only)",
    "knowledge.faq.adapting": (
        "\nThe search model adapts to the new entries in the background in a "
        "few minutes; answers use the current one meanwhile."
    ),
    "knowledge.faq.none_yet": "No FAQ entries here yet.",
    "knowledge.faq.page_empty": "Page {page} is empty.",
    "knowledge.faq.page": "FAQ entries (page {page}):",
    "knowledge.faq.page_line": "{ref}: {question}",
    "knowledge.faq.more": "More: /faq list {page}",
    "knowledge.faq.remove_which": "Which one? /faq remove <id> (ids are shown by /faq list)",
    "knowledge.faq.shared_is_owners": (
        "FAQ entry {ref} is in the shared FAQ, which only owners edit."
    ),
    "knowledge.faq.no_entry": "There is no FAQ entry {ref} here.",
    "knowledge.faq.removed": "Removed FAQ entry {ref}: {question}",
    "knowledge.faq.search_what": "Search for what? /faq search <question>",
    "knowledge.faq.empty": "The FAQ is empty.",
    "knowledge.faq.matches": "Best matches (I would answer: {path}):",
    "knowledge.faq.match_line": "{ref} ({score:.2f}): {title}",
    "knowledge.faq.answer_which": "Which one? /faq answer <id>",
    "knowledge.faq.gaps_own": "Admins see their own workspace's gaps: /faq gaps.",
    "knowledge.faq.decide_which": "Which one? /faq {sub} ID (ids are shown by /faq pending).",
    "knowledge.faq.no_proposal": "There is no learned answer #{id} for you to decide.",
    "knowledge.faq.already_decided": "Learned answer #{id} was already {status}.",
    "knowledge.faq.decided_meanwhile": "Learned answer #{id} was decided meanwhile.",
    "knowledge.faq.rejected": "Rejected learned answer #{id}.",
    "knowledge.faq.no_phrasings": "No learned phrasings in this workspace.",
    "knowledge.faq.phrasings": "Learned phrasings here (share one with /faq share <id>):",
    "knowledge.faq.phrasing_line": "{id}: {text} (entry {entry})",
    "knowledge.faq.no_phrasing": "There is no learned phrasing {id}.",
    "knowledge.faq.shared": "Phrasing {id} is now used for every workspace.",
    "knowledge.mode.current": (
        "Mode here: {mode}. Set it with /mode support|faq|assistant "
        "(add --tenant for the whole workspace; /mode default to clear)."
    ),
    "knowledge.mode.unknown": "Unknown mode {choice!r}. Modes: {modes}.",
    "knowledge.mode.cleared_here": "Mode cleared; the workspace default applies.",
    "knowledge.mode.cleared_workspace": "Mode cleared; support applies.",
    "knowledge.mode.set_here": "Mode set to {mode} in this conversation.",
    "knowledge.mode.set_workspace": "Mode set to {mode} for this workspace.",
    "knowledge.persona.current": "Current persona:\n{persona}",
    "knowledge.persona.none": "No persona set.",
    "knowledge.persona.how": "\nSet one with /persona <text>, remove it with /persona clear.",
    "knowledge.persona.removed": "Persona removed.",
    "knowledge.persona.too_long": "That persona is {length} characters; keep it under 2000.",
    "knowledge.persona.saved": (
        "Persona saved. Drafts and grounded answers in this workspace will use it."
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
