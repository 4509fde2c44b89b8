"""Blockwise causal attention (BCA) at evaluation: Sun et al. 2022, *A Length-Extrapolatable Transformer*, Section 3.3,
following the paper's reference code (``sunyt32/torchscale``, the LeX Transformer's fork:
``torchscale/component/multihead_attention.py``, "divide block", and ``architecture/decoder.py``).

The rule of the reference, for a block size ``B`` (its ``block_size``; the paper and the reference's README set it
to the pre-training length) and ``h = B // 2``: a sequence longer than ``B`` is cut into blocks of ``h`` tokens from
its start; a query at position ``p`` (block ``b = p // h``) attends the keys ``j`` with ``(b - 1)·h <= j <= p`` --
the previous block and its own block up to itself (the first block: itself only). Every query sees between ``h + 1``
and ``B`` keys, so no query-key distance reaches ``B``. A sequence of at most ``B`` tokens is attended in full
(the reference switches blocks on only when ``T > block_size``).

The reference pads k and v by ``h`` in front, unfolds windows of ``B`` keys with step ``h`` and masks each window's
``h`` queries with ``triu(-inf, h + 1)``; here the same attention is a chunked forward: blocks of ``h`` tokens fed in
turn through :class:`BlockKVCache`, which holds the previous block's keys of every layer (and nothing older), the
kernel's bottom-right causal alignment masking the current block. Because every layer of the reference sees only those
keys, the chunked forward equals it in every layer, not only the first (tested against a dense masked forward).
Positions stay absolute (the reference re-indexes each window from 0; relative positions -- RoPE, xPos, ALiBi, T5 --
score only distances, so both agree).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ablate.errors import ConfigError
from ablate.variants.attention.cache import CacheLayout, RollingKVCache
from ablate.variants.attention.layer import layer_spec

__all__ = ["BlockKVCache", "bca_allowed", "blockwise_logits", "bca_refusal"]


class BlockKVCache(RollingKVCache):
    """Keeps the last ``block`` tokens of every layer and masks nothing beyond causality: fed blocks of ``block``
    tokens, a block sees the previous block plus itself (BCA's ``h = B / 2``)."""

    kind = "block"

    def __init__(self, n_layers: int, block: int, layout: CacheLayout | None = None):
        super().__init__(n_layers, block, layout)

    def window(self) -> int | None:
        return None  # the eviction at block boundaries is the mask


def bca_allowed(tq: int, block: int, device: Any = None) -> Tensor:
    """``(T, T)`` bool: which keys each query of a ``T``-token sequence attends under BCA with block size ``block``
    (the dense form of the rule; full causal attention when ``T <= block``)."""
    p = torch.arange(tq, device=device)[:, None]
    j = torch.arange(tq, device=device)[None, :]
    if tq <= block:
        return j <= p
    h = block // 2
    return (j <= p) & (j >= (p // h - 1) * h)


def bca_refusal(model_cfg: Any, block: int) -> str | None:
    """Why a model of ``model_cfg`` cannot be evaluated blockwise with ``block`` (None: it can)."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 2 or block % 2:
        return f"the BCA block must be an even integer >= 2 (blocks of block/2 tokens), got {block!r}"
    if not model_cfg.causal:
        return "blockwise causal attention needs a causal model"
    spec = layer_spec(model_cfg.attention)
    if getattr(spec, "sink_tokens", 0):
        return (f"attention {model_cfg.attention!r} prepends a sink token, which the first block would hold and "
                "the next evict: blockwise causal attention is not defined for it")
    if not spec.supports_on("kv_cache"):
        return f"attention {model_cfg.attention!r} cannot attend a cached block (no kv_cache: queries fewer than keys)"
    return None


def blockwise_logits(model: Any, x: Tensor, block: int) -> Tensor:
    """Logits ``(B, T, V)`` of tokens ``x`` ``(B, T)`` under blockwise causal attention with block size ``block``:
    ``model(x)`` when ``T <= block``, else blocks of ``block // 2`` tokens through a :class:`BlockKVCache`."""
    why = bca_refusal(model.cfg, block)
    if why:
        raise ConfigError(why)
    if model.pos.needs_raw_cache:
        raise ConfigError(f"position {model.cfg.position!r} re-rotates every cached key at each length; blockwise "
                          "causal attention evicts keys and cannot keep its positions")
    t = x.shape[1]
    if t <= block:
        return model(x)
    h = block // 2
    cache = BlockKVCache(model.cfg.n_layers, h, layer_spec(model.cfg.attention).cache)
    return torch.cat([model(x[:, s:s + h], cache=cache) for s in range(0, t, h)], dim=1)
