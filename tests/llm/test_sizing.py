from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llm.transformers import sizing
from llm.transformers.sizing import (
    CPU_BATCH_CAP,
    GPU_BATCH_CAP,
    OPENMP_SPIN_COUNT,
    ModelShape,
    ThreadTuner,
    auto_batch_size,
    default_threads,
    model_shape,
    thread_candidates,
)

ROOT = Path(__file__).resolve().parents[2]

# SmolLM2-135M: 30 layers, 3 KV heads of 64, bf16.
SMOLLM2 = ModelShape(layers=30, kv_heads=3, head_dim=64, element_bytes=2)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 2), (3, 2), (4, 3), (16, 15)])
def test_threads_take_small_machines_whole_and_leave_a_core_on_bigger_ones(
    cores: int, threads: int
) -> None:
    assert default_threads(cores) == threads


def test_usable_cores_follow_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(sizing.os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    monkeypatch.setattr(sizing.os, "sched_getaffinity", lambda pid: {0, 5, 7})
    assert sizing.usable_cores() == 3


def test_kv_bytes_per_token_and_shape_from_a_config() -> None:
    assert SMOLLM2.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2
    config = SimpleNamespace(
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576
    )
    assert model_shape(config, 2) == SMOLLM2
    # No separate KV heads (multi-head attention), head size given explicitly.
    mha = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, head_dim=32, hidden_size=9)
    assert model_shape(mha, 4) == ModelShape(2, 4, 32, 4)


def test_batch_size_is_what_memory_holds_at_full_context_capped() -> None:
    per_sequence = SMOLLM2.kv_bytes_per_token * 2048
    # A quarter of free memory for the cache: room for exactly 5 full-context rows.
    free = int(per_sequence * 5 / sizing.KV_MEMORY_SHARE)
    assert auto_batch_size(SMOLLM2, context_window=2048, free_memory=free, gpu=False) == 5
    plenty = 1 << 40
    assert auto_batch_size(SMOLLM2, context_window=2048, free_memory=plenty, gpu=False) == (
        CPU_BATCH_CAP
    )
    assert auto_batch_size(SMOLLM2, context_window=2048, free_memory=plenty, gpu=True) == (
        GPU_BATCH_CAP
    )
    # Never below one, and unknown memory leaves the compute cap.
    assert auto_batch_size(SMOLLM2, context_window=2048, free_memory=0, gpu=False) == 1
    assert auto_batch_size(SMOLLM2, context_window=2048, free_memory=None, gpu=False) == (
        CPU_BATCH_CAP
    )


def test_free_host_memory_is_a_positive_number_on_linux() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/meminfo")
    free = sizing.free_host_memory()
    assert free is not None and free > 0


@pytest.mark.parametrize(
    ("cores", "candidates"), [(1, (1,)), (2, (1, 2)), (4, (1, 3)), (9, (4, 8))]
)
def test_the_tuner_chooses_between_the_policy_and_half_of_it(
    cores: int, candidates: tuple[int, ...]
) -> None:
    assert thread_candidates(cores) == candidates


def test_the_tuner_measures_each_count_then_keeps_the_fastest_and_looks_again() -> None:
    tuner = ThreadTuner([1, 2], explore_every=8)
    step_seconds = {1: 0.06, 2: 0.09}  # one row: a single thread is faster
    chosen = []
    for _ in range(24):
        threads = tuner.choose("decode", 1)
        chosen.append(threads)
        tuner.record("decode", 1, threads, step_seconds[threads])
    assert chosen[:2] == [2, 1]  # the most threads first, then the other
    # Afterwards the faster count, but every 8th pass the other is measured again.
    assert chosen[2:] == [1 if (i + 1) % 8 else 2 for i in range(2, 24)]


def test_the_tuner_follows_a_change_of_load() -> None:
    tuner = ThreadTuner([1, 2], explore_every=4)
    for _ in range(8):
        threads = tuner.choose("decode", 16)
        tuner.record("decode", 16, threads, {1: 0.11, 2: 0.08}[threads])
    assert tuner.choose("decode", 16) == 2
    # Another process takes a core: two threads now wait for each other.
    for _ in range(40):
        threads = tuner.choose("decode", 16)
        tuner.record("decode", 16, threads, {1: 0.12, 2: 0.30}[threads])
    assert tuner.choose("decode", 16) == 1


def test_sizes_of_another_class_and_prefills_are_measured_apart() -> None:
    tuner = ThreadTuner([1, 2])
    for threads, seconds in ((2, 0.09), (1, 0.06)):
        assert tuner.choose("decode", 1) == threads
        tuner.record("decode", 1, threads, seconds)
    assert tuner.choose("decode", 1) == 1
    assert tuner.choose("decode", 16) == 2  # nothing known about 16 rows yet
    assert tuner.choose("prefill", 1) == 2


def test_one_slow_pass_does_not_decide() -> None:
    tuner = ThreadTuner([1, 2], explore_every=1000)
    times = iter([0.09, 0.06, 0.06, 0.06, 0.40, 0.06, 0.06])  # 2 threads, then 1 thread
    for _ in range(7):
        threads = tuner.choose("decode", 1)
        tuner.record("decode", 1, threads, next(times))
    assert tuner.choose("decode", 1) == 1  # 0.40: another process had the core for a while


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, OPENMP_SPIN_COUNT),
        ({"GOMP_SPINCOUNT": "5"}, "5"),  # the operator's own choice stays
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ""),  # a chosen policy is not overridden
    ],
)
def test_importing_the_backend_shortens_openmp_spinning(
    environment: dict[str, str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, llm.transformers; print(os.environ.get('GOMP_SPINCOUNT', ''))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **environment, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == expected
