"""The batch's KV cache layer: keys and values grow in place.

The class derives from transformers' ``DynamicLayer``, so it is built on first
use (``growing_layer_class``) rather than at import: importing this module
must not import transformers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Room kept at the end of the batch's KV buffers: one reallocation every this many steps.
KV_SPARE = 64


class GrowingBuffers:
    """Keys and values kept in buffers with spare room along the sequence axis;
    attention gets a view. A step reallocates once every ``KV_SPARE`` positions,
    and a prefill longer than the spare room gets room for all of it at once.
    Mixed into transformers' cache layer (``growing_layer_class``) and into the
    light model's, which must not import transformers.
    """

    keys: torch.Tensor
    values: torch.Tensor
    is_initialized: bool
    _key_buffer: torch.Tensor
    _value_buffer: torch.Tensor
    _length: int

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, length: int, needed: int) -> None:
        """Buffers with room for ``needed`` positions and spare, holding ``length`` of ``keys``."""
        rows, heads, _, dim = keys.shape
        shape = (rows, heads, needed + KV_SPARE, dim)
        self._key_buffer = keys.new_empty(shape)
        self._value_buffer = values.new_empty(shape)
        self._key_buffer[:, :, :length] = keys[:, :, :length]
        self._value_buffer[:, :, :length] = values[:, :, :length]
        self._length = length
        self.keys = self._key_buffer[:, :, :length]
        self.values = self._value_buffer[:, :, :length]

    def _append(
        self, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + keys.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._allocate(self.keys, self.values, self._length, end)
        self._key_buffer[:, :, self._length : end] = keys
        self._value_buffer[:, :, self._length : end] = values
        self._length = end
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values


@functools.cache
def growing_layer_class() -> Any:
    """A KV cache layer that appends in place instead of concatenating.

    transformers' ``DynamicLayer`` concatenates every step, copying the whole
    batch's keys and values (11% of a 16-sequence decode step on a CPU).
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(GrowingBuffers, DynamicLayer):  # type: ignore[misc,valid-type]
        @classmethod
        def holding(cls, keys: torch.Tensor, values: torch.Tensor) -> GrowingLayer:
            layer = cls()
            layer.lazy_initialization(keys, values)
            layer._allocate(keys, values, keys.shape[-2], keys.shape[-2])
            return layer

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._allocate(key_states, value_states, 0, key_states.shape[-2])
            return self._append(key_states, value_states)

    return GrowingLayer
