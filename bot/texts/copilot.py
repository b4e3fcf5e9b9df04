"""The copilot's texts: suggested replies in a ticket, and what agents did with them."""

from __future__ import annotations

COPILOT: dict[str, str] = {
    # The suggestion as posted in the ticket (bot.handoff.copilot.suggestion_text).
    "copilot.head": "💡 Suggested reply #{id} ({path}), not sent to the customer:",
    "copilot.path.quoted": "quoted from the knowledge sources",
    "copilot.path.written": "written from the knowledge sources",
    "copilot.sources": "Sources: {sources}",
    "copilot.source": "{label} “{title}” ({score})",
    "copilot.how": (
        "Send, Edit or Discard it with the buttons, or type /suggest send {id}, "
        "/suggest edit {id} YOUR TEXT or /suggest discard {id}."
    ),
    "copilot.unsupported": (
        "💡 No suggested reply (#{id}) for “{question}”: the knowledge sources do not "
        "cover it, so anything suggested would be a guess. Considered: {considered}"
    ),
    "copilot.translation": (
        "🌐 Machine translation into {language}, for you only (Send sends the reply above):\n{text}"
    ),
    "copilot.live": "💡 Drafting a suggested reply, not sent to the customer…\n\n{text}",
    "copilot.live_withdrawn": (
        "💡 The suggested reply being drafted was withdrawn: the ticket changed meanwhile."
    ),
    "copilot.live_moved": "💡 This draft was finished in a new message below.",
    "copilot.no_sources": "nothing close.",
    "copilot.send_button": "Send",
    "copilot.edit_button": "Edit",
    "copilot.discard_button": "Discard",
    # What the agent is told.
    "copilot.usage": (
        "Use /suggest for a new suggestion, or /suggest send N, /suggest edit N TEXT, "
        "/suggest discard N for suggestion N."
    ),
    "copilot.unavailable": (
        "Suggested replies need knowledge sources for this customer; none are set up."
    ),
    "copilot.no_question": "Ticket #{id} has no customer message to suggest a reply to yet.",
    "copilot.drafting": "Drafting a suggested reply for ticket #{id}…",
    "copilot.no_suggestion": "Ticket #{ticket} has no suggestion #{id}.",
    "copilot.edit_how": (
        "Reply to suggestion #{id} with the text to send instead, or type "
        "/suggest edit {id} YOUR TEXT."
    ),
    "copilot.sent": "Sent suggestion #{id} to the customer.",
    "copilot.sent_edited": "Sent your edit of suggestion #{id} ({percent}% changed).",
    "copilot.discarded": "Discarded suggestion #{id}; nothing was sent.",
    "copilot.already_sent": "Suggestion #{id} was sent already.",
    "copilot.already_discarded": "Suggestion #{id} was discarded.",
    "copilot.already_ignored": "Suggestion #{id} was passed over by a later reply.",
    "copilot.already_decided": "Suggestion #{id} was dealt with already.",
    "copilot.nothing_to_send": "Suggestion #{id} has no reply to send.",
    "copilot.learn_button": "Propose as FAQ",
    # Slack's edit dialog (titles: at most 24 characters).
    "copilot.modal_title": "Edit suggestion",
    "copilot.modal_submit": "Send",
    "copilot.modal_cancel": "Cancel",
    "copilot.modal_label": "Reply to send to the customer",
    # /stats and the console.
    "copilot.stats_head": "Suggested replies: {sent} sent, {edited} sent edited, "
    "{discarded} discarded, {ignored} ignored, {pending} waiting; accepted {acceptance}.",
    "copilot.stats_agent": "  {agent}: {sent} sent, {edited} edited ({changed} changed), "
    "{discarded} discarded, {ignored} ignored",
    "copilot.stats_none": "Suggested replies: none yet.",
    "copilot.stats_na": "n/a",
}
