"""Should a verbatim answer in another language be translated or quoted?

Takes 20 answers of the Swedish FAQ (``tests/data/faq/construction_faq_sv.csv``,
every 25th entry, so every category is in) and asks a model to translate each
into English and into Chinese with the product's own prompt and sampling
(``bot.foreign_answers.translation_request``). Greedy decoding, one request at
a time through ``TransformersBackend``, as ``deskmate run`` serves it.

Reported per target language:
- right language: ``bot.language.detect_language`` of the translation is the target;
- numbers kept: every digit run of the original is in the translation;
- names kept: every capitalised word inside a sentence of the original
  (Helsingborg, Boverket, PBL, Zaragoza) is in the translation;
- shown: the translation passes ``bot.foreign_answers.faithful`` (right
  language, numbers and acronyms kept, half the names, no runaway), so
  ``translate`` mode would show it rather than fall back to the quote;
- seconds per translation (median, p95).

    python bench/foreign_answers.py [--model embedded] [--count 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.foreign_answers import faithful, translation_request  # noqa: E402
from bot.knowledge.passages import FAQ, Passage  # noqa: E402
from bot.language import detect_language  # noqa: E402
from llm.base import GenerationRequest  # noqa: E402

FAQ_FILE = ROOT / "tests" / "data" / "faq" / "construction_faq_sv.csv"
_DIGITS = re.compile(r"\d+")
# A capitalised word that does not start a sentence: a name.
_NAME = re.compile(r"(?<=[a-zåäö,] )([A-ZÅÄÖ][\wåäöÅÄÖ]+)")


def answers(count: int) -> list[Passage]:
    with FAQ_FILE.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // count)
    return [
        Passage(FAQ, r["id"], r["q"], r["a"], question=r["q"], language="sv")
        for r in rows[::step][:count]
    ]


def names(text: str) -> set[str]:
    return set(_NAME.findall(text))


async def run(model: str, data_dir: Path, count: int, saved: Path | None) -> list[dict[str, Any]]:
    from llm.transformers import TransformersBackend

    backend = TransformersBackend(model=model, data_dir=data_dir, max_batch_size=1)
    await backend.load()
    out: list[dict[str, Any]] = []
    try:
        for passage in answers(count):
            for target in ("en", "zh"):
                messages, sampling = translation_request(passage, source="sv", target=target)
                begun = time.monotonic()
                text = ""
                async for delta in backend.stream(GenerationRequest(messages, sampling, 600.0)):
                    text += delta.text
                seconds = time.monotonic() - begun
                kept = names(passage.text)
                out.append(
                    {
                        "id": passage.id,
                        "target": target,
                        "original": passage.text,
                        "translation": text.strip(),
                        "detected": detect_language(text),
                        "numbers_kept": set(_DIGITS.findall(passage.text))
                        <= set(_DIGITS.findall(text)),
                        "names_kept": all(n in text for n in kept),
                        "shown": faithful(passage.text, text, target, "sv"),
                        "seconds": round(seconds, 2),
                    }
                )
                print(f"  {passage.id} → {target}: {text.strip()[:70]!r}", flush=True)
                if saved is not None:
                    # After every translation: a run cut short keeps what it measured.
                    saved.write_text(json.dumps(out, indent=2, ensure_ascii=False))  # noqa: ASYNC240
    finally:
        await backend.aclose()
    return out


def summary(rows: list[dict[str, Any]]) -> None:
    # Judged again here, so a saved run is judged by today's checks.
    rows = [
        {**r, "shown": faithful(r["original"], r["translation"], r["target"], "sv")} for r in rows
    ]
    print("\n| target | right language | numbers kept | names kept | shown | s p50 | s p95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for target in ("en", "zh"):
        mine = [r for r in rows if r["target"] == target]
        if not mine:
            continue
        seconds = sorted(r["seconds"] for r in mine)
        p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]

        def share(key: str, rows: list[dict[str, Any]] = mine) -> str:
            return f"{sum(1 for r in rows if r[key])}/{len(rows)}"

        right = f"{sum(1 for r in mine if r['detected'] == target)}/{len(mine)}"
        print(
            f"| {target} | {right} | {share('numbers_kept')} | {share('names_kept')} "
            f"| {share('shown')} | {statistics.median(seconds):.1f} | {p95:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("DESKMATE_DATA_DIR", "data"))
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summarize", type=Path, help="the figures of a saved --json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.summarize:
        summary(json.loads(args.summarize.read_text()))
        return
    summary(asyncio.run(run(args.model, args.data_dir, args.count, args.json)))


if __name__ == "__main__":
    main()
