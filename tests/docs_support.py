"""Documents of every format for the document tests, written on the spot, and
a small website served on 127.0.0.1.

PDFs are written with fpdf2 (a text layer, an outline, encryption, a page
with a drawing and no text) and DOCX files with python-docx, so no binary
fixture is shipped.
"""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

MARKDOWN = """# Support Handbook

## Accounts

### Closing an account

To close your account, write to the data desk from the address you signed up
with. The account and its history are deleted after 30 days.

## Deliveries

### Lost parcels

A parcel that has not arrived after 10 working days is traced by the carrier.
If it is lost we send a new one free of charge.
"""

HTML = """<!doctype html>
<html><head><title>Store Policies</title></head>
<body>
<nav><a href="/">Home</a> Boilerplate menu ZEBRAWORD</nav>
<div class="toc"><a href="#warranty">Warranty</a> TOCWORD</div>
<main>
<h1>Store Policies</h1>
<h2 id="warranty">Warranty</h2>
<p>Every kettle carries a two-year warranty covering the heating element and
the thermostat.</p>
<h2 id="gift-cards">Gift cards</h2>
<p>Gift cards never expire and can be used in the shop and online.</p>
</main>
<footer>Copyright FLAMINGOWORD</footer>
</body></html>
"""

PDF_PAGES = (
    (
        "Cleaning",
        "Descale the kettle every four weeks with white vinegar mixed half and "
        "half with water. Rinse it twice before boiling water for drinks.",
    ),
    (
        "Troubleshooting",
        "If the red light blinks three times, the kettle is empty or the "
        "base is wet. Dry the base and refill the kettle.",
    ),
    ("Specifications", "The kettle holds 1.7 litres and draws 2200 watts."),
)

PAGES = web.AppKey("pages", dict)
STATE = web.AppKey("state", dict)

TEXT = "The helpdesk phone line is open from 7 to 19 on Saturdays and closed on Sundays.\n"

SHIPPING = """<html><head><title>Shipping</title></head><body>
<header>Shop header HEADERWORD</header>
<h1>Shipping</h1>
<h2 id="express">Express shipping</h2>
<p>Express orders placed before 14:00 are delivered the next working day for 9 euros.</p>
<h2 id="abroad">Shipping abroad</h2>
<p>Orders to Norway and Switzerland pay customs duties on delivery.</p>
</body></html>"""


def pdf_bytes(
    pages: tuple[tuple[str, str], ...] = PDF_PAGES,
    *,
    title: str = "Kettle Manual",
    password: str = "",
) -> bytes:
    """A PDF with one section per page, each in the outline."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for heading, text in pages:
        pdf.add_page()
        pdf.start_section(heading)
        pdf.set_font("helvetica", style="B", size=16)
        pdf.cell(text=heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(w=0, text=text)
    if password:
        pdf.set_encryption(owner_password="owner-secret", user_password=password)
    return bytes(pdf.output())


def scanned_pdf_bytes() -> bytes:
    """A PDF whose page is only a drawing, as a scan without OCR is."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Team Onboarding", level=1)
    document.add_heading("Parking", level=2)
    document.add_paragraph(
        "Staff park in the blue garage on level minus two. The gate code is given at reception."
    )
    document.add_heading("Lunch", level=2)
    document.add_paragraph("The canteen serves lunch from 11:30 to 14:00.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx() -> bytes:
    """A ".docx" whose one part inflates from a few KB to 300 MB."""
    out = io.BytesIO()
    archive = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    with archive, archive.open("word/document.xml", "w", force_zip64=True) as part:
        block = b"\0" * (1024 * 1024)
        for _ in range(300):
            part.write(block)
    return out.getvalue()


def write_folder(root: Path) -> Path:
    """One good document of each format in ``root`` (returned)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "handbook.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "policies.html").write_text(HTML, encoding="utf-8")
    (root / "manual.pdf").write_bytes(pdf_bytes())
    (root / "onboarding.docx").write_bytes(docx_bytes())
    (root / "notes.txt").write_text(TEXT, encoding="utf-8")
    return root


def write_bad_inputs(root: Path) -> dict[str, str]:
    """Bad documents in ``root``, by name, with words their error must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "locked.pdf").write_bytes(pdf_bytes(password="secret"))
    (root / "scanned.pdf").write_bytes(scanned_pdf_bytes())
    (root / "bomb.docx").write_bytes(zip_bomb_docx())
    (root / "broken.docx").write_bytes(b"PK\x03\x04 this is no zip at all")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02garbage\x00" * 50)
    (root / "empty.html").write_bytes(b"<html><body><nav>only a menu</nav></body></html>")
    (root / "huge.txt").write_bytes(b"big words " * 300_000)  # 3 MB
    return {
        "locked.pdf": "encrypted",
        "scanned.pdf": "no text layer; it needs OCR",
        "bomb.docx": "zip bomb",
        "broken.docx": "not a DOCX",
        "binary.txt": "binary",
        "empty.html": "no",
        "huge.txt": "size limit",
    }


def site_app(delay: float = 5.0) -> web.Application:
    """A help site: robots.txt (keeps /private/ out), a sitemap, linked pages,
    a page slower than any sane time limit and a redirect to another host."""
    state = {"etag_hits": 0}
    pages = {
        "/": "<html><head><title>Help</title></head><body><h1>Help</h1>"
        "<p>Welcome to the help pages of the kettle shop.</p>"
        '<a href="/shipping.html">Shipping</a> <a href="/private/staff.html">Staff</a>'
        '<a href="/slow.html">Slow</a> <a href="/away.html">Away</a></body></html>',
        "/shipping.html": SHIPPING,
        "/private/staff.html": "<html><body><h1>Staff</h1><p>PRIVATEWORD only.</p></body></html>",
    }

    async def page(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private/\n")
        if path == "/sitemap.xml":
            base = f"http://{request.host}"
            locs = "".join(f"<url><loc>{base}{p}</loc></url>" for p in ("/", "/shipping.html"))
            return web.Response(text=f"<urlset>{locs}</urlset>", content_type="application/xml")
        if path == "/slow.html":
            await asyncio.sleep(delay)
            return web.Response(text="<p>late</p>", content_type="text/html")
        if path == "/away.html":
            port = request.url.port
            raise web.HTTPFound(f"http://localhost:{port}/shipping.html")
        body = request.app[PAGES].get(path)
        if body is None:
            raise web.HTTPNotFound()
        etag = f'"{abs(hash(body))}"'
        if request.headers.get("If-None-Match") == etag:
            state["etag_hits"] += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=body, content_type="text/html", headers={"ETag": etag})

    app = web.Application()
    app[PAGES] = pages
    app[STATE] = state
    app.router.add_get("/{tail:.*}", page)
    return app


@contextmanager
def serve_site(delay: float = 5.0) -> Iterator[tuple[str, web.Application]]:
    """The site on 127.0.0.1 in a thread of its own: (base URL, app)."""
    loop = asyncio.new_event_loop()
    app = site_app(delay)
    runner = web.AppRunner(app)
    started = threading.Event()
    holder: dict[str, int] = {}

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}", app
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
