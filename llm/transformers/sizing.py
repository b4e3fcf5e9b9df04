"""How many torch threads and how many sequences per batch, from the machine and the model.

Both are decided once, at load, from what this process may actually use: the
CPUs of its affinity mask (a container limited with ``--cpuset-cpus`` or
``taskset`` sees fewer than ``os.cpu_count()``) and the memory still free
(the cgroup's limit when there is one). Nothing here imports torch; the
caller passes the model's shape in.

The figures behind the constants are in bench/README.md ("Threads and batch
size"), measured on a 2-vCPU machine with the embedded SmolLM2-135M.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Up to this many usable cores, torch gets all of them. The event loop's share
# of a generation is one wake-up per decode step (the scheduler batches its
# hand-overs) and a little HTTP and SQLite work, small next to a step: on 2
# cores, 2 torch threads served 16 web-chat conversations faster than 1 did,
# with the loop, the database thread and the web server in the same process.
ALL_CORES_UP_TO = 2

# Beyond a few cores one is left to the event loop, the database thread and
# the tokenizers: each parallel region waits for its slowest thread, so a
# torch thread that loses its core to them holds up the whole step.
RESERVED_CORES = 1

# A batch's sequences cost compute as well as memory. On a CPU a decode step's
# time grows with every row once the matrix products are compute-bound, and so
# does every newcomer's wait for its first token; past this many rows the extra
# throughput is small next to the added latency. A GPU stays memory-bound far
# longer.
CPU_BATCH_CAP = 32
GPU_BATCH_CAP = 128

# The batch's KV cache may take this share of the memory that was free after
# the weights were loaded; the rest is for activations, logits, prefill
# buffers and everything else the process (and the machine) does.
KV_MEMORY_SHARE = 0.25


# How long an idle OpenMP thread of torch spins before it sleeps, in libgomp's
# units. Its default (300,000, about a millisecond) assumes the process owns
# its cores; on a machine shared with other work a spinning thread takes the
# core the thread it waits for needs, and every parallel region stalls: under
# load (2 vCPUs, load average 13-20) a 22-token prefill took 10.4 s on 2 threads
# against 0.7 s on 1, and 30 products of 24 rows 1.0-1.4 s against 0.07-0.1 s;
# with 1000, those products took 0.10-0.14 s on 2 threads (bench/README.md, "A
# packed decode step"). Short enough to give the core back, long enough to stay
# awake between the back-to-back products of a step.
OPENMP_SPIN_COUNT = "1000"


def calm_openmp_waiting() -> None:
    """Shorten OpenMP's spin-wait unless the environment chose a policy.

    libgomp reads its settings once, when torch is first imported: this must
    run before that (``llm.transformers`` calls it on import).
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int) -> int:
    """Torch CPU threads for a process that may use ``cores`` CPUs."""
    if cores <= ALL_CORES_UP_TO:
        return max(1, cores)
    return cores - RESERVED_CORES


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the KV cache of one token costs: layers x KV heads x head size x element size."""

    layers: int
    kv_heads: int
    head_dim: int
    element_bytes: int

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.element_bytes


def model_shape(config: object, element_bytes: int) -> ModelShape:
    """The KV-cache shape of a transformers config (``get_text_config()`` of multimodal ones)."""
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else config
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(text, "num_key_value_heads", 0) or heads)
    head_dim = getattr(text, "head_dim", None)
    if not head_dim:
        hidden = int(getattr(text, "hidden_size", 0) or 0)
        head_dim = hidden // heads if heads else 0
    return ModelShape(layers, kv_heads, int(head_dim), element_bytes)


def auto_batch_size(
    shape: ModelShape, *, context_window: int, free_memory: int | None, gpu: bool
) -> int:
    """Sequences decoded together: what the free memory holds at full context, capped.

    Every row of the batch is padded to the longest one, so the worst case is
    every row at the full context window. Unknown free memory (or an unknown
    model shape) leaves only the compute cap.
    """
    cap = GPU_BATCH_CAP if gpu else CPU_BATCH_CAP
    per_sequence = shape.kv_bytes_per_token * max(1, context_window)
    if free_memory is None or per_sequence <= 0:
        return cap
    fits = int(free_memory * KV_MEMORY_SHARE) // per_sequence
    return max(1, min(cap, fits))


def free_host_memory() -> int | None:
    """Bytes of RAM this process could still allocate: the tighter of the machine and its cgroup."""
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_room()
    if limit is not None:
        candidates.append(limit)
    return min(candidates) if candidates else None


def _cgroup_room() -> int | None:
    base = Path("/sys/fs/cgroup")
    try:
        raw = (base / "memory.max").read_text().strip()
        if raw == "max":
            return None
        used = int((base / "memory.current").read_text().strip())
        return max(0, int(raw) - used)
    except (OSError, ValueError):
        return None


def thread_candidates(cores: int) -> tuple[int, ...]:
    """The thread counts ``ThreadTuner`` chooses between: the policy's, and half of it."""
    most = default_threads(cores)
    return tuple(sorted({max(1, most // 2), most}))


class ThreadTuner:
    """Picks torch's thread count for each forward pass from the times it measured.

    Which count is faster is not fixed. On the 2-vCPU machine a decode step of
    one sequence ran faster on 1 thread (65 vs 97 ms) while 16 sequences ran
    faster on 2 (78 vs 111 ms), and when other processes wanted the cores,
    2 threads lost at every batch size: every parallel region waits for its
    slowest thread, and a thread that lost its core holds up the whole pass.
    So each kind of pass (decode or prefill, by a power-of-two size class)
    keeps its last few times per thread count, uses the count with the lowest
    median (one pass slowed down by another process must not decide), and every
    ``explore_every`` passes measures the count it measured least recently, so
    that a change of load is noticed.
    """

    def __init__(
        self, candidates: Sequence[int], *, explore_every: int = 16, window: int = 3
    ) -> None:
        if not candidates:
            raise ValueError("at least one thread count is needed")
        # The largest first: with nothing measured yet, start where an idle machine is fastest.
        self.candidates = tuple(sorted(set(candidates), reverse=True))
        self._explore_every = explore_every
        self._window = window
        self._seconds: dict[tuple[str, int], dict[int, deque[float]]] = {}
        self._passes: dict[tuple[str, int], int] = {}
        self._measured_at: dict[tuple[str, int], dict[int, int]] = {}

    def choose(self, kind: str, size: int) -> int:
        """Threads for a pass of ``kind`` (``decode``, ``prefill``) over ``size`` rows or tokens."""
        key = (kind, max(1, size).bit_length())
        seconds = self._seconds.get(key, {})
        for threads in self.candidates:
            if threads not in seconds:
                return threads
        count = self._passes.get(key, 0)
        if len(self.candidates) > 1 and count % self._explore_every == self._explore_every - 1:
            measured = self._measured_at.get(key, {})
            return min(self.candidates, key=lambda t: measured.get(t, -1))
        return min(self.candidates, key=lambda t: statistics.median(seconds[t]))

    def record(self, kind: str, size: int, threads: int, seconds: float) -> None:
        key = (kind, max(1, size).bit_length())
        recent = self._seconds.setdefault(key, {})
        if threads not in recent:
            recent[threads] = deque(maxlen=self._window)
        recent[threads].append(seconds / max(1, size))
        count = self._passes.get(key, 0) + 1
        self._passes[key] = count
        self._measured_at.setdefault(key, {})[threads] = count
