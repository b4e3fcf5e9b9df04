"""The language the console speaks to its reader: chosen on a page (``?lang=``,
then kept in a cookie), else the first of the browser's ``Accept-Language``
that Deskmate ships, else English. The reader is an admin or agent of possibly
many tenants, so the console follows the person, not a tenant's ``/language``."""

from __future__ import annotations

from aiohttp import web

from bot.language import SUPPORTED_LANGUAGES

LANGUAGE_COOKIE = "deskmate_console_language"
ENGLISH = "en"


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


def accepted_language(header: str) -> str:
    """The browser's most wanted language that Deskmate ships (``Accept-Language:
    fr-CH, de;q=0.9`` → ``fr``); English when it names none."""
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        code = tag.strip().split("-")[0].lower()
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if code in SUPPORTED_LANGUAGES and weight > 0:
            # Highest weight first; among equals, the browser's own order.
            wanted.append((-weight, position, code))
    return min(wanted)[2] if wanted else ENGLISH
