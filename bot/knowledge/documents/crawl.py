"""Fetching pages and crawling a site: one host, bounded depth and count,
robots.txt honoured, redirects followed only within the host.

A start URL is crawled by its links, breadth first; a ``sitemap.xml`` (or a
sitemap index one level deep) lists the pages instead. Every failure is a
``FetchError`` with the reason the operator is shown.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import aiohttp

from bot.knowledge.documents.parsing import DocumentError, format_of

USER_AGENT = "Deskmate"
MAX_REDIRECTS = 5
_SKIPPED = re.compile(
    r"\.(png|jpe?g|gif|svg|webp|ico|css|js|json|zip|gz|tgz|bz2|xz|tar|mp[34]|avi|mov|woff2?|ttf)$",
    re.IGNORECASE,
)
_LOC = re.compile(rb"<loc>\s*([^<\s]+)\s*</loc>", re.IGNORECASE)


class FetchError(DocumentError):
    """A URL that could not be read; ``gone`` when the server says it no longer exists."""

    def __init__(
        self, message: str, reason: str = "", *, gone: bool = False, **values: object
    ) -> None:
        super().__init__(message, reason, **values)
        self.gone = gone


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after same-host redirects
    status: int  # 200, or 304 when unchanged since the ETag / Last-Modified given
    data: bytes
    content_type: str
    etag: str
    last_modified: str


def same_host(a: str, b: str) -> bool:
    left, right = urlsplit(a), urlsplit(b)
    return (left.scheme, left.netloc.lower()) == (right.scheme, right.netloc.lower())


class Fetcher:
    """An HTTP client for documents: a time limit per request, a size limit
    per body, redirects checked hop by hop."""

    def __init__(self, *, timeout: float, max_bytes: int) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": USER_AGENT},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, *, etag: str = "", last_modified: str = "") -> Fetched:
        assert self._session is not None, "use Fetcher in `async with`"
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._session.get(
                    current, headers=headers, allow_redirects=False
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        target = urljoin(current, response.headers.get("Location", ""))
                        if not same_host(target, url):
                            raise FetchError(
                                f"redirected off-host to {target}; refused",
                                "off_host",
                                target=target,
                            )
                        current = target
                        continue
                    return await self._read(current, response)
        except TimeoutError as exc:
            raise FetchError(
                f"timed out after {self.timeout:g} s", "timeout", seconds=f"{self.timeout:g}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise FetchError(
                f"could not be fetched ({exc})", "unreachable", error=str(exc)
            ) from exc
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", "redirects", most=MAX_REDIRECTS)

    async def _read(self, url: str, response: aiohttp.ClientResponse) -> Fetched:
        status = response.status
        if status in (404, 410):
            raise FetchError(f"HTTP {status}: no longer there", "gone", gone=True, status=status)
        if status >= 400:
            raise FetchError(f"HTTP {status}", "http", status=status)
        data = b""
        if status != 304:
            declared = response.content_length
            if declared is not None and declared > self.max_bytes:
                raise FetchError(
                    f"over the size limit ({declared} > {self.max_bytes} bytes)",
                    "too_large",
                    size=declared,
                    limit=self.max_bytes,
                )
            data = await response.content.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise FetchError(
                    f"over the size limit ({self.max_bytes} bytes)",
                    "over_limit",
                    limit=self.max_bytes,
                )
        return Fetched(
            url=url,
            status=status,
            data=data,
            content_type=response.headers.get("Content-Type", ""),
            etag=response.headers.get("ETag", ""),
            last_modified=response.headers.get("Last-Modified", ""),
        )


async def robots_for(fetcher: Fetcher, url: str) -> RobotFileParser:
    """The site's robots.txt rules (none when it has none or it cannot be read)."""
    parts = urlsplit(url)
    robots = RobotFileParser()
    try:
        fetched = await fetcher.get(f"{parts.scheme}://{parts.netloc}/robots.txt")
        robots.parse(fetched.data.decode("utf-8", "replace").splitlines())
    except DocumentError:
        robots.parse([])
    return robots


def links(page: Fetched) -> list[str]:
    """Same-host links of an HTML page worth reading (fragments dropped)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.data, "lxml")
    out: dict[str, None] = {}
    for tag in soup.find_all("a", href=True):
        target = urldefrag(urljoin(page.url, str(tag["href"])))[0]
        wanted = target.startswith(("http://", "https://")) and same_host(target, page.url)
        if wanted and not _SKIPPED.search(urlsplit(target).path):
            out.setdefault(target, None)
    return list(out)


def is_sitemap(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(".xml")


Found = Callable[[Fetched], None]


async def crawl(
    fetcher: Fetcher,
    start: str,
    *,
    max_pages: int,
    max_depth: int,
    on_page: Found,
    on_error: Callable[[str, DocumentError], None],
    skip: Callable[[str], bool] = lambda url: False,
) -> int:
    """Read the pages of ``start``'s site (by its links, or the sitemap it
    names) and hand each page to ``on_page`` and each failure to ``on_error``
    (url, reason); pages ``skip`` names are not fetched (they are known).
    Returns the pages visited."""
    robots = await robots_for(fetcher, start)
    queue: list[tuple[str, int]]
    follow = True
    if is_sitemap(start):
        queue = [(url, 0) for url in await sitemap_urls(fetcher, start) if same_host(url, start)]
        follow = False
    else:
        queue = [(urldefrag(start)[0], 0)]
    seen = {url for url, _ in queue}
    visited = 0
    while queue and visited < max_pages:
        url, depth = queue.pop(0)
        if not robots.can_fetch(USER_AGENT, url):
            if depth == 0 and url == urldefrag(start)[0]:
                on_error(url, DocumentError("disallowed by robots.txt", "robots"))
            continue
        visited += 1
        page: Fetched | None = None
        if not skip(url):
            try:
                page = await fetcher.get(url)
            except DocumentError as exc:
                on_error(url, exc)
                continue
            on_page(page)
        if follow and depth < max_depth:
            if page is None:
                try:
                    page = await fetcher.get(url)
                except DocumentError:
                    continue
            if format_of(page.url, page.content_type) != "html":
                continue
            for target in await asyncio.to_thread(links, page):
                if target not in seen:
                    seen.add(target)
                    queue.append((target, depth + 1))
    return visited


async def sitemap_urls(fetcher: Fetcher, url: str, *, nested: bool = True) -> list[str]:
    """The page URLs a sitemap lists; a sitemap index's sitemaps are read too."""
    fetched = await fetcher.get(url)
    found = [m.decode("utf-8", "replace") for m in _LOC.findall(fetched.data)]
    out: list[str] = []
    for loc in found:
        if nested and is_sitemap(loc) and same_host(loc, url):
            try:
                out += await sitemap_urls(fetcher, loc, nested=False)
            except DocumentError:
                continue
        else:
            out.append(loc)
    return out
