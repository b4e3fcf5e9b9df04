"""What customers get from the knowledge base, measured the way an operator would.

A fresh data folder, ``deskmate faq import`` of the evaluation FAQ (which adapts
the embedding model, as it does by default), then every question of each half
of ``tests/data/faq/split.tsv`` through ``deskmate ask - --json``: the whole
answer path with the default settings, the local model's re-ranking included.

Per half it counts:

- in-scope questions answered verbatim with the right entry, or offered it
  among the "did you mean ...?" options;
- verbatim answers that quote the wrong entry (an off-topic question answered
  verbatim counts as wrong);
- off-topic questions escalated.

    python bench/faq_ask.py                 # prints the table for bench/README.md
    python bench/faq_ask.py --no-tune       # the same with the base embedding model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.knowledge import evaluation as ev  # noqa: E402

DATA = ROOT / "tests" / "data" / "faq"


def deskmate(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    command = [sys.executable, "-m", "bot", *args]
    done = subprocess.run(
        command, input=stdin, env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"`deskmate {' '.join(args)}` exited with {done.returncode}")
    return done.stdout


def outcome(answers: list[dict[str, object]], expected: list[frozenset[str]]) -> dict[str, float]:
    in_scope = [(a, e) for a, e in zip(answers, expected, strict=True) if e]
    off = [a for a, e in zip(answers, expected, strict=True) if not e]

    def ids(answer: dict[str, object], key: str) -> list[str]:
        return [str(o["id"]) for o in answer.get(key) or []]  # type: ignore[attr-defined]

    covered = sum(
        (a["path"] == "verbatim" and ids(a, "sources")[:1] and ids(a, "sources")[0] in e)
        or (a["path"] == "clarify" and any(i in e for i in ids(a, "options")))
        for a, e in in_scope
    )
    verbatim = [(a, e) for a, e in zip(answers, expected, strict=True) if a["path"] == "verbatim"]
    wrong = sum(not e or ids(a, "sources")[0] not in e for a, e in verbatim)
    return {
        "in_scope": len(in_scope),
        "off_topic": len(off),
        "covered": covered / len(in_scope) if in_scope else 0.0,
        "verbatim": len(verbatim),
        "verbatim_wrong": wrong / len(verbatim) if verbatim else 0.0,
        "wrong": wrong,
        "clarified": sum(a["path"] == "clarify" for a in answers),
        "oos_escalated": sum(a["path"] == "escalated" for a in off) / len(off) if off else 0.0,
        "other": sum(a["path"] not in ("verbatim", "clarify", "escalated") for a in answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tune", action="store_true", help="import with --no-tune")
    parser.add_argument("--json", type=Path, help="also write every answer here")
    parser.add_argument(
        "--data-dir", type=Path, help="ask again with an earlier run's folder (no import)"
    )
    args = parser.parse_args()

    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="faq-ask-"))
    # The converted local model is reused; the database and adapted models are new.
    models = ROOT / "data" / "models"
    if models.is_dir() and not (folder / "models").exists():
        (folder / "models").symlink_to(models)
    env = {**os.environ, "DESKMATE_DATA_DIR": str(folder), "LOG_LEVEL": "WARNING"}
    env.pop("DESKMATE_DATABASE_URL", None)
    print(f"data folder: {folder}", flush=True)
    if args.data_dir is None:
        started = time.perf_counter()
        no_tune = ["--no-tune"] if args.no_tune else []
        deskmate(["faq", "import", str(ev.faq_jsonl(DATA)), *no_tune], env)
        import_s = time.perf_counter() - started
        print(f"faq import{' --no-tune' if args.no_tune else ''}: {import_s:.0f} s", flush=True)

    rows = []
    dump: dict[str, list[dict[str, object]]] = {}
    for half in ev.HALVES:
        labelled = ev.labelled(ev.load_half(DATA, half))
        started = time.perf_counter()
        out = deskmate(["ask", "-", "--json"], env, stdin="\n".join(q for q, _ in labelled) + "\n")
        answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if len(answers) != len(labelled):
            raise SystemExit(f"{half}: {len(labelled)} questions asked, {len(answers)} answers")
        seconds = time.perf_counter() - started
        o = outcome(answers, [e for _, e in labelled])
        rows.append((half, o, seconds))
        dump[half] = [
            {**a, "expected": sorted(e)} for a, (_, e) in zip(answers, labelled, strict=True)
        ]
    model = "base all-MiniLM-L6-v2 (--no-tune)" if args.no_tune else "adapted on import"
    print(
        "\n| embedding model | half | in scope / off-topic | right entry verbatim or offered "
        "| verbatim answers (wrong) | clarified | off-topic escalated | other paths |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for half, o, _ in rows:
        print(
            f"| {model} | {half} | {o['in_scope']} / {o['off_topic']} | {o['covered']:.1%} "
            f"| {o['verbatim']} ({o['wrong']}, {o['verbatim_wrong']:.1%}) | {o['clarified']} "
            f"| {o['oos_escalated']:.1%} | {o['other']} |"
        )
    print(", ".join(f"{h}: {len(dump[h])} questions in {s:.0f} s" for h, _, s in rows))
    if args.json is not None:
        args.json.write_text(json.dumps(dump, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
