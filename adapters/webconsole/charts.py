"""The overview's plots, drawn server-side as SVG by pygal.

No JavaScript: pygal's tooltip script would be fetched from a CDN, so it is
turned off, and each plot's figures are also given as a table on the page.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pygal
from markupsafe import Markup
from pygal.style import Style

from adapters.webconsole.live import Sample

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)

STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1f2328",
    foreground_strong="#1f2328",
    foreground_subtle="#57606a",
    opacity=".85",
    opacity_hover="1",
    colors=("#1a5fb4", "#c64600", "#26a269", "#9141ac", "#986a44", "#613583", "#2aa1b3"),
    font_family="system-ui, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=14,
    title_font_size=16,
)


def _config(title: str, empty: str, style: Style = STYLE) -> dict[str, object]:
    return {
        "style": style,
        "title": None,
        "js": [],
        "disable_xml_declaration": True,
        "explicit_size": False,
        "width": 760,
        "height": 360,
        "legend_at_bottom": True,
        "show_minor_x_labels": False,
        "x_label_rotation": 0,
        "truncate_legend": -1,
        "print_values": False,
        "no_data_text": empty,
        "margin": 8,
    }


def _svg(chart: pygal.graph.graph.Graph, label: str) -> Markup:
    # pygal still embeds its configuration for the tooltip script we do not load.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    # A plot is an image to assistive technology; the table next to it has the figures.
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(label)}" ', 1)
    return Markup(svg)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _short(day: str) -> str:
    return day[5:]  # MM-DD


def stacked_per_day(
    label: str,
    days: Sequence[str],
    series: Mapping[str, Mapping[str, int]],
    *,
    colors: Sequence[str] = (),
    empty: str,
) -> Markup:
    style = STYLE
    if colors:
        style = copy.copy(STYLE)
        style.colors = tuple(colors)
    chart = pygal.StackedBar(**_config(label, empty, style))
    chart.x_labels = [_short(d) for d in days]
    chart.x_labels_major = [_short(d) for d in days[:: max(1, len(days) // 10)]]
    for name, values in series.items():
        chart.add(name, [values.get(d, 0) for d in days])
    return _svg(chart, label)


def percentiles_per_day(
    label: str,
    days: Sequence[str],
    values: Mapping[str, tuple[float | None, float | None]],
    unit: str,
    *,
    empty: str,
) -> Markup:
    chart = pygal.Line(**_config(label, empty), y_title=unit, allow_interruptions=True, dots_size=3)
    chart.x_labels = [_short(d) for d in days]
    chart.x_labels_major = [_short(d) for d in days[:: max(1, len(days) // 10)]]
    chart.add("p50", [_round(values.get(d, (None, None))[0]) for d in days])
    chart.add("p95", [_round(values.get(d, (None, None))[1]) for d in days])
    return _svg(chart, label)


def shares_per_day(
    label: str,
    days: Sequence[str],
    series: Mapping[str, Mapping[str, float | None]],
    *,
    empty: str,
) -> Markup:
    """Shares (0-1) per day as percentages, one line per series; a day without
    the figure leaves a gap."""
    chart = pygal.Line(
        **_config(label, empty), y_title="%", allow_interruptions=True, dots_size=3, range=(0, 100)
    )
    chart.x_labels = [_short(d) for d in days]
    chart.x_labels_major = [_short(d) for d in days[:: max(1, len(days) // 10)]]
    for name, values in series.items():
        chart.add(name, [_percent(values.get(d)) for d in days])
    return _svg(chart, label)


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def model_live(
    label: str, samples: Sequence[Sample], *, names: tuple[str, str, str], empty: str
) -> Markup | None:
    """Queue depth and throughput over the samples, their series named ``names``
    (queue, decoding together, tokens per second); None when nothing was measured."""
    queue = [s.waiting for s in samples]
    running = [s.running for s in samples]
    rate = [_round(s.tokens_per_second) for s in samples]
    if all(v is None for v in (*queue, *running, *rate)):
        return None
    chart = pygal.Line(**_config(label, empty), dots_size=2, allow_interruptions=True)
    chart.x_labels = [datetime.fromtimestamp(s.at, UTC).strftime("%H:%M:%S") for s in samples]
    chart.x_labels_major = chart.x_labels[:: max(1, len(samples) // 8)]
    if any(v is not None for v in queue):
        chart.add(names[0], queue)
        chart.add(names[1], running)
    # On the right-hand axis only beside the queue: pygal needs a left one to pair it with.
    chart.add(names[2], rate, secondary=any(v is not None for v in queue))
    return _svg(chart, label)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
