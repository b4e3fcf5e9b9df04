"""bench/gpu_check: on a machine without a usable CUDA GPU it refuses at once, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}], ids=["cpu", "hidden"])
def test_without_cuda_it_exits_with_one_line_saying_why(env: dict[str, str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() and not env:
        pytest.skip("this machine has a GPU: the refusal path is not taken")
    result = run_check(env=env)
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gpu_check: cannot run: ")
    assert "CUDA" in lines[0] or "GPU" in lines[0]


def test_the_shell_wrapper_refuses_before_printing_anything_else() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal path is not taken")
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
        cwd=ROOT,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.strip().startswith("gpu_check: cannot run: ")


def test_a_dry_run_needs_no_gpu_and_says_which_decode_step_runs() -> None:
    result = run_check("--dry-run", "--concurrency", "1", "8", "32")
    assert result.returncode == 0, result.stderr
    assert "decode step: eager" in result.stdout
