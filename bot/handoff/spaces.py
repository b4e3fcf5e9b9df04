"""Which support space serves which tenant: the environment's spaces
(``DESKMATE_HANDOFF_CHAT``) and the spaces tenants' admins chose for
themselves with ``/desk``, which are stored, so every worker sees them.

A tenant's own choice takes precedence over the environment for that tenant:
with one, only the chosen chat serves it (or none, after ``/desk off``);
without one, ``HandoffSettings`` decides (own tenants, foreign workspaces,
central desks).

The async questions read the database; ``listens`` answers from a copy of the
choices refreshed every few seconds, as adapters ask it before a message is
stored and cannot wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.handoff.config import HandoffSettings, SupportSpace, customer_platform
from storage.desks_repo import DeskRepository, TenantDesk
from storage.errors import StorageError

log = logging.getLogger(__name__)

# Seconds a worker's copy of the tenants' choices is used before it is read again.
REFRESH = 5.0

Tenant = tuple[str, str]


def chosen_space(desk: TenantDesk) -> SupportSpace | None:
    """The support space a tenant chose (None: it turned the help desk off)."""
    if not desk.chat:
        return None
    return SupportSpace(desk.platform, desk.chat, desk.tenant, chosen=True)


class Spaces:
    """The deployment's support spaces and the tenants they serve."""

    def __init__(self, settings: HandoffSettings, choices: DeskRepository) -> None:
        self.settings = settings
        self.choices = choices
        self._copy: dict[Tenant, TenantDesk] = {}
        self._read_at = -REFRESH
        self._reading: asyncio.Task[None] | None = None

    # -- where a customer's ticket goes -------------------------------------------------

    async def for_tenant(self, platform: str, tenant: str) -> SupportSpace | None:
        """The space a customer of (``platform``, ``tenant``) is put through to;
        None: no person can be reached for them."""
        platform = customer_platform(platform, tenant)
        choice = await self.choices.get(platform, tenant)
        self._remember(platform, tenant, choice)
        if choice is not None:
            return chosen_space(choice)
        return self.settings.space_for(platform, tenant)

    # -- where a message was written ------------------------------------------------------

    async def of_chat(self, platform: str, tenant: str, chat: str) -> SupportSpace | None:
        """The support space a message was written in: one of the environment's,
        or the chat its tenant chose."""
        space = self.settings.space_of(platform, tenant, chat)
        if space is not None:
            return space
        choice = await self.choices.get(platform, tenant)
        self._remember(platform, tenant, choice)
        if choice is not None and choice.chat == chat:
            return chosen_space(choice)
        return None

    def listens(self, platform: str, tenant: str, chat: str) -> bool:
        """Whether a chat is a support space, from the copy of the choices (a
        copy older than ``REFRESH`` seconds is read again in the background)."""
        if self.settings.space_of(platform, tenant, chat) is not None:
            return True
        self._refresh_soon()
        choice = self._copy.get((platform, tenant))
        return choice is not None and bool(choice.chat) and choice.chat == chat

    # -- whom a space serves --------------------------------------------------------------

    async def serving(self, space: SupportSpace) -> Callable[[str, str], bool]:
        """Whether ``space`` serves (platform, tenant): a predicate over every
        tenant, with the tenants' choices read once."""
        choices = {(c.platform, c.tenant): c for c in await self.choices.all()}
        self._copy, self._read_at = choices, time.monotonic()

        def serves(platform: str, tenant: str) -> bool:
            choice = choices.get((customer_platform(platform, tenant), tenant))
            if choice is not None:
                chosen = chosen_space(choice)
                return chosen is not None and chosen.key == space.key
            return not space.chosen and self.settings.serves(space, platform, tenant)

        return serves

    async def serves(self, space: SupportSpace, platform: str, tenant: str) -> bool:
        choice = await self.choices.get(customer_platform(platform, tenant), tenant)
        self._remember(customer_platform(platform, tenant), tenant, choice)
        if choice is not None:
            chosen = chosen_space(choice)
            return chosen is not None and chosen.key == space.key
        return not space.chosen and self.settings.serves(space, platform, tenant)

    # -- a tenant's choice ----------------------------------------------------------------

    async def choose(self, platform: str, tenant: str, *, chat: str, by: str) -> None:
        """Store the tenant's support space (``chat`` "": none)."""
        await self.choices.put(platform, tenant, chat=chat, by=by)
        self._remember(platform, tenant, await self.choices.get(platform, tenant))

    async def unchoose(self, platform: str, tenant: str) -> bool:
        """Forget the tenant's choice; whether it had one."""
        removed = await self.choices.remove(platform, tenant)
        self._remember(platform, tenant, None)
        return removed

    def chat_of_space(self, platform: str, chat: str) -> bool:
        """Whether ``chat`` is one of the environment's spaces or a chosen one (by
        the copy), so the ticket list never offers a support space's own chat."""
        if any(s.platform == platform and s.chat == chat for s in self.settings.spaces):
            return True
        return any(c.platform == platform and c.chat == chat for c in self._copy.values())

    # -- the copy -------------------------------------------------------------------------

    def _remember(self, platform: str, tenant: str, choice: TenantDesk | None) -> None:
        if choice is None:
            self._copy.pop((platform, tenant), None)
        else:
            self._copy[(platform, tenant)] = choice

    def _refresh_soon(self) -> None:
        if time.monotonic() - self._read_at < REFRESH:
            return
        if self._reading is not None and not self._reading.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._read_at = time.monotonic()
        self._reading = loop.create_task(self.refresh(), name="desk-choices")

    async def refresh(self) -> None:
        """Read every tenant's choice into the copy ``listens`` answers from."""
        try:
            choices = await self.choices.all()
        except StorageError:
            log.warning("could not read the tenants' support spaces; keeping the last copy")
            return
        self._copy = {(c.platform, c.tenant): c for c in choices}
        self._read_at = time.monotonic()
