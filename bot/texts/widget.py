"""The website chat widget's texts: what its panel shows, and its refusals."""

from __future__ import annotations

WIDGET: dict[str, str] = {
    "widget.open": "Open chat",
    "widget.close": "Close chat",
    "widget.conversation": "Conversation",
    "widget.input": "Your message",
    "widget.placeholder": "Type a message… (Enter to send)",
    "widget.send": "Send",
    "widget.human": "Talk to a person",
    "widget.greeting": "Hi! How can I help?",
    "widget.unreachable": "The chat could not be reached. Please try again.",
    "widget.email_prompt": (
        "Our team is away right now. Leave your email address and they will answer you there."
    ),
    "widget.email_label": "Your email address",
    "widget.email_send": "Leave my email",
    "widget.email_left": "My email address for an answer: {email}",
    "widget.bad_email": "That does not look like an email address.",
    "widget.no_site": "There is no such chat widget.",
    "widget.origin_refused": "This page may not use this chat widget.",
    "widget.bad_user": "The signed-in user could not be verified (data-user-hash).",
    "widget.who_are_you": "This browser's chat identity is missing or belongs to another site.",
    "widget.too_long": "Your message is too long: please keep it under {chars} characters.",
    "widget.too_fast": "You're sending messages quickly. Please wait {seconds} seconds.",
    "widget.site_busy": (
        "Many people are chatting right now. Please try again in {seconds} seconds."
    ),
}
