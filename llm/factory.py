"""Build the configured LLM backend from settings (the composition root calls this)."""

from __future__ import annotations

from bot.settings import Settings
from llm.base import Backend


def create_backend(settings: Settings) -> Backend:
    """An OpenAI-compatible HTTP backend when ``DESKMATE_LLM_URL`` is set, else a local model.

    Nothing heavy happens here: the local backend imports torch and reads the
    model only in ``load()``.
    """
    if settings.llm_url:
        from llm.openai_http import OpenAIBackend

        return OpenAIBackend(
            base_url=settings.llm_url,
            api_key=settings.llm_api_key,
            model_name=settings.llm_model_name,
            timeout=settings.llm_timeout,
            retries=2,
        )
    from llm.transformers_backend import TransformersBackend

    return TransformersBackend(
        model=settings.model,
        quantization=settings.quantization,
        device=settings.device,
        allow_quantization_fallback=settings.allow_quantization_fallback,
        dtype=settings.dtype,
        data_dir=settings.data_dir,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
    )
