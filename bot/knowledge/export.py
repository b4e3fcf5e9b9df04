"""Writing the knowledge base back out (CSV or JSONL), in a shape ``faq import`` reads."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from storage.knowledge_repo import FaqEntry

EXPORT_FORMATS = ("csv", "jsonl")
COLUMNS = ("id", "question", "answer", "alternatives", "tags", "source", "updated_at", "tenant")


def _record(entry: FaqEntry) -> dict[str, object]:
    return {
        "id": entry.external_id or "",
        "question": entry.question,
        "answer": entry.answer,
        "alternatives": list(entry.alternatives),
        "tags": list(entry.tags),
        "source": entry.source,
        "updated_at": entry.updated_at.isoformat() if entry.updated_at else "",
        "tenant": entry.tenant,
    }


def export_entries(entries: Sequence[FaqEntry], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(_record(e), ensure_ascii=False) + "\n" for e in entries)
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        row = _record(entry)
        row["alternatives"] = " | ".join(entry.alternatives)
        row["tags"] = " | ".join(entry.tags)
        writer.writerow(row)
    return out.getvalue()
