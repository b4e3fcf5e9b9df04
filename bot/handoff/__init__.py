"""Human handoff: a person from the support team takes over a conversation.

``config`` (support spaces, business hours), ``intent`` (a customer asking
for a person), ``desk`` (tickets: opening, relaying, agent commands) and
``worker`` (the outbox: relays, notices, ticket posts, reminders).
"""
