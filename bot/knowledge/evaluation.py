"""Retrieval evaluation against a labelled question set (a folder like tests/data/faq).

Shared by the regression test and ``bench/faq_eval.py`` so both measure the
same thing: top-1 / top-3 accuracy on reworded questions (strict: the exact
entry; lenient: any entry of its duplicate group), the policy's path shares,
how often a verbatim answer is the right entry, and how many out-of-scope
questions are escalated.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bot.knowledge.knowledge_base import KnowledgeBase


@dataclass(frozen=True, slots=True)
class EvalSet:
    reworded: list[tuple[str, str]]  # (expected id, question)
    groups: dict[str, frozenset[str]]  # id -> ids answering the same question
    out_of_scope: list[str]

    def accepted(self, expected: str) -> frozenset[str]:
        return self.groups.get(expected, frozenset({expected}))


def load_eval_set(data: Path) -> EvalSet:
    reworded = []
    for line in (data / "reworded.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            expected, question = line.split("\t", 1)
            reworded.append((expected.strip(), question.strip()))
    groups: dict[str, frozenset[str]] = {}
    for line in (data / "duplicates.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            ids = frozenset(line.split())
            for entry_id in ids:
                groups[entry_id] = ids
    oos = [
        line.strip()
        for line in (data / "out_of_scope.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return EvalSet(reworded, groups, oos)


def faq_jsonl(data: Path) -> Path:
    return data / "construction_faq_en.jsonl"


def dataset_ids(data: Path) -> list[str]:
    path = faq_jsonl(data)
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


@dataclass(slots=True)
class EvalResult:
    questions: int = 0
    top1_strict: int = 0
    top1: int = 0
    top3: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    verbatim_correct: int = 0
    out_of_scope: int = 0
    oos_escalated: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def share(self, count: int, total: int) -> float:
        return count / total if total else 0.0

    @property
    def top1_rate(self) -> float:
        return self.share(self.top1, self.questions)

    @property
    def top1_strict_rate(self) -> float:
        return self.share(self.top1_strict, self.questions)

    @property
    def top3_rate(self) -> float:
        return self.share(self.top3, self.questions)

    @property
    def refusal_rate(self) -> float:
        return self.share(self.oos_escalated, self.out_of_scope)

    @property
    def verbatim_precision(self) -> float:
        return self.share(self.verbatim_correct, self.paths["verbatim"])

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies_ms)
        return {
            "questions": self.questions,
            "top1": round(self.top1_rate, 4),
            "top1_strict": round(self.top1_strict_rate, 4),
            "top3": round(self.top3_rate, 4),
            "verbatim": round(self.share(self.paths["verbatim"], self.questions), 4),
            "grounded": round(self.share(self.paths["grounded"], self.questions), 4),
            "escalated": round(self.share(self.paths["escalated"], self.questions), 4),
            "verbatim_precision": round(self.verbatim_precision, 4),
            "out_of_scope": self.out_of_scope,
            "oos_refusal": round(self.refusal_rate, 4),
            "p50_ms": round(statistics.median(lat), 2) if lat else 0.0,
            "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 2) if lat else 0.0,
        }


async def evaluate(kb: KnowledgeBase, eval_set: EvalSet, *, tenant: str = "") -> EvalResult:
    """Run every question through ``decide`` (retrieval + policy, no model)."""
    result = EvalResult()
    await kb.retriever.refresh()
    for expected, question in eval_set.reworded:
        start = time.perf_counter()
        hits = await kb.search(question, tenant=tenant, limit=3)
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        decision = kb.decide_hits(hits)
        ok = eval_set.accepted(expected)
        refs = [h.entry.ref for h in hits]
        result.questions += 1
        result.top1_strict += bool(refs) and refs[0] == expected
        result.top1 += bool(refs) and refs[0] in ok
        result.top3 += any(r in ok for r in refs[:3])
        result.paths[decision.path] += 1
        if decision.path == "verbatim" and decision.hits[0].entry.ref in ok:
            result.verbatim_correct += 1
        if not refs or refs[0] not in ok:
            result.misses.append(f"{expected} | {question} -> {refs[:1]}")
    for question in eval_set.out_of_scope:
        decision = await kb.decide(question, tenant)
        result.out_of_scope += 1
        result.oos_escalated += decision.path == "escalated"
    return result
