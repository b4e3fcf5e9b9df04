"""What the operator console may use of the bot: one narrow seam.

The console (``adapters/webconsole``) sees the bot only through
``ConsoleServices``; the composition root (``bot/app.py``) builds the concrete
``ConsoleParts`` from a running core, so the console never holds the
conversation manager or reaches the database behind a repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.handoff.desk import HelpDesk
    from bot.knowledge.documents.library import DocumentLibrary
    from bot.knowledge.knowledge_base import KnowledgeBase
    from bot.metrics import Metrics
    from bot.team.service import Team
    from bot.widget_sites import WidgetSites
    from llm.scheduler import SchedulerStats
    from storage.console_repo import ConsoleRepository
    from storage.repository import ForgetResult

StatsSource = Callable[[], "SchedulerStats | None"]


class ConsoleServices(Protocol):
    """Everything the operator console reads or changes outside its own pages."""

    @property
    def repository(self) -> ConsoleRepository:
        """The console's own queries: sessions, sign-in links, figures, transcripts."""
        ...

    @property
    def knowledge(self) -> KnowledgeBase | None:
        """The FAQ the bot answers from; None when it runs without one."""
        ...

    @property
    def team(self) -> Team:
        """Roles, ratings and the learned answers agents proposed."""
        ...

    @property
    def desk(self) -> HelpDesk:
        """The tickets handed to people, and their actions."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The counters ``/metrics`` serves (the console samples token throughput)."""
        ...

    @property
    def backend_name(self) -> str:
        """The model backend's name, as the overview shows it."""
        ...

    @property
    def model_stats(self) -> StatsSource | None:
        """The backend's queue and batch as they are now; None when it reports neither."""
        ...

    @property
    def documents(self) -> DocumentLibrary | None:
        """The document library (add by upload or URL, list, remove, sync);
        None without a knowledge base."""
        ...

    async def forget_user(self, platform_user: str) -> ForgetResult:
        """Delete everything stored about a person, as the bot's own erasure does."""
        ...

    @property
    def sites(self) -> WidgetSites | None:
        """The websites that embed the chat widget; None when the console does not manage them."""
        ...


@dataclass(frozen=True, slots=True)
class ConsoleParts:
    """The concrete ``ConsoleServices``: parts of a running core, built once."""

    repository: ConsoleRepository
    knowledge: KnowledgeBase | None
    team: Team
    desk: HelpDesk
    metrics: Metrics
    backend_name: str
    model_stats: StatsSource | None
    # The bot's own erasure: stored rows, tickets, team records and cached history alike.
    forget: Callable[[str], Awaitable[ForgetResult]]
    sites: WidgetSites | None = None
    documents: DocumentLibrary | None = None

    async def forget_user(self, platform_user: str) -> ForgetResult:
        return await self.forget(platform_user)
