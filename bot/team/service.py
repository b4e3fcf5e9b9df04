"""The team service the manager, the commands and the help desk share: who may
do what where, the audit trail, daily token quotas, and ratings."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.messages import say
from bot.team.access import Access
from bot.types import Inbound
from storage.errors import StorageError
from storage.team_repo import QuotaState, Rating, TeamRepository

if TYPE_CHECKING:
    from bot.knowledge.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)

ASK_RATING = ("off", "handoff", "all")
# What a platform may show as buttons under an invitation to rate; typing the
# command does the same everywhere.
RATING_BUTTONS: tuple[tuple[str, str], ...] = (("👍", "/rate good"), ("👎", "/rate bad"))
INVITATION = say("team.invitation")
TICKET_INVITATION = say("team.ticket_invitation")
# How long an invitation to rate stays open.
RATING_WINDOW = timedelta(hours=24)
QUOTA_NOTICE = say("team.quota_notice")
NOTHING_TO_RATE = say("team.nothing_to_rate")


def invitation(language: str) -> str:
    """The invitation to rate a bot answer, in the customer's language."""
    return say("team.invitation", language)


def ticket_invitation(language: str) -> str:
    """The invitation to rate a resolved ticket, in the customer's language."""
    return say("team.ticket_invitation", language)


def quota_notice(language: str) -> str:
    return say("team.quota_notice", language)


_GOOD = {"good", "👍", "up", "yes", "+", "+1", "helpful"}
_BAD = {"bad", "👎", "down", "no", "-", "-1", "unhelpful"}
_THUMB = re.compile(r"^\s*(👍|👎)(?:\U0001f3fb|\U0001f3fc|\U0001f3fd|\U0001f3fe|\U0001f3ff)?\s*")


@dataclass(frozen=True, slots=True)
class TeamSettings:
    """``ask_rating``: off, handoff (after a resolved ticket) or all (also after
    bot answers). Default daily token limits; 0: none unless set with /quota."""

    ask_rating: str = "handoff"
    daily_user_tokens: int = 0
    daily_tenant_tokens: int = 0

    def __post_init__(self) -> None:
        if self.ask_rating not in ASK_RATING:
            raise ValueError(f"ask_rating must be one of {', '.join(ASK_RATING)}")


def parse_rating(text: str) -> tuple[int, str] | None:
    """``"bad the link is dead"`` -> ``(-1, "the link is dead")``; None if not a rating."""
    thumb = _THUMB.match(text)
    if thumb is not None:
        return (1 if thumb.group(1) == "👍" else -1), text[thumb.end() :].strip()
    word, _, rest = text.strip().partition(" ")
    word = word.lower()
    if word in _GOOD:
        return 1, rest.strip()
    if word in _BAD:
        return -1, rest.strip()
    return None


def looks_like_rating(text: str) -> bool:
    """Whether a plain message is a thumbs-up or -down (cheap: no database)."""
    return _THUMB.match(text) is not None


def today() -> tuple[str, datetime]:
    """Today's name and its start, in UTC: daily limits reset at midnight UTC."""
    now = datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start.date().isoformat(), start


class Team:
    def __init__(
        self,
        repository: TeamRepository,
        *,
        owners: Collection[str] = (),
        settings: TeamSettings | None = None,
    ) -> None:
        self.repository = repository
        self.owners = frozenset(owners)
        self.settings = settings or TeamSettings()
        # Set by the composition root: learned answers are approved into it.
        self.knowledge: KnowledgeBase | None = None

    # -- access ------------------------------------------------------------------------

    def is_owner(self, platform_user: str) -> bool:
        return platform_user in self.owners

    async def access_of(self, inbound: Inbound) -> Access:
        """The sender's level in the tenant they write from (read fresh: a role
        change takes effect with the next message)."""
        return await self.access_in(inbound.ref.tenant, inbound.platform_user)

    async def access_in(self, tenant: str, platform_user: str) -> Access:
        if self.is_owner(platform_user):
            return Access.OWNER
        return Access.of_role(await self.repository.role_of(tenant, platform_user))

    # -- audit -------------------------------------------------------------------------

    async def audit(
        self,
        tenant: str,
        actor: str,
        action: str,
        target: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a staff action. The action already happened: a failure to record
        it is logged, not shown to the person who did it."""
        try:
            await self.repository.audit(tenant, actor, action, target, details)
        except StorageError:
            log.exception("could not record %s by %s in the audit trail", action, actor)

    # -- quotas ------------------------------------------------------------------------

    async def quota(self, tenant: str, platform_user: str) -> QuotaState:
        _, start = today()
        s = self.settings
        return await self.repository.quota_state(
            tenant,
            platform_user,
            since=start,
            default_user=s.daily_user_tokens or None,
            default_tenant=s.daily_tenant_tokens or None,
        )

    async def over_quota(self, inbound: Inbound) -> bool:
        return (await self.quota(inbound.ref.tenant, inbound.platform_user)).exhausted

    async def first_quota_notice(self, inbound: Inbound) -> bool:
        day, _ = today()
        return await self.repository.first_quota_notice(
            inbound.ref.tenant, inbound.platform_user, day
        )

    # -- ratings -----------------------------------------------------------------------

    @property
    def rates_answers(self) -> bool:
        return self.settings.ask_rating == "all"

    @property
    def rates_tickets(self) -> bool:
        return self.settings.ask_rating in ("all", "handoff")

    async def open_invitation(self, conversation_id: int) -> Rating | None:
        since = datetime.now(UTC) - RATING_WINDOW
        return await self.repository.open_invitation(conversation_id, since=since)

    async def rate(
        self,
        inbound: Inbound,
        conversation_id: int,
        text: str,
        *,
        invited: bool = False,
        language: str = "en",
    ) -> str | None:
        """Rate the conversation's open invitation from ``text``; the reply, or
        None when ``text`` is not a rating (or, with ``invited``, when nothing
        was offered for rating: a plain 👍 is then an ordinary message)."""
        parsed = parse_rating(text)
        if parsed is None:
            return None
        score, comment = parsed
        invitation = await self.open_invitation(conversation_id)
        if invitation is None:
            return None if invited else say("team.nothing_to_rate", language)
        if invitation.user_id and invitation.user_id != inbound.platform_user:
            return say("team.rating_not_yours", language)
        await self.repository.rate(invitation.id, score, comment)
        if score > 0:
            return say("team.rated_good", language)
        if comment:
            return say("team.rated_bad_with_comment", language)
        return say("team.rated_bad", language)
