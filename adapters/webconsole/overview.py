"""The console's overview: figures per day, charts, the live model and its settings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from markupsafe import Markup

from adapters.webconsole import charts
from adapters.webconsole.live import ModelSampler
from adapters.webconsole.pages import (
    MAX_PERIOD_DAYS,
    ConsoleContext,
    Room,
    _date,
    _int,
    _tenant,
)
from adapters.webconsole.reports import PATH_NAMES
from storage.console_outcomes import Outcomes
from storage.console_repo import Overview

# Chart colours of the rating series: greens for 👍, reds for 👎.
RATING_COLORS = ("#26a269", "#c01c28", "#8ff0a4", "#f66151")


class OverviewPages(Room):
    """The overview page and its figures as JSON (``/console/api/overview``)."""

    def __init__(self, context: ConsoleContext, *, sampler: ModelSampler) -> None:
        super().__init__(context)
        self.sampler = sampler
        self.backend_name = context.services.backend_name

    async def _overview_data(self, request: web.Request) -> dict[str, Any]:
        since, until = _period(request)
        tenant = _tenant(request)
        figures = await self.repo.overview(since, until, tenant=tenant)
        answered = {PATH_NAMES[k]: v for k, v in figures.answered.items()}
        outcomes = await self.repo.outcomes(
            since, until, tenant=tenant, idle=self.settings.handoff_idle * 60
        )
        return {
            "since": since,
            "until": until,
            "figures": figures,
            "answered": answered,
            "outcomes": outcomes,
        }

    async def overview(self, request: web.Request) -> web.StreamResponse:
        data = await self._overview_data(request)
        figures, answered = data["figures"], data["answered"]
        days = figures.days
        samples = list(self.sampler.samples)
        plots = {
            "conversations": charts.stacked_per_day(
                "Conversations per day by platform", days, figures.conversations
            ),
            "messages": charts.stacked_per_day(
                "Messages per day by platform", days, figures.messages
            ),
            "answered": charts.stacked_per_day(
                "How questions were answered, per day", days, answered
            ),
            "latency": charts.percentiles_per_day(
                "Answer latency per day, p50 and p95", days, figures.latency, "ms"
            ),
            "first_reply": charts.percentiles_per_day(
                "Time to first human reply per day, p50 and p95",
                days,
                figures.first_reply,
                "minutes",
            ),
            "ratings": charts.stacked_per_day(
                "Ratings per day, of answers and of resolved tickets",
                days,
                figures.ratings,
                colors=RATING_COLORS,
            ),
        }
        plots.update(_outcome_plots(data["outcomes"]))
        model = charts.model_live("Model queue depth and tokens per second", samples)
        if model is not None:
            plots["model"] = model
        return self._render(
            request,
            "overview.html",
            nav="overview",
            plots=plots,
            totals={name: sum(per_day.values()) for name, per_day in answered.items()},
            platform_totals={
                p: (sum(figures.conversations.get(p, {}).values()), sum(v.values()))
                for p, v in figures.messages.items()
            },
            rating_rows=_rating_rows(figures),
            latest=samples[-1] if samples else None,
            reports_queue=self.sampler.reports_queue,
            model_settings=self._model_settings(),
            **data,
            **await self._page_values(request),
        )

    async def overview_json(self, request: web.Request) -> web.StreamResponse:
        data = await self._overview_data(request)
        f = data["figures"]
        return web.json_response(
            {
                "since": data["since"].isoformat(),
                "until": data["until"].isoformat(),
                "days": f.days,
                "conversations": f.conversations,
                "messages": f.messages,
                "answered": f.answered,
                "latency_ms": {d: list(v) for d, v in f.latency.items()},
                "latency_ms_overall": list(f.latency_overall),
                "first_reply_minutes": {d: list(v) for d, v in f.first_reply.items()},
                "first_reply_minutes_overall": list(f.first_reply_overall),
                "tickets_opened": f.tickets_opened,
                "tickets_unanswered": f.tickets_unanswered,
                "ratings": f.ratings,
                "rated_good_share": f.good_share,
                "outcomes": _outcomes_json(data["outcomes"]),
                "model": self._model_settings(),
            }
        )

    def _model_settings(self) -> dict[str, str]:
        s = self.settings
        rows = {"backend": self.backend_name}
        if s.llm_url:
            rows["server"] = s.llm_url
            rows["model"] = s.llm_model_name or "(server default)"
        else:
            rows.update(
                {
                    "model": s.model,
                    "quantization": s.quantization,
                    "dtype": s.dtype,
                    "device": s.device,
                }
            )
        rows.update(
            {
                "max batch": str(s.max_batch_size),
                "max queue": str(s.max_queue),
                "max new tokens": str(s.max_new_tokens),
                "temperature": str(s.temperature),
                "embedding model": str(s.embedding_model or "all-MiniLM-L6-v2 (bundled)"),
                "FAQ thresholds": (
                    f"verbatim ≥ {_or_model(s.faq_verbatim_score)}, "
                    f"grounded ≥ {_or_model(s.faq_grounded_score)}"
                ),
            }
        )
        return rows


def _period(request: web.Request) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    until = _date(request.query.get("until", "")) or today
    since = _date(request.query.get("since", ""))
    if since is None:
        days = _int(request.query.get("days", "14")) or 14
        since = until - timedelta(days=min(days, MAX_PERIOD_DAYS) - 1)
    if since > until:
        since, until = until, since
    if (until - since).days >= MAX_PERIOD_DAYS:
        since = until - timedelta(days=MAX_PERIOD_DAYS - 1)
    return since, until


def _rating_rows(figures: Overview) -> list[tuple[str, list[int], float]]:
    """(day, count per rating series, share of 👍) for each day with a rating."""
    rows = []
    for d in figures.days:
        counts = [per_day.get(d, 0) for per_day in figures.ratings.values()]
        good = sum(
            n for name, n in zip(figures.ratings, counts, strict=True) if name.endswith("good")
        )
        if sum(counts):
            rows.append((d, counts, good / sum(counts)))
    return rows


def _outcome_plots(o: Outcomes) -> dict[str, Markup]:
    days = o.days
    return {
        "outcomes": charts.shares_per_day(
            "Outcomes per day: resolved by the bot, handed off, suggestions accepted",
            days,
            {
                "resolved by the bot": {d: o.bot_share(d) for d in days},
                "handoff rate": {d: o.handoff_rate(d) for d in days},
                "suggestions accepted": {d: o.acceptance(d) for d in days},
            },
        ),
        "path_ratings": charts.stacked_per_day(
            "Ratings per day by answer path (good)",
            days,
            {path: {d: v[0] for d, v in per_day.items()} for path, per_day in o.ratings.items()},
        ),
    }


def _outcomes_json(o: Outcomes) -> dict[str, Any]:
    return {
        "cases": o.cases,
        "handed_off": o.handed_off,
        "bot_resolved": o.bot_resolved,
        "decided": o.decided,
        "handoff_rate": o.handoff_rate(),
        "bot_resolved_share": o.bot_share(),
        "suggestion_acceptance": o.acceptance(),
        "suggestions": {d: {"sent": s, "decided": n} for d, (s, n) in o.suggestions.items()},
        "ratings_by_path": {
            path: {d: {"good": g, "bad": b} for d, (g, b) in per_day.items()}
            for path, per_day in o.ratings.items()
        },
    }


def _or_model(value: float | None) -> str:
    """A threshold as set, or the embedding model's own when unset."""
    return "the embedding model's default" if value is None else str(value)
