"""The growing KV cache layers: appends in place, and a prefill longer than the
spare room lands whole, in transformers' layer and in the light model's alike."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llm.transformers.kv_cache import KV_SPARE, growing_layer_class
from llm.transformers.light import LightLayer


def _states(length: int, start: float = 0.0) -> torch.Tensor:
    # rows, heads, positions, head dim: each position's values name the position.
    positions = torch.arange(length, dtype=torch.float32) + start
    return positions.view(1, 1, length, 1).expand(2, 3, length, 4).contiguous()


@pytest.fixture(params=["transformers", "light"])
def layer_class(request: pytest.FixtureRequest) -> Any:
    return growing_layer_class() if request.param == "transformers" else LightLayer


def test_steps_append_in_place(layer_class: Any) -> None:
    layer = layer_class.holding(_states(5), _states(5))
    buffer = layer._key_buffer
    for position in range(5, 5 + KV_SPARE):
        keys, values = layer.update(_states(1, position), _states(1, position))
    assert layer._key_buffer is buffer
    assert keys.shape[-2] == 5 + KV_SPARE
    assert torch.equal(keys[0, 0, :, 0], torch.arange(5 + KV_SPARE, dtype=torch.float32))
    assert torch.equal(values, keys)


def test_a_prefill_longer_than_the_spare_room_lands_whole(layer_class: Any) -> None:
    layer = layer_class.holding(_states(10), _states(10))
    length = 3 * KV_SPARE
    keys, _ = layer.update(_states(length, 10), _states(length, 10))
    assert keys.shape[-2] == 10 + length
    assert torch.equal(keys[1, 2, :, 3], torch.arange(10 + length, dtype=torch.float32))


def test_a_fresh_layer_takes_a_long_first_prefill(layer_class: Any) -> None:
    layer = layer_class()
    keys, _ = layer.update(_states(2 * KV_SPARE), _states(2 * KV_SPARE))
    assert keys.shape[-2] == 2 * KV_SPARE
    assert layer.is_initialized
