"""`deskmate run`'s web chat: who a visitor is, who may reach the chat, and how
often. The visitor is the identity the server signed, never an id the request
names; without DESKMATE_WEB_TOKEN only this machine is served, a proxy's
request included; wrong tokens and rotated identities do not escape limits."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_local_chat import ROOT, Server, start_deskmate, stop

WEB_TOKEN = "web-token-for-tests-0123456789"
MARKER = "my-order-number-XK42-marker"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: str


@dataclass
class Browser:
    """A client of the chat that keeps the identity it is given, as a browser
    keeps the cookie (``headers`` go with every request)."""

    server: Server
    headers: dict[str, str] = field(default_factory=dict)
    visitor: str = ""

    def call(self, method: str, path: str, body: object = None) -> Answer:
        host, port = self.server.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = dict(self.headers)
        if self.visitor:
            headers["Cookie"] = f"deskmate_visitor={self.visitor}"
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            cookies = response.headers.get_all("Set-Cookie") or []
            for cookie in cookies:
                if cookie.startswith("deskmate_visitor="):
                    self.visitor = cookie.split(";", 1)[0].split("=", 1)[1]
            return Answer(response.status, dict(response.headers), cookies, text)
        finally:
            conn.close()

    def say(self, text: str, *, session: str = "session-tab00001") -> Answer:
        return self.call("POST", "/api/chat", {"session": session, "text": text})


def stored_texts(server_data: Path, needle: str) -> list[str]:
    """Stored message and inbound texts that contain ``needle``."""
    with sqlite3.connect(server_data / "deskmate.db") as conn:
        rows = conn.execute(
            "SELECT text FROM messages WHERE text LIKE ? UNION ALL "
            "SELECT text FROM inbound_events WHERE text LIKE ?",
            (f"%{needle}%", f"%{needle}%"),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Server]:
    """`deskmate run` as `make run` starts it: no settings but a fake model."""
    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake"})
    yield server
    if server.proc.poll() is None:
        stop(server)


def test_another_visitors_session_id_cannot_forget_them(local: Server, tmp_path: Path) -> None:
    victim, attacker = Browser(local), Browser(local)
    assert victim.call("GET", "/").status == 200
    answer = victim.say(f"where is {MARKER}?", session="session-victim01")
    assert answer.status == 200 and MARKER in answer.body
    # The attacker knows the victim's conversation id (and even their visitor
    # id) and sends /forget "as" them: a forged identity is a stranger.
    forged = victim.visitor.partition(".")[0] + ".forged-signature"
    attacker.visitor = forged
    assert attacker.say("/forget", session="session-victim01").status == 200
    assert stored_texts(tmp_path / "data", MARKER), "the victim's words must stay"
    assert attacker.visitor != forged, "the stranger gets an identity of their own"
    # The victim's own /forget erases them.
    assert victim.say("/forget", session="session-victim01").status == 200
    assert stored_texts(tmp_path / "data", MARKER) == []


def test_rotating_ids_does_not_escape_the_rate_limit(local: Server) -> None:
    # One visitor is held to their limit (10 a minute), whatever session they name.
    steady = Browser(local)
    mine = [steady.say("hi", session=f"session-mine{n:04d}").status for n in range(11)]
    assert mine == [200] * 10 + [429]
    statuses = []
    for n in range(60):
        # A new made-up session each time, and no identity kept: each request
        # is a new visitor, but all come from one address (60 a minute).
        stranger = Browser(local)
        statuses.append(stranger.say("hi", session=f"session-rotate{n:03d}").status)
    assert statuses[:40] == [200] * 40
    assert statuses[-1] == 429, statuses


def test_without_a_token_the_chat_is_for_this_machine_only(local: Server) -> None:
    # Passed on by a reverse proxy on this machine: not local.
    proxied = Browser(local, headers={"X-Forwarded-For": "203.0.113.5"})
    assert proxied.call("GET", "/").status == 403
    refused = proxied.say("hello")
    assert refused.status == 403 and "DESKMATE_WEB_TOKEN" in json.loads(refused.body)["error"]
    assert proxied.call("GET", "/api/outbox").status == 403
    # A browser on this machine needs nothing, and is given its identity.
    browser = Browser(local)
    page = browser.call("GET", "/")
    assert page.status == 200 and "<html" in page.body.lower()
    [cookie] = [c for c in page.cookies if c.startswith("deskmate_visitor=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert browser.say("hello").status == 200
    _, log = stop(local)
    assert "web chat: refused a request from 127.0.0.1" in log


def test_a_proxy_that_is_trusted_is_not_this_machine(tmp_path: Path) -> None:
    server = start_deskmate(
        tmp_path, {"DESKMATE_MODEL": "fake", "DESKMATE_TRUSTED_PROXIES": "127.0.0.1,::1"}
    )
    try:
        assert Browser(server).call("GET", "/").status == 403
    finally:
        _, log = stop(server)
    assert "DESKMATE_TRUSTED_PROXIES is set but DESKMATE_WEB_TOKEN is not" in log


def test_wrong_tokens_are_limited_per_address(tmp_path: Path) -> None:
    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake", "DESKMATE_WEB_TOKEN": WEB_TOKEN})
    try:
        guesser = Browser(server)
        for n in range(10):
            assert guesser.call("GET", f"/?token=guess-{n:02d}-0123456789").status == 401
        limited = guesser.call("GET", f"/?token={WEB_TOKEN}")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        bearer = Browser(server, headers={"Authorization": f"Bearer {WEB_TOKEN}"})
        assert bearer.say("hi").status == 429
    finally:
        _, log = stop(server)
    assert log.count("web chat: wrong access token from 127.0.0.1") == 10


def test_a_short_web_token_stops_the_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "DESKMATE_MODEL": "fake",
            "DESKMATE_WEB_TOKEN": "short-token",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "deskmate: configuration error: DESKMATE_WEB_TOKEN is too short to guess safely: "
        "use at least 16 random characters"
    )
