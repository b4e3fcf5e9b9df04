"""What `deskmate run` imports before its first answer: the SDKs of platforms
without a token stay out of the start, and torch's import begins before the
bot's own imports (it overlaps them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Packages a start without any platform token has no use for before it answers.
NOT_BEFORE_THE_FIRST_ANSWER = ("telegram", "slack_bolt", "slack_sdk", "transformers")

# Runs `deskmate run` (bot.cli.main) on the main thread; a second thread asks the
# web chat one question and, once it is answered, prints the top-level packages
# then loaded and stops the server as SIGINT would.
_RUN_AND_ASK = """
import json, os, signal, sys, threading, time, urllib.error, urllib.request

def ask() -> None:
    url = f"http://127.0.0.1:{os.environ['PORT']}/api/chat"
    deadline = time.monotonic() + 90
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        # A message id is answered once: each try is a new message.
        body = json.dumps({"text": "hello there", "message_id": f"first-{attempt}"}).encode()
        try:
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read().decode()
            break
        except (urllib.error.URLError, ConnectionError) as exc:
            print("not yet:", exc, file=sys.stderr, flush=True)
            time.sleep(0.05)
    else:
        answer = ""
    print("answered", "hello there" in answer, flush=True)
    print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), flush=True)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ask, daemon=True).start()
from bot.cli import main
sys.exit(main(["run"]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_without_platform_tokens_answers_without_their_sdks(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DESKMATE_DATA_DIR": str(tmp_path),
        "DESKMATE_MODEL": "fake",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    for name in ("DATABASE_URL", "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "DESKMATE_LLM_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_ASK],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    lines = done.stdout.splitlines()
    assert "answered True" in lines, done.stderr[-3000:]
    loaded = set(lines[lines.index("answered True") + 1].split())
    # The run got as far as the web chat and its database: the check below means something.
    assert {"aiohttp", "sqlalchemy", "bot", "adapters"} <= loaded
    assert loaded.isdisjoint(NOT_BEFORE_THE_FIRST_ANSWER), loaded & set(NOT_BEFORE_THE_FIRST_ANSWER)


_IMPORT_ORDER = """
import sys
from llm.transformers import import_in_background

thread = import_in_background()
before = "bot.app" in sys.modules
thread.join(timeout=240)
print(before, "torch" in sys.modules, "llm.transformers.light" in sys.modules,
      "transformers" in sys.modules)
"""


def test_torch_is_imported_in_the_background_without_transformers() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ORDER],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "True", "False"]
