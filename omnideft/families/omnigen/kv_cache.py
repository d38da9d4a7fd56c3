"""Condition key/value cache for diffusers' OmniGenTransformer2DModel, on any device.

OmniGen's sequence is [condition tokens | time token | output tokens], and the mask is causal over the condition:
condition rows never see the time or output columns, so every layer's condition keys and values are the same at
every sampling step. `condition_kv_cache(transformer, cache)` swaps each layer's attention processor for a
`CachedConditionAttnProcessor` while the sampler runs, reading the ConditionKVCache put in the yielded slot:

* `cache.record(n_condition)`: the next forward is the full sequence; each layer keeps its keys/values (after RoPE)
  of the first `n_condition` tokens;
* `cache.replay()`: forwards then carry only the time and output tokens (`input_ids=None`, the last rows of the
  mask and position ids, see `tail_inputs`); each layer attends over [cached condition keys | its own keys].

The processor repeats the arithmetic of diffusers' `OmniGenAttnProcessor2_0` op for op (re-implemented because
the keys/values it computes are local to its `__call__`), so the recording step gives the same numbers as the
uncached forward. The transformer, its adapters (PEFT wraps `to_q`/`to_k`/`to_v` in place) and its hooks are used as
they are. The cache lives on the layers' device, or (`store_device`, e.g. pinned CPU memory) apart from it, each
layer's keys/values then fetched one layer ahead (`prefetch`) on a side stream where the device has streams.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn


class ConditionKVCache:
    """Per-layer condition keys/values [rows, kv_heads, n_condition, head_dim].

    `store_device` None keeps them where they were computed, each followed by room for a step's own tokens
    [rows, kv_heads, n_condition + tail, head_dim]. Otherwise they are copied there once (pinned when
    `pin`), and during replay layer i's pair is brought to the compute device when layer i asks for it while layer
    i+1's transfer starts (on a CUDA side stream when the compute device is CUDA, else at once): at most two layers'
    keys/values are resident on the compute device. `fetches` counts the transfers (for tests and benchmarks)."""

    def __init__(self, num_layers: int, store_device: str | torch.device | None = None, pin: bool = False):
        self.num_layers = num_layers
        self.store_device = None if store_device is None else torch.device(store_device)
        self.pin = pin
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.mode = "off"  # off | record | replay
        self.n_condition = 0
        self.fetches = 0
        self.peak_resident = 0
        self.summary: dict = {}
        self._resident: dict[int, tuple[torch.Tensor, torch.Tensor, object]] = {}
        self._stream = None

    def record(self, n_condition: int) -> None:
        self.mode, self.n_condition = "record", n_condition
        self.keys = [None] * self.num_layers
        self.values = [None] * self.num_layers
        self._resident.clear()

    def replay(self) -> None:
        if any(k is None for k in self.keys):
            raise RuntimeError("condition KV cache replayed before a full forward recorded every layer")
        self.mode = "replay"

    @property
    def filled(self) -> bool:
        return all(k is not None for k in self.keys)

    def nbytes(self) -> int:
        """Bytes of the condition keys/values."""
        return sum(t[:, :, : self.n_condition].numel() * t.element_size() for t in self.keys + self.values
                   if t is not None)

    def release(self) -> None:
        """Free the tensors once sampling is over; `summary` keeps what they were (for tests and benchmarks)."""
        if self.keys[0] is not None:
            self.summary = {"shape": tuple(self.keys[0].shape), "nbytes": self.nbytes(),
                            "n_condition": self.n_condition}
        self.keys = [None] * self.num_layers
        self.values = [None] * self.num_layers
        self._resident.clear()
        self.mode = "off"

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[condition keys | `key`] and the same for values, for a replay step's tokens."""
        if self.store_device is None:
            full_key, full_value = self.keys[layer], self.values[layer]
            if full_key.shape[2] != self.n_condition + key.shape[2]:
                raise RuntimeError(f"replayed {key.shape[2]} tokens; the cache was recorded for "
                                   f"{full_key.shape[2] - self.n_condition}")
            full_key[:, :, self.n_condition:] = key
            full_value[:, :, self.n_condition:] = value
            return full_key, full_value
        cached_key, cached_value = self.load(layer, key.device)
        return torch.cat([cached_key.to(key.dtype), key], dim=2), torch.cat([cached_value.to(value.dtype), value],
                                                                             dim=2)

    def store(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Keep the recording forward's keys/values. Kept on the compute device they stay whole: the condition part
        is read as is and later steps write their own tokens' keys/values behind it, in place (no concatenation
        copying the condition at every layer and step)."""
        if self.store_device is None:
            self.keys[layer], self.values[layer] = key.clone(), value.clone()
            return
        n = self.n_condition
        self.keys[layer], self.values[layer] = self._to_store(key[:, :, :n]), self._to_store(value[:, :, :n])

    def _to_store(self, t: torch.Tensor) -> torch.Tensor:
        host = torch.empty(t.shape, dtype=t.dtype, device=self.store_device, pin_memory=self.pin)
        host.copy_(t)
        return host

    def load(self, layer: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s condition keys/values from the separate store on `device`; starts fetching the next
        layer."""
        if layer not in self._resident:
            self._fetch(layer, device)
        if layer + 1 < self.num_layers and layer + 1 not in self._resident:
            self._fetch(layer + 1, device)
        key, value, ready = self._resident.pop(layer)
        if ready is not None:  # the copy ran on the side stream
            torch.cuda.current_stream(device).wait_event(ready)
            key.record_stream(torch.cuda.current_stream(device))
            value.record_stream(torch.cuda.current_stream(device))
        return key, value

    def _fetch(self, layer: int, device: torch.device) -> None:
        self.fetches += 1
        if device.type == "cuda":
            if self._stream is None:
                self._stream = torch.cuda.Stream(device)
            with torch.cuda.stream(self._stream):
                key = self.keys[layer].to(device, non_blocking=True)
                value = self.values[layer].to(device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(self._stream)
        else:
            key, value, ready = self.keys[layer].to(device), self.values[layer].to(device), None
        self._resident[layer] = (key, value, ready)
        self.peak_resident = max(self.peak_resident, len(self._resident))


class CacheSlot:
    """The cache the layers use for the next forward (None: plain attention). One slot serves several caches, e.g.
    one per guidance row when the rows run one by one."""

    def __init__(self):
        self.cache: ConditionKVCache | None = None


class CachedConditionAttnProcessor:
    """diffusers' OmniGenAttnProcessor2_0 that records or replays one layer's condition keys/values."""

    def __init__(self, layer: int, slot: CacheSlot):
        self.layer = layer
        self.slot = slot

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: torch.Tensor | None = None) -> torch.Tensor:
        batch_size, sequence_length, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        bsz, q_len, query_dim = query.size()
        inner_dim = key.shape[-1]
        head_dim = query_dim // attn.heads
        kv_heads = inner_dim // head_dim
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, kv_heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, kv_heads, head_dim).transpose(1, 2)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real_unbind_dim=-2)
        cache = self.slot.cache
        if cache is not None and cache.mode == "record":
            cache.store(self.layer, key, value)
        elif cache is not None and cache.mode == "replay":
            key, value = cache.extend(self.layer, key, value)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).type_as(query)
        hidden_states = hidden_states.reshape(bsz, q_len, attn.out_dim)
        return attn.to_out[0](hidden_states)


@contextmanager
def condition_kv_cache(transformer: nn.Module):
    """Every layer of `transformer` (the OmniGenTransformer2DModel itself, not a PEFT wrapper) attends through the
    cache put in the yielded CacheSlot; the original processors are put back afterwards."""
    layers = transformer.layers
    slot = CacheSlot()
    saved = [block.self_attn.processor for block in layers]
    try:
        for i, block in enumerate(layers):
            block.self_attn.processor = CachedConditionAttnProcessor(i, slot)
        yield slot
    finally:
        for block, processor in zip(layers, saved):
            block.self_attn.processor = processor


def tail_inputs(attention_mask: torch.Tensor, position_ids: torch.Tensor, n_condition: int) -> dict:
    """The forward arguments of a replay step: no condition tokens, the time and output tokens' rows of the mask
    (over all columns: the cached condition keys come first) and their position ids."""
    return {"input_ids": None, "input_img_latents": [], "input_image_sizes": {},
            "attention_mask": attention_mask[:, n_condition:, :], "position_ids": position_ids[:, n_condition:]}
