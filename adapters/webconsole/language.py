"""The language the console speaks to its reader: chosen on a page (``?lang=``,
then kept in a cookie), else the browser's most wanted ``Accept-Language``
that Deskmate ships (``bot.language.accepted_language``, which the web chat's
refusals read too), else English. The reader is an admin or agent of possibly
many tenants, so the console follows the person, not a tenant's ``/language``."""

from __future__ import annotations

from aiohttp import web

from bot.language import SUPPORTED_LANGUAGES, accepted_language

LANGUAGE_COOKIE = "deskmate_console_language"


def chosen_language(request: web.Request) -> str:
    """The language picked on this request's page (``?lang=sv``), "" for none."""
    raw = request.query.get("lang", "").strip().lower()
    return raw if raw in SUPPORTED_LANGUAGES else ""


def console_language(request: web.Request) -> str:
    """The language to write ``request``'s page in."""
    chosen = chosen_language(request)
    if chosen:
        return chosen
    kept = request.cookies.get(LANGUAGE_COOKIE, "")
    if kept in SUPPORTED_LANGUAGES:
        return kept
    return accepted_language(request.headers.get("Accept-Language", ""))
