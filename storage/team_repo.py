"""Storage for the support team's controls: roles per tenant, the audit trail,
daily token quotas and what each model answer cost, ratings, and agents'
answers waiting to become FAQ entries.

Changes that staff make (a role, a quota, a proposal decided) write their
audit row in the same transaction, so the trail never misses one that
happened. Every public method is one transaction (``Database.run``). Each
concern has its module (``storage.team_roles``, ``storage.team_usage``,
``storage.team_feedback``); ``TeamRepository`` combines them.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, update

from storage.db import Database
from storage.models import model_usage, quota_notices, quotas, ratings, team_roles
from storage.suggestions_repo import SuggestionRepository
from storage.team_feedback import GapQuestion, Proposal, Rating, TeamFeedback, forget_learned
from storage.team_roles import ROLES, AuditEntry, RoleGrant, TeamRoles
from storage.team_usage import EACH_USER, TENANT, QuotaState, TeamStats, TeamUsage

__all__ = [
    "EACH_USER",
    "ROLES",
    "TENANT",
    "AuditEntry",
    "GapQuestion",
    "Proposal",
    "QuotaState",
    "Rating",
    "RoleGrant",
    "TeamRepository",
    "TeamStats",
]


class TeamRepository(TeamRoles, TeamUsage, TeamFeedback):
    """The support team's storage as one object: roles and the audit trail
    (``TeamRoles``), quotas, usage and figures (``TeamUsage``), ratings and
    learned answers (``TeamFeedback``); what agents did with suggested replies
    (``suggestions``)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.suggestions = SuggestionRepository(db)

    async def forget(self, platform_user: str) -> int:
        """Remove what the team's tables hold about a person: their ratings (with
        the questions they quote), roles, quotas and notices, and the learned
        answers that quote their questions (see ``forget_learned``: call this
        before their messages are erased); their model usage stays in the
        tenant's totals without their id. Returns the ratings removed."""

        def op(conn: Connection) -> int:
            forget_learned(conn, platform_user, sqlite=self.dialect == "sqlite")
            removed = conn.execute(delete(ratings).where(ratings.c.user_id == platform_user))
            conn.execute(delete(team_roles).where(team_roles.c.platform_user == platform_user))
            conn.execute(delete(quotas).where(quotas.c.subject == platform_user))
            conn.execute(delete(quota_notices).where(quota_notices.c.user_id == platform_user))
            conn.execute(
                update(model_usage).where(model_usage.c.user_id == platform_user).values(user_id="")
            )
            return int(removed.rowcount or 0)

        return await self._run("forget a person's team records", op)
