"""English texts of the customer's language: ``/language``, the language a
ticket shows, and ``/translate`` in a ticket."""

from __future__ import annotations

LANGUAGES: dict[str, str] = {
    "language.command": (
        "the language customers are answered in when theirs can't be told: /language xx"
    ),
    "language.current": (
        "Customers are answered in the language they write in. When a message is too short "
        "to tell, I use the conversation's last language, else {language} ({code}, {where}). "
        "Admins change it with /language xx ({codes}); /language default goes back to the "
        "deployment's setting."
    ),
    "language.where_tenant": "set for this workspace",
    "language.where_deployment": "the deployment's setting",
    "language.set": (
        "Done: when a customer's own language can't be told, I now answer in {language} ({code})."
    ),
    "language.cleared": (
        "This workspace's own language is removed; the deployment's setting applies again: "
        "{language} ({code})."
    ),
    "language.unknown": "I don't know the language {raw!r}. Languages: {codes}.",
    "language.admins_only": "Only this workspace's admins change its language; /language shows it.",
    "handoff.ticket_language": "Language: {language} ({code})",
    "translate.command": (
        "machine translation: the customer's last message, or /translate TEXT into theirs"
    ),
    "translate.of_customer": (
        "Machine translation of the customer's last message ({source} → {target}):\n"
    ),
    "translate.for_customer": (
        "Machine translation into the customer's language ({target}); check it, then send it "
        "as your reply:\n"
    ),
    "translate.nothing": "The customer of ticket #{id} has not written anything to translate yet.",
    "translate.empty": "The model returned no translation; please try again.",
    # A verbatim answer with no version in the customer's language (bot.foreign_answers).
    "foreign.quoted": "This answer is only written in {language} so far:",
    "foreign.translated": "Machine translation from {language}:",
    "foreign.original": "The original ({language}):",
    "language.name_en": "English",
    "language.name_sv": "Swedish",
    "language.name_de": "German",
    "language.name_es": "Spanish",
    "language.name_fr": "French",
    "language.name_zh": "Chinese",
}
