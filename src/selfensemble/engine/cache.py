"""A KV cache that is allocated once per batch and filled in place.

transformers' DynamicCache grows by ``torch.cat`` at every step, copying the whole cache each time:
with 40 rows and a 900-token few-shot prefix that is ~1.6 GB of copying per generated token on
SmolLM2. Here each layer owns a buffer of (B, H_kv, capacity, D); ``update`` writes the new keys in
place and returns a view of the filled part. The shared prefix is copied into every row once.

The decode step (engine/step.py) writes its tokens at the slots it names instead
(``selfensemble_slots``, which transformers hands the cache with the other attention keywords) and
attends over the whole buffer with the unwritten slots masked: the same shapes at every step. The
buffer starts zeroed, so a masked slot holds finite numbers (0 weight × NaN would still be NaN).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from transformers.cache_utils import Cache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's preallocated keys/values; ``keys``/``values`` are views of the filled part."""

    def __init__(self, capacity: int, prefix: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._prefix = prefix

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        self.device = key_states.device
        self._k = key_states.new_zeros(B, H, self.capacity, D)
        self._v = value_states.new_zeros(B, H, self.capacity, value_states.shape[-1])
        self.is_initialized = True
        if self._prefix is not None:
            pk, pv = self._prefix
            P = pk.shape[-2]
            self._k[:, :, :P] = pk  # broadcast the one-row prefix over the batch
            self._v[:, :, :P] = pv
            self.length = P
            self._prefix = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        slots = (kwargs.get("kwargs") or {}).get("selfensemble_slots")
        if slots is not None:  # a static step: write at the given slots, attend over the whole buffer
            self._k.index_copy_(2, slots, key_states)
            self._v.index_copy_(2, slots, value_states)
            return self._k, self._v  # ``length`` stays the prompt's: the step's caller counts answer slots
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} > capacity {self.capacity}")
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Rows ``indices`` (B',) of the filled cache become the batch, e.g. one prompt's KV copied to
        each of its K sampled rows after one prefill (index_select copies, so rows then grow apart)."""
        if not self.is_initialized:
            raise RuntimeError("batch_select_indices before the cache holds a batch")
        self._k = self._k.index_select(0, indices.to(self._k.device))
        self._v = self._v.index_select(0, indices.to(self._v.device))
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

    def get_seq_length(self) -> int:
        if self._prefix is not None:
            return self._prefix[0].shape[-2]
        return self.length


def new_cache(num_layers: int, capacity: int, prefix: Cache | None = None) -> Cache:
    """A cache of up to ``capacity`` tokens per row, optionally starting from a one-row prefix cache.

    The batch size is taken from the first update (the prefill), the prefix broadcast over it.
    """
    layers = []
    for i in range(num_layers):
        pre = (prefix.layers[i].keys, prefix.layers[i].values) if prefix is not None else None
        layers.append(GrowingLayer(capacity, pre))
    return Cache(layers=layers)


def cache_capacity(cache: Cache) -> int:
    """Slots per row of a cache made by :func:`new_cache` (what the static decode step attends over)."""
    layer = cache.layers[0] if getattr(cache, "layers", None) else None
    if not isinstance(layer, GrowingLayer):
        raise TypeError(f"the decode loop needs a cache from cache.new_cache, got {type(cache).__name__}")
    return layer.capacity


def cache_bytes(cache: Cache) -> int:
    """Bytes held by a cache's key and value buffers (its whole capacity)."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "_k", None), getattr(layer, "_v", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


class PrefixCaches:
    """Encoded prefixes (one copy, or N copies for the full layout), all under one memory bound.

    ``get`` marks an entry used; ``put`` stores one and drops the least recently used entries until
    everything fits in ``max_bytes``. An entry larger than the bound on its own is not kept (it
    serves the chunk that made it, and counts as a miss each time). ``hits``/``misses``/``evictions``
    count lookups and drops since the engine started.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[object, tuple[Cache, int]] = OrderedDict()
        self.bytes = self.hits = self.misses = self.evictions = 0

    def get(self, key: object) -> Cache | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: object, cache: Cache) -> None:
        size = cache_bytes(cache)
        if size > self.max_bytes:
            return
        while self._entries and self.bytes + size > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1
        self._entries[key] = (cache, size)
        self.bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def info(self) -> dict:
        """The bound and what is held, for bench and manifests."""
        return {"bound_mb": self.max_bytes / 2**20, "entries": len(self._entries), "mb": self.bytes / 2**20,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
