"""Handoff settings: where tickets go, and when the team is in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The website widget's conversations: a site belongs to the deployment's own
# tenant, or to the Slack workspace it names.
WIDGET = "widget"
OWN_WIDGET_TENANT = "local"


def customer_platform(platform: str, tenant: str) -> str:
    """The platform whose tenant a customer belongs to, for choosing their
    support space: a widget site of a Slack workspace is that workspace's."""
    if platform == WIDGET and tenant != OWN_WIDGET_TENANT:
        return "slack"
    return platform


class HandoffConfigError(ValueError):
    """A handoff setting cannot be read; the message says how to write it."""


@dataclass(frozen=True, slots=True)
class SupportSpace:
    """A place agents work tickets: a Telegram group or a Slack channel.

    ``tenant`` is the Slack workspace ("" for Telegram, where the bot is the tenant).
    ``central``: a central desk (written ``*slack:T/C``), which serves every tenant.
    ``chosen``: a tenant's own choice (``/desk here``), which serves that tenant
    only (``tenant`` is then always set, for Telegram the bot).
    """

    platform: str
    chat: str
    tenant: str = ""
    central: bool = False
    chosen: bool = False

    @property
    def key(self) -> str:
        if self.platform == "slack":
            return f"slack:{self.tenant}/{self.chat}"
        return f"{self.platform}:{self.chat}"

    def holds(self, platform: str, tenant: str, chat: str) -> bool:
        return (
            platform == self.platform
            and chat == self.chat
            and (not self.tenant or tenant == self.tenant)
        )


_TELEGRAM = re.compile(r"^telegram:(-?\d{1,20})$")
_SLACK = re.compile(r"^slack:([A-Z0-9]{2,20})/([A-Z0-9]{2,20})$")


def parse_spaces(raw: str) -> tuple[SupportSpace, ...]:
    """``telegram:-1001234,slack:T0123/C0456,*slack:T0OPS/C0DESK`` -> support
    spaces, in order; a leading ``*`` makes a central desk."""
    spaces = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        central = item.startswith("*")
        address = item.removeprefix("*").strip()
        if match := _TELEGRAM.match(address):
            spaces.append(SupportSpace("telegram", match.group(1), central=central))
        elif match := _SLACK.match(address):
            spaces.append(SupportSpace("slack", match.group(2), match.group(1), central=central))
        else:
            raise HandoffConfigError(
                f"DESKMATE_HANDOFF_CHAT: {item!r} is not a support space; write "
                "telegram:<group chat id> (e.g. telegram:-1001234567890) or "
                "slack:<team id>/<channel id> (e.g. slack:T0123ABCD/C0456EFGH), comma-separated; "
                "a leading * makes a central desk that serves every tenant "
                "(e.g. *slack:T0123ABCD/C0456EFGH)"
            )
    return tuple(spaces)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening hours in one time zone, e.g. ``Mon-Fri 09:00-17:00 Europe/Stockholm``."""

    days: frozenset[int]
    opens: time
    closes: time
    zone: str
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, raw: str) -> BusinessHours:
        usage = (
            "DESKMATE_BUSINESS_HOURS: write days, hours and a time zone, e.g. "
            "'Mon-Fri 09:00-17:00 Europe/Stockholm' or 'Mon,Wed,Fri 08:30-16:00 UTC'"
        )
        parts = raw.split()
        if len(parts) != 3:
            raise HandoffConfigError(f"{usage}; got {raw!r}")
        day_spec, hour_spec, zone = parts
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise HandoffConfigError(f"{usage}; {zone!r} is not a time zone name") from None
        days: set[int] = set()
        for chunk in day_spec.lower().split(","):
            first, _, last = chunk.partition("-")
            if first[:3] not in DAYS or (last and last[:3] not in DAYS):
                raise HandoffConfigError(f"{usage}; {chunk!r} is not a day or a range of days")
            start, end = DAYS.index(first[:3]), DAYS.index((last or first)[:3])
            span = range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)]
            days.update(span)
        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", hour_spec)
        if match is None:
            raise HandoffConfigError(f"{usage}; {hour_spec!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or ((h1, m1) >= (h2, m2) and h2 != 24):
            raise HandoffConfigError(f"{usage}; {hour_spec!r} is not a time range within a day")
        closes = time(23, 59, 59) if h2 == 24 else time(h2, m2)
        return cls(frozenset(days), time(h1, m1), closes, zone, raw.strip())

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.zone))
        return local.weekday() in self.days and self.opens <= local.time() < self.closes


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    """Where tickets go and the team's clocks.

    The deployment's own tenants are the Telegram bot, the web chat and, with
    one ``SLACK_BOT_TOKEN``, its workspace; with ``foreign_slack`` (Slack
    installed through OAuth) every Slack workspace is a foreign tenant. A
    Telegram space, and a Slack space while Slack runs on one token, serve the
    deployment's own tenants; a foreign workspace's space serves that
    workspace only; a central desk serves every tenant.
    """

    spaces: tuple[SupportSpace, ...] = ()
    signature: str = "Support team"
    idle: timedelta = timedelta(hours=24)
    remind: timedelta = timedelta(minutes=10)
    hours: BusinessHours | None = None
    foreign_slack: bool = False

    @property
    def connected(self) -> bool:
        return bool(self.spaces)

    def own(self, platform: str) -> bool:
        """Whether a tenant of ``platform`` is one of the deployment's own."""
        return platform != "slack" or not self.foreign_slack

    def serves(self, space: SupportSpace, platform: str, tenant: str) -> bool:
        """Whether ``space`` serves the customers of (``platform``, ``tenant``) as
        the environment says (a tenant's own choice is not looked at here)."""
        platform = customer_platform(platform, tenant)
        if space.central:
            return True
        if space.chosen:
            return (space.platform, space.tenant) == (platform, tenant)
        if self.own(space.platform):
            return self.own(platform)
        return platform == space.platform and tenant == space.tenant

    def space_for(self, platform: str, tenant: str) -> SupportSpace | None:
        """Where a customer's ticket goes as the environment says: a space in
        their own workspace when there is one, else the first listed space that
        serves them, a central desk last; None when no space serves them."""
        platform = customer_platform(platform, tenant)
        serving = [s for s in self.spaces if self.serves(s, platform, tenant)]
        for space in serving:
            if space.platform == platform and space.tenant and space.tenant == tenant:
                return space
        return next((s for s in serving if not s.central), serving[0] if serving else None)

    def space_of(self, platform: str, tenant: str, chat: str) -> SupportSpace | None:
        """The support space of the environment a message was written in, if any."""
        return next((s for s in self.spaces if s.holds(platform, tenant, chat)), None)
