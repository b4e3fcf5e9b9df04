"""Human handoff: a person from the support team takes over a conversation.

``config`` (support spaces, business hours), ``spaces`` (which space serves
which tenant: the environment's and the tenants' own choices), ``intent`` (a
customer asking for a person), ``desk`` (tickets: opening, the customer's
relay, the ticket list, notices), ``actions`` (what agents do with a ticket,
from chat or the console), ``commands`` (the support space's commands),
``desk_command`` (``/desk``, a tenant's admin choosing its support space) and
``worker`` (the outbox: relays, notices, ticket posts, reminders).
"""
