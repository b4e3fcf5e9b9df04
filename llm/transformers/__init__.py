"""Local models through transformers, batched by ``llm.scheduler``.

- ``loading``: finds the model, converts a GGUF file, sets up device, dtype
  and quantization, and loads it.
- ``engine``: the step engine that prefills and decodes the batch.
- ``kv_cache``: the batch's KV cache layer.
- ``fast_step``: the packed int4 decode step for one to four rows.
- ``light``: a plain Llama in float32 on the CPU without transformers (imported
  by ``loading`` when a model loads; it imports torch).
- ``backend``: ``TransformersBackend``, the ``Backend`` and ``Scorer``.

torch, transformers and bitsandbytes are imported only inside the functions
that load or run a model, so importing this package stays fast and works
without them.
"""

from llm.transformers.sizing import calm_openmp_waiting

# Before anything imports torch (and with it the OpenMP runtime).
calm_openmp_waiting()

from llm.transformers.backend import TransformersBackend, import_in_background  # noqa: E402

__all__ = ["TransformersBackend", "import_in_background"]
