"""Suggested replies are written to the agents in their tenant's ``/language``
(as every other text in a ticket), not in the deployment's: the heading,
sources, buttons, the machine translation's target, and the words around a
draft streaming into the thread."""

from __future__ import annotations

from bot.handoff.copilot import suggestion_body
from bot.manager import ConversationManager
from llm.fake import FakeBackend
from tests.bot.handoff.test_copilot import (
    Desk,
    EditableChannel,
    customer_asks,
    desk,
    handed_off,
    in_ticket,
    say,
)
from tests.support import Rendered

__all__ = ["desk"]  # the fixture, shared with the copilot's other tests

GERMAN_HEAD = "💡 Antwortvorschlag #"


async def _agents_read(manager: ConversationManager, language: str) -> None:
    """What an admin's ``/language`` in the support space stores for tenant T1."""
    assert manager.languages is not None
    await manager.languages.set_tenant("slack", "T1", language, by="slack:U1")


async def test_a_suggestion_is_posted_in_the_agents_tenant_language(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    thread = await handed_off(manager, worker, backend)
    await _agents_read(manager, "de")
    backend.enqueue("Wir haben von 9 bis 17 Uhr geöffnet.")
    await customer_asks(manager, worker, "What are your opening hours?")

    ref, text, buttons, _ = next(p for p in reversed(channels["slack"].posts) if "#1" in p[1])
    assert ref.chat == "C1"
    assert text.startswith(f"{GERMAN_HEAD}1 (aus den Wissensquellen zitiert)")
    assert "Quellen: FAQ hours-1" in text and "/suggest send 1" in text
    assert "Suggested reply" not in text and "Sources:" not in text
    assert buttons == (
        ("Senden", "/suggest send 1"),
        ("Bearbeiten", "/suggest edit 1"),
        ("Verwerfen", "/suggest discard 1"),
    )
    # The customer's English reply, translated for agents who read German.
    assert "into German" in backend.requests[-1].messages[0].content
    assert "🌐 Maschinelle Übersetzung (Deutsch)" in text
    assert "Wir haben von 9 bis 17 Uhr geöffnet." in text
    assert suggestion_body(text) == "We are open 9-17."

    # The buttons' commands are the same in every language; Send sends the reply.
    sent = await manager.handle(in_ticket("/suggest send 1", thread), Rendered())
    assert sent.text == "Vorschlag #1 an die Kundin oder den Kunden gesendet."
    await worker.flush()
    assert channels["test"].texts("c1")[-1] == "Acme support: We are open 9-17."


async def test_without_a_tenant_language_the_deployments_is_kept(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    await _agents_read(manager, "sv")
    await manager.languages.clear_tenant("slack", "T1")  # type: ignore[union-attr]
    requests = len(backend.requests)
    await customer_asks(manager, worker, "What are your opening hours?")
    _, text, buttons, _ = channels["slack"].posts[-1]
    assert text.startswith("💡 Suggested reply #1")
    assert [label for label, _ in buttons] == ["Send", "Edit", "Discard"]
    assert len(backend.requests) == requests, "English agents need no translation"


async def test_a_streaming_draft_speaks_the_agents_language(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    thread = await handed_off(manager, worker, backend)
    await _agents_read(manager, "fr")
    slack = EditableChannel()
    worker.channels["slack"] = slack
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].", chunk_delay=0.15)
    backend.enqueue("Les colis pour l'Europe arrivent en 3 jours ouvrés [1].")
    await say(manager, "shipping parcels to europe please, how long", user="alice")
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()

    [texts] = [t for t in slack.shown.values() if t[0].startswith("💡 Rédaction")]
    assert texts[-1].startswith("💡 Réponse suggérée n°1 (rédigée à partir"), texts[-1]
    assert "🌐 Traduction automatique en français" in texts[-1]
    assert not any("Drafting a" in t or "Suggested reply" in t for t in slack.texts("C1"))
    discarded = await manager.handle(in_ticket("/suggest discard 1", thread), Rendered())
    assert discarded.text == "Suggestion n°1 écartée ; rien n'a été envoyé."
