"""Starting, watching and stopping real ``deskmate run`` processes in end-to-end tests."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


async def spawn_deskmate(
    env: Mapping[str, str], out: IO[str] | IO[bytes] | int
) -> asyncio.subprocess.Process:
    """``deskmate run`` from the checkout, its output (both streams) going to ``out``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run",
        cwd=ROOT, env=dict(env), stdout=out, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def wait_healthy(
    proc: asyncio.subprocess.Process,
    base: str,
    logs: Callable[[], str] | None = None,
    *,
    attempts: int = 600,
) -> None:
    """Poll ``/healthz`` until it answers 200.

    Fails with the process's output when it exits first or never gets there,
    so a broken start shows why in the test report rather than as a timeout.
    """
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            if proc.returncode is not None:
                raise AssertionError(f"deskmate run exited early:\n{await _output(proc, logs)}")
            try:
                async with session.get(base + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    proc.kill()
    raise AssertionError(f"deskmate run did not become healthy:\n{await _output(proc, logs)}")


async def terminate(proc: asyncio.subprocess.Process, grace: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not stopped within ``grace`` seconds."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def _output(proc: asyncio.subprocess.Process, logs: Callable[[], str] | None) -> str:
    if logs is not None:
        return logs()
    if proc.stdout is None:
        return ""
    try:
        return (await asyncio.wait_for(proc.stdout.read(), 5)).decode(errors="replace")
    except TimeoutError:
        return "(no output within 5 s)"
