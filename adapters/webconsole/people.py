"""Who is signed in to the console, and which tenants they reach.

A session belongs to a person: a platform user id with a role in
``team_roles`` (agent or admin, per tenant) or an owner from
``DESKMATE_ADMINS``; the shared ``DESKMATE_CONSOLE_TOKEN`` and a link printed
without ``--user`` are the owner's fallback. Owners reach every tenant. Anyone
else reaches the tenants where their role is at least what the page needs:
tickets need an agent, every other page an admin. Roles are read on every
request, so a role taken away takes the console away with the next click.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.team.access import Access

OWNER_FALLBACK = "console:owner"  # who the audit names for the shared sign-in


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person behind a console session: ``person`` is their platform user
    id ("" for the owner's fallback), ``roles`` their role per tenant."""

    person: str
    owner: bool
    roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """Who the audit trail records for this person's actions."""
        return self.person or OWNER_FALLBACK

    def tenants(self, level: Access) -> list[str] | None:
        """The tenants reached at ``level``, sorted; None for every tenant (owners)."""
        if self.owner:
            return None
        return sorted(t for t, role in self.roles.items() if Access.of_role(role) >= level)

    def reaches(self, tenant: str, level: Access = Access.AGENT) -> bool:
        found = self.tenants(level)
        return found is None or tenant in found
