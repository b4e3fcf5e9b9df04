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
from bot.messages import say
from storage.console_outcomes import Outcomes
from storage.console_repo import Overview

# Chart colours of the rating series: greens for 👍, reds for 👎.
RATING_COLORS = ("#26a269", "#c01c28", "#8ff0a4", "#f66151")
# How an answer was given (the answer log's and the outcomes' paths), as shown.
PATH_KEYS = {
    "verbatim": "console.path.verbatim",
    "grounded": "console.path.grounded",
    "escalated": "console.path.escalated",
    "person": "console.path.person",
    "chat": "console.path.chat",
    "documents": "console.path.documents",
    "agent": "console.path.agent",
}
# The rating series as storage names them.
RATING_KEYS = {
    "answers rated good": "console.rating.answers_good",
    "answers rated bad": "console.rating.answers_bad",
    "tickets rated good": "console.rating.tickets_good",
    "tickets rated bad": "console.rating.tickets_bad",
}


def path_names(language: str) -> dict[str, str]:
    """Each answer path's name in ``language``."""
    return {path: say(key, language) for path, key in PATH_KEYS.items()}


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
        names = path_names(self.language(request))
        answered = {names[k]: v for k, v in figures.answered.items()}
        outcomes = await self.repo.outcomes(
            since, until, tenant=tenant, idle=self.settings.handoff_idle * 60
        )
        return {
            "since": since,
            "until": until,
            "figures": figures,
            "answered": answered,
            "outcomes": outcomes,
            "faq_answered": sum(
                sum(figures.answered.get(path, {}).values()) for path in ("verbatim", "grounded")
            ),
        }

    async def overview(self, request: web.Request) -> web.StreamResponse:
        data = await self._overview_data(request)
        figures, answered = data["figures"], data["answered"]
        language = self.language(request)
        samples = list(self.sampler.samples)
        ratings = {
            say(RATING_KEYS[name], language) if name in RATING_KEYS else name: per_day
            for name, per_day in figures.ratings.items()
        }
        plots = _plots(language, figures, answered, ratings)
        plots.update(_outcome_plots(language, data["outcomes"]))
        model = charts.model_live(
            say("console.chart.model", language),
            samples,
            names=(
                say("console.chart.queue", language),
                say("console.chart.decoding", language),
                say("console.chart.tokens", language),
            ),
            empty=say("console.chart.empty", language),
        )
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
            rating_names=list(ratings),
            rating_rows=_rating_rows(figures),
            path_names=path_names(language),
            latest=samples[-1] if samples else None,
            reports_queue=self.sampler.reports_queue,
            model_settings=self._model_settings(language),
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
                "model": self._model_settings("en"),
            }
        )

    def _model_settings(self, language: str) -> dict[str, str]:
        s = self.settings
        rows = {say("console.setting.backend", language): self.backend_name}
        if s.llm_url:
            rows[say("console.setting.server", language)] = s.llm_url
            rows[say("console.setting.model", language)] = s.llm_model_name or say(
                "console.setting.server_default", language
            )
        else:
            rows.update(
                {
                    say("console.setting.model", language): s.model,
                    say("console.setting.quantization", language): s.quantization,
                    say("console.setting.dtype", language): s.dtype,
                    say("console.setting.device", language): s.device,
                }
            )
        verbatim = _or_model(s.faq_verbatim_score, language)
        grounded = _or_model(s.faq_grounded_score, language)
        rows.update(
            {
                say("console.setting.max_batch", language): str(s.max_batch_size),
                say("console.setting.max_queue", language): str(s.max_queue),
                say("console.setting.max_new_tokens", language): str(s.max_new_tokens),
                say("console.setting.temperature", language): str(s.temperature),
                say("console.setting.embedding_model", language): str(
                    s.embedding_model or say("console.setting.bundled_embedder", language)
                ),
                say("console.setting.thresholds", language): say(
                    "console.setting.thresholds_value",
                    language,
                    verbatim=verbatim,
                    grounded=grounded,
                ),
            }
        )
        return rows


def _plots(
    language: str,
    figures: Overview,
    answered: dict[str, dict[str, int]],
    ratings: dict[str, dict[str, int]],
) -> dict[str, Markup]:
    days, empty = figures.days, say("console.chart.empty", language)
    return {
        "conversations": charts.stacked_per_day(
            say("console.chart.conversations", language), days, figures.conversations, empty=empty
        ),
        "messages": charts.stacked_per_day(
            say("console.chart.messages", language), days, figures.messages, empty=empty
        ),
        "answered": charts.stacked_per_day(
            say("console.chart.answered", language), days, answered, empty=empty
        ),
        "latency": charts.percentiles_per_day(
            say("console.chart.latency", language), days, figures.latency, "ms", empty=empty
        ),
        "first_reply": charts.percentiles_per_day(
            say("console.chart.first_reply", language),
            days,
            figures.first_reply,
            say("console.chart.minutes", language),
            empty=empty,
        ),
        "ratings": charts.stacked_per_day(
            say("console.chart.ratings", language),
            days,
            ratings,
            colors=RATING_COLORS,
            empty=empty,
        ),
    }


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


def _outcome_plots(language: str, o: Outcomes) -> dict[str, Markup]:
    days, empty = o.days, say("console.chart.empty", language)
    names = path_names(language)
    return {
        "outcomes": charts.shares_per_day(
            say("console.chart.outcomes", language),
            days,
            {
                say("console.chart.bot_resolved", language): {d: o.bot_share(d) for d in days},
                say("console.chart.handoff_rate", language): {d: o.handoff_rate(d) for d in days},
                say("console.chart.accepted", language): {d: o.acceptance(d) for d in days},
            },
            empty=empty,
        ),
        "path_ratings": charts.stacked_per_day(
            say("console.chart.path_ratings", language),
            days,
            {
                names.get(path, path): {d: v[0] for d, v in per_day.items()}
                for path, per_day in o.ratings.items()
            },
            empty=empty,
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


def _or_model(value: float | None, language: str) -> str:
    """A threshold as set, or the embedding model's own when unset."""
    return say("console.setting.model_default", language) if value is None else str(value)
