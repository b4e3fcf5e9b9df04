"""Converting a GGUF file into a safetensors model folder, once, in seconds.

transformers reads a GGUF file three times for one conversion (tokenizer,
config, weights), each time parsing its tens of thousands of vocabulary
strings through a ``numpy.memmap`` (whose every slice runs Python-level
bookkeeping), and rebuilds gguf's tensor-name table once per tensor. Profiled
on the embedded model, those took about 70 % of the conversion; the
dequantization itself (gguf's vectorised numpy) about 10 %.

``faster_gguf_reading`` removes that waste for the duration of one
conversion, without changing what is read: the file is parsed once (the
reader is shared by path), through a plain array view of the same mapping,
and the name table is built once per architecture. The tensors come out
bit-identical (``tests/llm/test_conversion.py`` compares them).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def plain_reader_class(base: type[Any]) -> type[Any]:
    """``base`` (gguf's ``GGUFReader``) reading through a plain ndarray, not a memmap.

    The memmap stays open underneath (the array is a view of it); only the
    per-slice memmap bookkeeping is gone.
    """
    import numpy as np

    class PlainReader(base):  # type: ignore[valid-type,misc]
        @property
        def data(self) -> Any:
            return self._plain

        @data.setter
        def data(self, value: Any) -> None:
            self._plain = np.asarray(value)

    PlainReader.__name__ = base.__name__
    return PlainReader


@contextlib.contextmanager
def faster_gguf_reading() -> Iterator[None]:
    """Within the block, transformers reads each GGUF file once and fast (see module doc)."""
    try:
        import gguf
        import transformers.modeling_gguf_pytorch_utils as hf_gguf
    except ImportError:  # an older or newer layout: convert the slow way
        yield
        return
    original_reader = gguf.GGUFReader
    original_map = gguf.get_tensor_name_map
    original_load = hf_gguf.load_gguf_checkpoint
    plain = plain_reader_class(original_reader)
    readers: dict[tuple[str, str], Any] = {}
    metadata: dict[str, Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = plain(path, mode)
        return readers[key]

    def load_checkpoint(path: Any, return_tensors: bool = False, *args: Any, **kwargs: Any) -> Any:
        if return_tensors or args or kwargs:
            return original_load(path, return_tensors, *args, **kwargs)
        # The tokenizer and the config each ask for the metadata; callers may edit it.
        key = str(path)
        if key not in metadata:
            metadata[key] = original_load(path, False)
        return copy.deepcopy(metadata[key])

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    hf_gguf.load_gguf_checkpoint = load_checkpoint
    try:
        yield
    finally:
        gguf.GGUFReader = original_reader
        gguf.get_tensor_name_map = original_map
        hf_gguf.load_gguf_checkpoint = original_load
        readers.clear()


def convert_gguf_file(
    source: Path, out: Path, *, torch: Any, transformers: Any, stage: Callable[[str], None]
) -> None:
    """Dequantize the GGUF file ``source`` into a bf16 safetensors model folder ``out``.

    ``stage(name)`` is called as each of the three stages starts (a progress bar).
    """
    with faster_gguf_reading():
        stage("tokenizer")
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        kwargs: dict[str, Any] = {"dtype": torch.bfloat16}
        gguf_config = getattr(transformers, "GgufConfig", None)
        if gguf_config is not None:
            # Newer transformers keep GGUF weights packed by default, which cannot be saved.
            kwargs["quantization_config"] = gguf_config(dequantize=True)
        stage("weights")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, **kwargs
        )
    stage("saving")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
