"""Who may do what: access levels, and the immutable user ids roles are given to.

A person's level is per tenant (``ConversationRef.tenant``): owners are the ids
in ``DESKMATE_ADMINS`` and reach every tenant; admins and agents are given
their role in one tenant with ``/role``; everyone else is a customer.
"""

from __future__ import annotations

import re
from enum import IntEnum

from bot.messages import say


class Access(IntEnum):
    """What a command requires; a higher level may do everything a lower one may."""

    EVERYONE = 0
    AGENT = 1
    ADMIN = 2
    OWNER = 3

    @property
    def who(self) -> str:
        return _WHO[self]

    def who_in(self, language: str) -> str:
        """``who`` in ``language``."""
        return say(_WHO_KEYS[self], language)

    @classmethod
    def of_role(cls, role: str | None) -> Access:
        return {"admin": cls.ADMIN, "agent": cls.AGENT}.get(role or "", cls.EVERYONE)


_WHO_KEYS = {
    Access.EVERYONE: "team.who.everyone",
    Access.AGENT: "team.who.agents",
    Access.ADMIN: "team.who.admins",
    Access.OWNER: "team.who.owners",
}
_WHO = {
    Access.EVERYONE: say("team.who.everyone"),
    Access.AGENT: say("team.who.agents"),
    Access.ADMIN: say("team.who.admins"),
    Access.OWNER: say("team.who.owners"),
}


_SLACK_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_TELEGRAM_ID = re.compile(r"^\d{1,20}$")
# Platforms without a known id shape (the web chat, the terminal, tests): one
# token of the characters their ids use, never an @handle.
_OTHER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class UserIdError(ValueError):
    """The text does not name a person by their immutable id; says what would."""


def parse_user(platform: str, tenant: str, raw: str, language: str = "en") -> str:
    """The platform user id (as ``Inbound.platform_user``) that ``raw`` names
    in ``tenant`` of ``platform``; raises ``UserIdError`` for anything else
    (said in ``language``)."""
    hint = say("team.user_id_help", language)
    text = raw.strip()
    if text.startswith(f"{platform}:"):
        text = text.removeprefix(f"{platform}:")
        if platform == "slack":
            team, _, text = text.rpartition("/")
            if team != tenant:
                raise UserIdError(say("team.not_a_member", language, raw=raw, help=hint))
    if platform == "slack":
        mention = _SLACK_MENTION.match(text)
        member = mention.group(1) if mention else text
        if not _SLACK_ID.match(member):
            raise UserIdError(say("team.not_a_slack_id", language, raw=raw, help=hint))
        return f"slack:{tenant}/{member}"
    if platform == "telegram":
        if not _TELEGRAM_ID.match(text):
            raise UserIdError(say("team.not_a_telegram_id", language, raw=raw, help=hint))
        return f"telegram:{text}"
    if not _OTHER_ID.match(text):
        raise UserIdError(say("team.not_a_user_id", language, raw=raw, help=hint))
    return f"{platform}:{text}"
