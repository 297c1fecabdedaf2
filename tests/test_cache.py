"""The in-place KV cache: same keys/values as concatenation, prefix broadcast, capacity guard."""

from __future__ import annotations

import pytest
import torch

from selfensemble.engine.cache import GrowingLayer, new_cache


def test_growing_layer_matches_concatenation():
    layer = GrowingLayer(capacity=10)
    chunks = [torch.randn(2, 3, n, 4) for n in (4, 1, 1, 3)]
    for i, c in enumerate(chunks):
        k, v = layer.update(c, -c)
        ref = torch.cat(chunks[: i + 1], dim=-2)
        assert torch.equal(k, ref) and torch.equal(v, -ref)
    assert layer.get_seq_length() == 9


def test_prefix_is_broadcast_into_every_row():
    prefix = new_cache(2, capacity=3)
    pk = torch.randn(1, 3, 3, 4)
    for i in range(2):
        prefix.update(pk + i, pk - i, i)
    cache = new_cache(2, capacity=6, prefix=prefix)
    assert cache.get_seq_length() == 3  # known before the first update (positions/masks need it)
    rows = torch.randn(5, 3, 2, 4)
    k, _ = cache.update(rows, rows, 1)
    assert k.shape == (5, 3, 5, 4)
    assert torch.equal(k[:, :, :3], (pk + 1).expand(5, -1, -1, -1))
    assert torch.equal(k[:, :, 3:], rows)


def test_capacity_is_enforced():
    layer = GrowingLayer(capacity=2)
    layer.update(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))
    with pytest.raises(RuntimeError, match="capacity"):
        layer.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
