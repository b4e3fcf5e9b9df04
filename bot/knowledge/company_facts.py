"""Whether a message asks about the company's own facts.

Hours, prices, refunds, orders, deliveries, accounts, payments, policies and
ways to reach the company are facts only the company's knowledge can give;
a model asked them without any writes something plausible and wrong ("8am-5pm
Monday to Friday", seven invented steps to reset a password). In support
mode such a question without a knowledge source behind it is escalated
instead (``bot.routing.PlanRoute``).

Two checks, either of which suffices. Patterns over English (and over
Swedish, German, Spanish, French and Chinese: ``company_facts_languages``): a subject the
company owns, asked of the company (you, your, my order, the plan, how long
does ...) or in the terse words of a support chat ("refund status"). And,
for wordings no pattern foresaw, the shipped embedding model: a question
closer to the shipped company questions (``company_facts.tsv``) than to the
shipped general ones by ``MARGIN``. Neither fires on a request to write or
explain something in general ("write a complaint about a late parcel",
"what is a chargeback"). The patterns cost microseconds and need no model,
so they run even with no knowledge base; the embedding adds one sentence
embedding (about 10 ms on two CPU cores). ``bench/company_facts.py``
measures both on a held-out set (bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.knowledge.company_facts_languages import subject_in_other_languages
from llm.embeddings import Embedder

log = logging.getLogger(__name__)

_FLAGS = re.IGNORECASE

# The subjects, by the name a log line gives them. Each pattern names a
# subject only the company can answer for when asked of it.
_SUBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, _FLAGS))
    for name, pattern in (
        (
            "hours",
            r"\b(?:opening|business|office|support|working|store) hours\b|\bhours\b"
            r"|\bopen(?:ed)? (?:on|at|today|tomorrow|late|until|till|during|over|this)\b"
            r"|\b(?:are|is) (?:you|the \w+|your \w+) (?:still )?open\b|\bopen\?"
            r"|\bclos(?:e|es|ed|ing) (?:on|at|today|tomorrow|early|for)\b"
            r"|\bwhat time do you\b|\bwhen do you (?:open|close)\b|\bclosed\b"
            r"|\b(?:you|you guys|y'all|u|shop|store|office)\b(?: \w+){0,2} open\b|\bopen now\b",
        ),
        (
            "prices",
            r"\bprices?\b|\bpricing\b|\bcosts?\b|\bhow much\b|\bfees?\b|\bcharge[sd]?\b"
            r"|\bdiscounts?\b|\bpromo(?:tion)? ?codes?\b|\bcoupons?\b|\bvouchers?\b|\bvat\b"
            r"|\bfree trial\b|\bsales?\b|\bloyalty\b|\breward points?\b|\bprice match",
        ),
        (
            "plans",
            r"\bsubscriptions?\b|\bmembership\b|\b(?:basic|pro|premium|enterprise|free|business)"
            r" (?:plan|tier)\b|\b(?:up|down)grade\b|\bmy plan\b",
        ),
        (
            "refunds",
            r"\brefund(?:s|ed)?\b|\bmoney back\b|\breturns?\b|\breturn (?:an?|my|the|this|it)\b"
            r"|\bexchange\b|\bwarrant(?:y|ies)\b|\bguarantee\b|\bchargebacks?\b",
        ),
        (
            "orders",
            r"\borders?\b|\bordered\b|\bpackages?\b|\bparcels?\b|\bdeliver(?:y|ies|ed)?\b"
            r"|\bship(?:s|ping|ped)?\b|\btrack(?:ing)?\b|\bcouriers?\b|\bdispatch|\bin stock\b"
            r"|\bpick ?up\b|\bdelivery slot\b|\breceived the wrong\b|\bbulk\b|\bgift cards?\b"
            r"|\barriv(?:e|ed|es|al)\b|\breplacement\b|\bin (?:size|stock|colou?r)\b|\bsizes?\b"
            r"|\bbook(?:ing)? (?:a|an|my)\b|\breservations?\b|\brepairs?\b",
        ),
        (
            "accounts",
            r"\baccounts?\b|\bpassword\b|\blog ?in\b|\blogin\b|\bsign ?(?:in|up)\b|\busername\b"
            r"|\bverification code\b|\btwo-factor\b|\b2fa\b|\blocked out\b|\bhacked\b"
            r"|\bprofile\b|\bget into\b|\blog(?:ged)? (?:me )?out\b|\breset\b",
        ),
        (
            "payments",
            r"\binvoices?\b|\bbill(?:ed|ing)?\b|\bpayments?\b|\bpay (?:with|by|in|for)\b"
            r"|\bcredit card\b|\bmy card\b|\bcard details\b|\bpaypal\b|\breceipts?\b"
            r"|\bcheckout\b|\bdeclined\b|\bcurrency\b",
        ),
        (
            "policies",
            r"\bpolic(?:y|ies)\b|\bterms\b|\bprivacy\b|\bmy (?:personal )?data\b|\bgdpr\b"
            r"|\bcancel(?:l?ing|l?ation|led)?\b|\bmy (?:information|details)\b"
            r"|\bpersonal (?:information|details)\b|\badvertisers?\b",
        ),
        (
            "contact",
            r"\bcontact\b|\bphone (?:number|line)\b|\bemail address\b"
            r"|\bcustomer (?:service|support)\b|\bsupport (?:team|emails?)\b|\bbranch\b"
            r"|\boffices?\b|\bstores?\b|\bshop\b"
            r"|\bwarehouse\b|\blocated\b|\baddress\b|\bmanager\b|\bdepartment\b|\bhotline\b"
            r"|\bappointments?\b|\bparking\b|\bweekend support\b|\breply to\b"
            r"|\byour (?:number|email)\b|\bcall (?:me|you|back)\b|\bhelpline\b",
        ),
        (
            "offer",
            r"\bdo you (?:sell|offer|ship|deliver|accept|take|support|provide|do|have (?:a|an|any)"
            r" (?:store|shop|app|mobile app|office|discount|program|phone))\b"
            r"|\byour (?:products?|services?|company|app|website|site|laptops?|prices)\b"
            r"|\b(?:is|are) (?:your|the) \w+ (?:available|vegan|made|safe)\b"
            r"|\b(?:service|app) available\b|\bnew version\b|\bmobile app\b|\bproducts\b"
            r"|\bthe (?:app|website|site)\b",
        ),
    )
)

# Asked of the company, about the customer's own dealings with it, about
# "the" plan or "the" warranty (in a support chat, the company's), or a
# complaint that something of theirs is not working.
_ADDRESSED = re.compile(
    r"\b(?:you|your|yours|u|ur|y'all|we|our|us)\b|\b(?:i|i'm|i've|i'd|me|my|mine)\b"
    r"|\b(?:the|this|it|anyone|someone)\b|\bis there\b"
    r"|\bhow (?:much|long|soon) (?:is|does|do|will)\b"
    r"|\b(?:isn't|doesn't|won't|didn't|not) (?:coming|arriving|working|showing|loading)\b",
    _FLAGS,
)

# Requests to write, rework or explain something: the model's own work,
# whatever the subject ("help me write a complaint about a refund").
_WRITING = re.compile(
    r"^\W*(?:(?:can|could|would|will) you |please |help me |i need you to )?(?:write|draft|compose"
    r"|rewrite|reword|proofread|translate|summari[sz]e|paraphrase|shorten|make this|explain"
    r"|define|tell me about|give me (?:a|an|some|three|ideas)|suggest|recommend)\b",
    _FLAGS,
)

# General questions about a concept, not about this company.
_GENERAL = re.compile(
    r"\bwhat (?:is|are|'s) (?:a|an)\b|\bwhat does \S+ (?:mean|stand for|weigh)\b|\bmeaning of\b"
    r"|\bin general\b|\bin (?:banking|accounting|retail|economics)\b|\bhow does \S+ work\b"
    r"|\bhow (?:do|does) (?:a|an) \w+ work\b|\bexplain\b|\bwhat should it contain\b"
    r"|\bhow (?:do|can) i write\b|\bhow much does an? \w+",
    _FLAGS,
)


# A message this short with a company subject is a support chat's shorthand
# ("opening hours?", "refund status").
TERSE_WORDS = 5


# The shipped exemplars: "company" or "general", a tab, a question.
EXEMPLARS_FILE = Path(__file__).with_name("company_facts.tsv")
# The nearest exemplars of each label a question is compared with, and how
# much closer (cosine, all-MiniLM-L6-v2) to the company ones it must be.
NEIGHBOURS = 3
MARGIN = 0.15


# Small talk about the assistant itself ("what's your name?"), not the company.
_SMALL_TALK = re.compile(
    r"\b(?:what's|what is) your name\b|\bwho are you\b|\bhow are you\b|\bwhat can you do\b"
    r"|\bare you (?:a|an) (?:bot|robot|human|person|ai)\b",
    _FLAGS,
)


def general_request(text: str) -> bool:
    """A request to write or explain something, a question about a concept,
    or small talk with the assistant."""
    return bool(_WRITING.search(text) or _GENERAL.search(text) or _SMALL_TALK.search(text))


def company_fact_subject(text: str) -> str | None:
    """The company subject ``text`` asks about by the patterns (hours, prices,
    refunds, orders, accounts, payments, policies, contact, offer), or None
    for anything else (general knowledge, writing help, chit-chat)."""
    text = text.strip()
    if not text or general_request(text):
        return None
    subject = next((name for name, pattern in _SUBJECTS if pattern.search(text)), None)
    if subject is None:
        return subject_in_other_languages(text)
    if _ADDRESSED.search(text) or len(text.split()) <= TERSE_WORDS:
        return subject
    return None


def load_exemplars(path: Path = EXEMPLARS_FILE) -> list[tuple[str, str]]:
    """(label, question) rows of ``path``; ``#`` lines are comments."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            label, question = line.split("\t", 1)
            rows.append((label, question))
    return rows


def closeness(
    query: np.ndarray, company: np.ndarray, general: np.ndarray, k: int = NEIGHBOURS
) -> np.ndarray:
    """How much closer each row of ``query`` is to its ``k`` nearest company
    exemplars than to its ``k`` nearest general ones (mean cosine)."""

    def nearest(exemplars: np.ndarray) -> np.ndarray:
        sims = query @ exemplars.T
        width = min(k, sims.shape[1])
        return np.sort(sims, axis=1)[:, -width:].mean(axis=1)

    return nearest(company) - nearest(general)


class CompanyFacts:
    """The check ``PlanRoute`` asks: the patterns, then (with an ``embedder``)
    the shipped exemplars. ``embedder`` must be the model ``MARGIN`` was
    measured with, all-MiniLM-L6-v2; None: the patterns alone."""

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        exemplars: Sequence[tuple[str, str]] | None = None,
        margin: float = MARGIN,
    ) -> None:
        self.embedder = embedder
        self.margin = margin
        self._exemplars = list(load_exemplars() if exemplars is None else exemplars)
        self._vectors: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None

    def warm(self) -> None:
        """Load the model and embed the exemplars (blocks; idempotent)."""
        if self.embedder is None:
            return
        with self._lock:
            if self._vectors is not None:
                return
            texts = [q for _, q in self._exemplars]
            vectors = self.embedder.embed(texts)
            company = np.array([label == "company" for label, _ in self._exemplars])
            self._vectors = (vectors[company], vectors[~company])

    def start_warming(self) -> None:
        """``warm`` in a thread: the start does not wait for the model; until it
        is ready, the patterns decide."""
        if self.embedder is not None and self._warming is None:
            self._warming = threading.Thread(
                target=self._warm_quietly, name="company-facts", daemon=True
            )
            self._warming.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a warm-up under way. A process must not end while it runs:
        torch tears down its thread pools at exit under the loading thread's
        feet, and the process aborts ("terminate called without an active
        exception") after its work is done, failing a finished `deskmate ask`."""
        if self._warming is not None:
            self._warming.join(timeout)

    def _warm_quietly(self) -> None:
        try:
            self.warm()
        except Exception:
            log.exception("the company-fact check runs on its patterns alone")
            self.embedder = None

    def _similar(self, text: str) -> bool:
        embedder, vectors = self.embedder, self._vectors
        assert embedder is not None and vectors is not None
        return bool(closeness(embedder.embed([text]), *vectors)[0] > self.margin)

    async def subject(self, text: str) -> str | None:
        """What ``text`` asks of the company (a pattern's subject, or
        "similar" to the shipped company questions), or None."""
        text = text.strip()
        if subject := company_fact_subject(text):
            return subject
        if self.embedder is None or self._vectors is None or general_request(text):
            return None
        try:
            similar = await asyncio.to_thread(self._similar, text)
        except Exception:
            # The patterns have spoken; a broken model must not stop the answer.
            log.exception("the company-fact check could not embed a message")
            return None
        return "similar" if similar else None
