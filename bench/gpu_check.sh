#!/usr/bin/env bash
# The GPU path in a few minutes, offline: CUDA, bf16, bitsandbytes 4-bit and 8-bit,
# and tok/s at 1, 8 and 32 concurrent conversations for bf16, 4-bit and 8-bit weights
# (eager decode step: the packed int4 step is CPU-only), and the share of the GPU's memory-bandwidth ceiling reached by one conversation.
# Exits with status 3 and a one-line reason when CUDA is not usable.
#
#   bash bench/gpu_check.sh                       # random weights, SmolLM2-1.7B architecture
#   bash bench/gpu_check.sh /models/Some-Instruct # real weights from a local folder
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# Without a model folder the weights are random: the figures are throughput only,
# the answers are gibberish. Prints markdown tables for bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Nothing may be fetched: the machine has no internet.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# Without a usable CUDA GPU: one line on stderr, exit status 3, nothing else run.
"$PYTHON" bench/gpu_check.py --probe

echo "## GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $(hostname))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "nvidia-smi not found; torch will say whether CUDA works"
fi
"$PYTHON" - <<'PY'
import importlib
for name in ("torch", "transformers", "bitsandbytes"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # reported, not fatal: gpu_check.py says what it cannot do
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
PY

args=()
if [[ $# -ge 1 ]]; then
    args+=(--model "$1")
    shift
fi
exec "$PYTHON" bench/gpu_check.py "${args[@]}" "$@"
