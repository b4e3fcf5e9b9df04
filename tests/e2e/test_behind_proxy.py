"""`deskmate run` behind a reverse proxy: the client a trusted proxy names is
the one the console limits and whose scheme marks the cookie, and `/metrics`
is for its bearer token or for this machine only."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.errors import ConfigError
from bot.settings import Settings
from tests.e2e.test_local_chat import Server, start_deskmate, stop

CONSOLE_TOKEN = "console-token-for-tests-0123456789"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"


@dataclass
class Answer:
    status: int
    cookies: list[str]
    body: str


def _call(
    server: Server, method: str, path: str, *, headers: dict[str, str], body: str = ""
) -> Answer:
    """One request, redirects not followed, as a proxy would pass it on."""
    host, port = server.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        return Answer(response.status, response.headers.get_all("Set-Cookie") or [], text)
    finally:
        conn.close()


def sign_in(server: Server, token: str, **forwarded: str) -> Answer:
    """The sign-in form filled in with ``token``, with X-Forwarded-* headers
    (``for_``, ``proto``) as a proxy adds them."""
    headers = {}
    if "for_" in forwarded:
        headers["X-Forwarded-For"] = forwarded["for_"]
    if "proto" in forwarded:
        headers["X-Forwarded-Proto"] = forwarded["proto"]
    page = _call(server, "GET", "/console/login", headers=headers)
    [login] = [c for c in page.cookies if c.startswith("deskmate_console_login=")]
    pre = login.split(";", 1)[0].split("=", 1)[1]
    return _call(
        server,
        "POST",
        "/console/login",
        headers={
            **headers,
            "Cookie": f"deskmate_console_login={pre}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=urlencode({"csrf": pre, "token": token}),
    )


def session_cookie(answer: Answer) -> str:
    [cookie] = [c for c in answer.cookies if c.startswith("deskmate_console=")]
    return cookie


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[Server]:
    server = start_deskmate(
        tmp_path,
        {
            "DESKMATE_MODEL": "fake",
            "DESKMATE_CONSOLE_TOKEN": CONSOLE_TOKEN,
            "DESKMATE_TRUSTED_PROXIES": "127.0.0.1, ::1",
        },
    )
    yield server
    stop(server)


@pytest.fixture
def exposed(tmp_path: Path) -> Iterator[Server]:
    server = start_deskmate(
        tmp_path,
        {
            "DESKMATE_MODEL": "fake",
            "DESKMATE_CONSOLE_TOKEN": CONSOLE_TOKEN,
            "DESKMATE_METRICS_TOKEN": METRICS_TOKEN,
        },
    )
    yield server
    stop(server)


def test_behind_a_trusted_proxy_sign_ins_are_limited_per_real_client(
    behind_proxy: Server,
) -> None:
    # Someone guessing, through the proxy, with a made-up address in front
    # of the one the proxy adds: still one client.
    for i in range(10):
        wrong = sign_in(behind_proxy, "wrong-token", for_=f"10.9.8.{i}, 203.0.113.5")
        assert wrong.status == 401
    assert sign_in(behind_proxy, CONSOLE_TOKEN, for_="203.0.113.5").status == 429
    # Another operator behind the same proxy is not locked out, and the
    # cookie is Secure because the proxy says the client used HTTPS.
    ok = sign_in(behind_proxy, CONSOLE_TOKEN, for_="198.51.100.7", proto="https")
    assert ok.status == 303
    assert "Secure" in session_cookie(ok)
    plain = sign_in(behind_proxy, CONSOLE_TOKEN, for_="198.51.100.8")
    assert plain.status == 303 and "Secure" not in session_cookie(plain)


def test_without_a_token_metrics_are_for_this_machine_only(behind_proxy: Server) -> None:
    refused = _call(behind_proxy, "GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
    assert refused.status == 403
    assert "this machine only" in refused.body
    local = _call(behind_proxy, "GET", "/metrics", headers={})
    assert local.status == 200 and "deskmate_events_total" in local.body
    _, out = stop(behind_proxy)
    assert "/metrics refused to 203.0.113.5" in out


def test_forwarded_headers_from_anyone_else_are_ignored(exposed: Server) -> None:
    # Not a trusted proxy: X-Forwarded-Proto does not make the cookie Secure...
    ok = sign_in(exposed, CONSOLE_TOKEN, for_="198.51.100.7", proto="https")
    assert ok.status == 303 and "Secure" not in session_cookie(ok)
    # ...and a fresh X-Forwarded-For each time does not escape the limit.
    for i in range(10):
        assert sign_in(exposed, "wrong-token", for_=f"198.51.100.{i + 10}").status == 401
    assert sign_in(exposed, CONSOLE_TOKEN, for_="198.51.100.99").status == 429


def test_with_a_token_metrics_need_it_even_from_this_machine(exposed: Server) -> None:
    missing = _call(exposed, "GET", "/metrics", headers={})
    assert missing.status == 401
    wrong = _call(exposed, "GET", "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    right = _call(exposed, "GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert right.status == 200 and "deskmate_events_total" in right.body


@pytest.mark.parametrize(
    ("env", "error"),
    [
        (
            {"DESKMATE_TRUSTED_PROXIES": "10.0.0.1, proxy.internal"},
            "DESKMATE_TRUSTED_PROXIES: 'proxy.internal' is not an IP address or CIDR range",
        ),
        (
            {"DESKMATE_TRUSTED_PROXIES": "10.0.0.1/8"},
            "DESKMATE_TRUSTED_PROXIES: '10.0.0.1/8' has bits set beyond its prefix: "
            "write 10.0.0.0/8",
        ),
        ({"DESKMATE_METRICS_TOKEN": "short"}, "DESKMATE_METRICS_TOKEN is too short"),
    ],
)
def test_bad_proxy_and_metrics_settings_stop_the_start(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(error)


def test_trusted_proxies_are_parsed() -> None:
    settings = Settings.from_env({"DESKMATE_TRUSTED_PROXIES": " 127.0.0.1 ,10.0.0.0/8,fd00::/8 "})
    assert [str(n) for n in settings.proxy_networks] == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
