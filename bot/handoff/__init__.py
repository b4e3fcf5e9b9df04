"""Human handoff: a person from the support team takes over a conversation.

``config`` (support spaces, business hours), ``intent`` (a customer asking
for a person), ``desk`` (tickets: opening, the customer's relay, the ticket
list, notices), ``actions`` (what agents do with a ticket, from chat or the
console), ``commands`` (the support space's commands) and ``worker`` (the
outbox: relays, notices, ticket posts, reminders).
"""
