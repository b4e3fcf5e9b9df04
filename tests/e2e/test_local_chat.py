"""`deskmate run` as a subprocess, talking to its local web chat over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        # The visitor identity the server issued, sent back as a client that
        # keeps no cookies does.
        self.visitor = ""

    def post_chat(self, body: dict[str, object]) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if self.visitor:
            headers["X-Deskmate-Visitor"] = self.visitor
        request = urllib.request.Request(
            f"{self.base}/api/chat", data=json.dumps(body).encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                self.visitor = response.headers.get("X-Deskmate-Visitor") or self.visitor
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


def start_deskmate(tmp_path: Path, env: dict[str, str], timeout: float = 120) -> Server:
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DESKMATE_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"deskmate run exited early ({proc.returncode}):\n{out}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return Server(proc, port)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("deskmate run did not become healthy in time")


def stop(server: Server) -> tuple[int, str]:
    server.proc.send_signal(signal.SIGTERM)
    out, _ = server.proc.communicate(timeout=60)
    return server.proc.returncode, out.decode()


@pytest.fixture
def fake_model_server(tmp_path: Path) -> Iterator[Server]:
    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake"})
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_run_serves_local_chat_and_stops_cleanly(fake_model_server: Server) -> None:
    server = fake_model_server
    with urllib.request.urlopen(server.base + "/", timeout=10) as page:
        assert "Deskmate" in page.read().decode()
    status, text = server.post_chat(
        {"session": "session-abc123", "text": "Where is my parcel?", "message_id": "msg-000001"}
    )
    assert (status, text) == (200, "echo: Where is my parcel?")
    # A browser retry of the same message is recognised, not answered twice.
    status, _ = server.post_chat(
        {"session": "session-abc123", "text": "Where is my parcel?", "message_id": "msg-000001"}
    )
    assert status == 409
    status, text = server.post_chat({"session": "session-abc123", "text": "/help"})
    assert status == 200 and "/reset" in text
    for bad in ({"session": "x", "text": "hi"}, {"session": "session-abc123", "text": 5}):
        status, body = server.post_chat(bad)
        assert status == 400 and "error" in json.loads(body)
    code, log = stop(server)
    assert code == 0, log
    assert "Deskmate is ready" in log


def test_history_survives_restart(tmp_path: Path) -> None:
    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake"})
    server.post_chat({"session": "session-keep01", "text": "first", "message_id": "m-00000001"})
    visitor = server.visitor
    assert stop(server)[0] == 0
    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake"})
    server.visitor = visitor  # the same visitor, after the restart
    try:
        status, _ = server.post_chat(
            {"session": "session-keep01", "text": "first", "message_id": "m-00000001"}
        )
        assert status == 409, "the stored event must be recognised after a restart"
    finally:
        assert stop(server)[0] == 0


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        cwd=ROOT,
        env={**os.environ, "DESKMATE_QUANTIZATION": "2bit", "PORT": "8080"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "deskmate: configuration error: DESKMATE_QUANTIZATION must be one of none, 8bit, 4bit, "
        "not '2bit'"
    ]
