"""``deskmate widget add|list|remove|set``: the websites that embed the chat widget."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from bot.settings import Settings
from bot.widget_sites import POSITIONS, SiteError, WidgetSites

ACTOR = "cli"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    widget = subparsers.add_parser("widget", help="websites that embed the chat widget")
    sub = widget.add_subparsers(dest="widget_command", required=True, metavar="WIDGET_COMMAND")
    add = sub.add_parser("add", help="a new site: prints its key for the snippet's data-site")
    add.add_argument("origins", nargs="+", metavar="ORIGIN", help="e.g. https://shop.example")
    add.add_argument(
        "--tenant",
        default="",
        help="an installed Slack workspace's team id (default: the deployment's own tenant)",
    )
    add.add_argument("--json", action="store_true", help="print the site as one JSON object")
    listing = sub.add_parser("list", help="every site, with its origins and tenant")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    remove = sub.add_parser("remove", help="revoke a site: its snippet shows nothing any more")
    remove.add_argument("site", metavar="SITE")
    change = sub.add_parser("set", help="change how the widget looks on a site")
    change.add_argument("site", metavar="SITE")
    change.add_argument("--title", default=None, help="the panel's title")
    change.add_argument("--color", default=None, help="the accent colour, #rrggbb")
    change.add_argument("--greeting", default=None, help="the first message a visitor sees")
    change.add_argument("--position", default=None, choices=POSITIONS, help="the corner")


async def run(
    args: argparse.Namespace,
    settings: Settings,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one ``widget`` command: 2, with the reason, for a setting that cannot work."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    from bot.app import create_widget_sites
    from storage.db import Database

    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        sites = create_widget_sites(db, settings)
        try:
            return await _run(args, sites, stdout, stderr)
        except SiteError as exc:
            print(f"deskmate: {exc}", file=stderr)
            return 2
    finally:
        await db.dispose()


async def _run(args: argparse.Namespace, sites: WidgetSites, stdout: TextIO, stderr: TextIO) -> int:
    command = args.widget_command
    if command == "add":
        site = await sites.add(args.origins, tenant=args.tenant, actor=ACTOR)
        print(json.dumps(site.as_json()) if args.json else site.key, file=stdout)
        print(
            f"Secret for data-user-hash (HMAC-SHA256 of the user id): {site.secret}",
            file=stderr,
        )
        return 0
    if command == "list":
        for site in await sites.sites():
            if args.json:
                print(json.dumps(site.as_json()), file=stdout)
            else:
                print(f"{site.key}\t{site.tenant}\t{' '.join(site.origins)}", file=stdout)
        return 0
    if command == "remove":
        site = await sites.remove(args.site, actor=ACTOR)
        print(f"removed {site.key} ({' '.join(site.origins)})", file=stderr)
        return 0
    site = await sites.change(
        args.site,
        actor=ACTOR,
        title=args.title,
        color=args.color,
        greeting=args.greeting,
        position=args.position,
    )
    look = site.look
    print(
        f"{site.key}: title {look.title!r}, colour {look.color}, position {look.position}, "
        f"greeting {look.greeting!r}",
        file=stderr,
    )
    return 0
