"""Retrieval evaluation against a labelled question set (a folder like tests/data/faq).

Shared by the regression test and ``bench/faq_eval.py`` so both measure the
same thing: top-1 / top-3 accuracy on reworded questions (strict: the exact
entry; lenient: any entry of its duplicate group), the policy's path shares,
how often a verbatim answer is the right entry, and how many out-of-scope
questions are escalated.
"""

from __future__ import annotations

import json
import math
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
        found = await kb.lookup(question, tenant=tenant, limit=3)
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        hits = found.passages
        decision = kb.decide_hits(hits, found.scope)
        ok = eval_set.accepted(expected)
        refs = [h.ref for h in hits]
        result.questions += 1
        result.top1_strict += bool(refs) and refs[0] == expected
        result.top1 += bool(refs) and refs[0] in ok
        result.top3 += any(r in ok for r in refs[:3])
        result.paths[decision.path] += 1
        if decision.path == "verbatim" and decision.hits[0].ref in ok:
            result.verbatim_correct += 1
        if not refs or refs[0] not in ok:
            result.misses.append(f"{expected} | {question} -> {refs[:1]}")
    for question in eval_set.out_of_scope:
        decision = await kb.decide(question, tenant)
        result.out_of_scope += 1
        result.oos_escalated += decision.path == "escalated"
    return result


# -- a tuning half and a test half ---------------------------------------------------

SPLIT_FILE = "split.tsv"
HALVES = ("tune", "test")


def make_split(data: Path, *, seed: int = 0) -> dict[str, str]:
    """Assign every entry (whole duplicate groups together) and every off-topic
    question to the tuning or the test half, in a random order fixed by ``seed``.

    Groups are dealt in that order to whichever half has fewer questions so far,
    so both halves get about as many questions.
    """
    import random

    eval_set = load_eval_set(data)
    rng = random.Random(seed)
    asked = Counter(e for e, _ in eval_set.reworded)
    groups = sorted({tuple(sorted(eval_set.accepted(e))) for e in dataset_ids(data)})
    rng.shuffle(groups)
    count = dict.fromkeys(HALVES, 0)
    out: dict[str, str] = {}
    for group in groups:
        half = min(HALVES, key=lambda h: (count[h], rng.random()))
        count[half] += sum(asked[e] for e in group)
        out.update(dict.fromkeys(group, half))
    order = list(range(len(eval_set.out_of_scope)))
    rng.shuffle(order)
    for position, n in enumerate(order):
        out[f"oos:{n}"] = HALVES[position % 2]
    return dict(sorted(out.items(), key=lambda kv: (kv[0].startswith("oos:"), kv[0])))


def write_split(data: Path, split: dict[str, str], *, seed: int) -> None:
    lines = [
        f"# Evaluation halves (bot.knowledge.evaluation.make_split, seed {seed}): thresholds "
        "are chosen on 'tune', figures are published on 'test'. Entries of one duplicate "
        "group share a half; oos:N is line N of out_of_scope.txt (comments skipped).",
        *(f"{key}\t{half}" for key, half in split.items()),
    ]
    (data / SPLIT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_half(data: Path, half: str) -> EvalSet:
    """The questions of one half (``tune`` or ``test``) of the stored split."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, not {half!r}")
    split: dict[str, str] = {}
    for line in (data / SPLIT_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("\t")
            split[key] = value.strip()
    full = load_eval_set(data)
    return EvalSet(
        [(e, q) for e, q in full.reworded if split.get(e) == half],
        full.groups,
        [q for n, q in enumerate(full.out_of_scope) if split.get(f"oos:{n}") == half],
    )


# -- precision and coverage at each threshold ------------------------------------------


@dataclass(frozen=True, slots=True)
class Scored:
    """One labelled question as retrieval saw it."""

    question: str
    expected: frozenset[str]  # accepted entry ids; empty for an off-topic question
    refs: tuple[str, ...]  # retrieved ids, best first
    confidence: float  # dense score of the best entry
    margin: float  # its lead over the runner-up
    scope: float  # the question's scope score

    @property
    def in_scope(self) -> bool:
        return bool(self.expected)

    @property
    def right(self) -> bool:
        return bool(self.refs) and self.refs[0] in self.expected

    def offered(self, options: int) -> bool:
        return any(r in self.expected for r in self.refs[:options])


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    answered: int  # questions above the threshold (would be answered verbatim)
    wrong: int  # of those, wrong entry or off-topic
    coverage: float  # in-scope questions answered verbatim and right / in-scope questions
    oos_escalated: float  # off-topic questions under ``threshold`` / off-topic questions

    @property
    def precision(self) -> float:
        return (self.answered - self.wrong) / self.answered if self.answered else 1.0


def verbatim_curve(scored: list[Scored], *, margin: float = 0.0) -> list[CurvePoint]:
    """Verbatim precision and coverage with the verbatim threshold at 0.30 .. 0.95."""
    in_scope = sum(s.in_scope for s in scored)
    off = len(scored) - in_scope
    out: list[CurvePoint] = []
    for step in range(30, 96):
        threshold = step / 100
        above = [s for s in scored if s.confidence >= threshold and s.margin >= margin]
        wrong = sum(not s.right for s in above)
        right = sum(s.right for s in above)
        escalated = sum(1 for s in scored if not s.in_scope and s.confidence < threshold)
        out.append(
            CurvePoint(
                threshold,
                len(above),
                wrong,
                right / in_scope if in_scope else 0.0,
                escalated / off if off else 1.0,
            )
        )
    return out


def recommend_verbatim(
    curve: list[CurvePoint], precision: float, *, min_answered: int | None = None
) -> float | None:
    """The lowest threshold from which on every higher one keeps ``precision``.

    Requiring it of every higher threshold, not just one, keeps a lucky dip in
    a small sample from being chosen; thresholds answering fewer than
    ``min_answered`` questions (default: a fifth of them, at least 5) are too
    few to judge and are skipped. None when no threshold reaches it.
    """
    if min_answered is None:
        min_answered = max(5, (curve[0].answered if curve else 0) // 5)
    chosen: float | None = None
    for point in reversed(curve):
        if point.answered < min_answered:
            continue
        if point.precision < precision:
            break
        chosen = point.threshold
    return chosen


def recommend_escalation(scored: list[Scored], refusal: float = 0.95) -> float | None:
    """The lowest threshold on the scope score under which ``refusal`` of the
    off-topic questions fall."""
    off = sorted(s.scope for s in scored if not s.in_scope)
    if not off:
        return None
    index = min(len(off) - 1, int(refusal * len(off) + 0.999999) - 1)
    # The next hundredth strictly above that score, so that it falls under.
    threshold = math.floor(off[index] * 100 + 1) / 100
    return threshold if threshold > off[index] else round(threshold + 0.01, 2)


async def score_questions(
    kb: KnowledgeBase,
    questions: list[tuple[str, frozenset[str]]],
    *,
    tenant: str = "",
    limit: int = 3,
) -> list[Scored]:
    """Retrieve each (question, accepted ids) once; no answers are logged."""
    await kb.retriever.refresh()
    out: list[Scored] = []
    for question, expected in questions:
        found = await kb.lookup(question, tenant=tenant, limit=max(limit, 2))
        decision = kb.decide_hits(found.passages, found.scope)
        out.append(
            Scored(
                question,
                expected,
                tuple(h.ref for h in found.passages),
                decision.confidence,
                decision.margin,
                found.scope,
            )
        )
    return out


def labelled(eval_set: EvalSet) -> list[tuple[str, frozenset[str]]]:
    return [(q, eval_set.accepted(e)) for e, q in eval_set.reworded] + [
        (q, frozenset()) for q in eval_set.out_of_scope
    ]


def outcomes(
    scored: list[Scored], *, verbatim: float, margin: float, grounded: float, options: int = 3
) -> dict[str, float | int]:
    """What customers get under these thresholds with "did you mean" between them.

    ``covered``: in-scope questions answered verbatim with the right entry or
    offered it among the options; ``verbatim_wrong``: verbatim answers that
    quote the wrong entry (an off-topic question answered verbatim counts);
    ``oos_escalated``: off-topic questions whose scope score is under ``grounded``.
    """
    in_scope = [s for s in scored if s.in_scope]
    off = [s for s in scored if not s.in_scope]
    kept = [s for s in scored if s.scope >= grounded]
    quoted = [s for s in kept if s.confidence >= verbatim and s.margin >= margin]
    quoted_ids = {id(s) for s in quoted}
    clarified = [s for s in kept if id(s) not in quoted_ids]
    covered = sum(s.right for s in in_scope if id(s) in quoted_ids) + sum(
        s.offered(options) for s in clarified if s.in_scope
    )
    wrong = sum(not s.right for s in quoted)
    return {
        "in_scope": len(in_scope),
        "off_topic": len(off),
        "covered": round(covered / len(in_scope), 4) if in_scope else 0.0,
        "verbatim": len(quoted),
        "verbatim_wrong": round(wrong / len(quoted), 4) if quoted else 0.0,
        "clarified": len(clarified),
        "oos_escalated": round(sum(s.scope < grounded for s in off) / len(off), 4) if off else 0.0,
        "top1": round(sum(s.right for s in in_scope) / len(in_scope), 4) if in_scope else 0.0,
        "top3": round(sum(s.offered(3) for s in in_scope) / len(in_scope), 4) if in_scope else 0.0,
    }
