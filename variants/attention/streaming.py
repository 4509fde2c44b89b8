"""Streaming evaluation with a fixed cache budget (Xiao et al. 2023, *Efficient Streaming Language Models with
Attention Sinks*, Table 1 and Fig. 3; reference code ``mit-han-lab/streaming-llm``'s ``StartRecentKVCache``).

:func:`streaming_nll` feeds a model token by token far past its training length and returns the loss of each next
token. Every mode lets a query attend ``budget`` keys at most (itself included):

* ``dense`` -- no eviction (growing cache): memory grows with the length, positions go past training;
* ``window`` -- window attention: a rolling cache of the last ``budget`` tokens (the first tokens are evicted);
* ``sinks`` -- StreamingLLM: the first ``sinks`` tokens and the last ``budget - sinks`` (``SinkKVCache``), keys kept
  raw and placed at positions ``0..n-1`` within the cache, as the reference re-indexes them (``reposition``);
* ``recompute`` -- sliding window with re-computation: each token's logits from a fresh forward over its last
  ``budget`` tokens (the quality baseline; ``budget`` forward tokens per generated token).

The cache bytes of every mode follow ``ablate.core.flops.cache_bytes`` (``dense``: the length; ``window``:
``budget``; ``sinks``: ``budget - 1`` kept plus the step's own).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.errors import ConfigError
from ablate.variants.attention.cache import KVCache, RollingKVCache, SinkKVCache
from ablate.variants.attention.layer import layer_spec

__all__ = ["MODES", "streaming_nll", "new_stream_cache"]

MODES = ("dense", "window", "sinks", "recompute")


def new_stream_cache(model: Any, mode: str, budget: int, sinks: int = 4) -> KVCache | None:
    """The cache ``mode`` decodes with (None for ``recompute``)."""
    if mode not in MODES:
        raise ConfigError(f"unknown streaming mode {mode!r}; valid: {', '.join(MODES)}")
    if budget < 2 or (mode == "sinks" and not 1 <= sinks < budget):
        raise ConfigError(f"streaming needs budget >= 2 and 1 <= sinks < budget, got budget={budget}, sinks={sinks}")
    layout, n = layer_spec(model.cfg.attention).cache, model.cfg.n_layers
    if mode == "dense":
        return KVCache(n, layout)
    if mode == "window":
        return model.new_cache(window=budget)
    if mode == "sinks":
        return SinkKVCache(n, budget - sinks, sinks, layout, reposition=True)
    return None


@torch.no_grad()
def streaming_nll(model: Any, tokens: Tensor, *, mode: str, budget: int, sinks: int = 4,
                  stats: dict | None = None) -> Tensor:
    """Per-token losses ``(B, L - 1)`` (nats) of ``tokens`` ``(B, L)`` predicted one at a time under ``mode``.
    ``stats``: filled with ``cache_bytes`` (the cache's ``nbytes()`` after the last token: the most it held; None
    for ``recompute``, which keeps no cache) and ``kept`` (the tokens it then held)."""
    cache = new_stream_cache(model, mode, budget, sinks)
    b, length = tokens.shape
    out = []
    for t in range(length - 1):
        if cache is None:
            logits = model(tokens[:, max(0, t + 1 - budget):t + 1])[:, -1]
        else:
            logits = model(tokens[:, t:t + 1], cache)[:, -1]
        out.append(F.cross_entropy(logits.float(), tokens[:, t + 1], reduction="none"))
    if stats is not None:
        stats["cache_bytes"] = int(cache.nbytes()) if cache is not None else None
        stats["kept"] = int(cache.held()) if cache is not None else min(budget, length - 1)
    return torch.stack(out, dim=1)
