"""The largest attention logit a model produces on some tokens (Wortsman et al. 2023, *Small-scale proxies for
large-scale Transformer training instabilities*: attention-logit growth is what QK-norm prevents).

:func:`max_attention_logit` runs one forward without gradients with every block's kernel call (``layer.attn``, what
every layer of :mod:`ablate.variants.attention` calls) wrapped: each call's scaled scores ``q·k^T · scale`` are
computed over the pairs the call lets a query see (causal, window), before any position bias, and the largest
absolute value over all layers, heads and pairs is returned. It works for every layer that calls its kernel through
``.attn`` (the standard layer and its subclasses, ``mla``), whatever kernel that is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["max_attention_logit"]


def _scores_max(q: Tensor, k: Tensor, causal: bool, window: int | None, scale: float | None) -> float:
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.float() @ k.float().transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    tq, tk = s.shape[-2:]
    p = torch.arange(tk - tq, tk, device=s.device)[:, None]
    j = torch.arange(tk, device=s.device)[None, :]
    keep = torch.ones(tq, tk, dtype=torch.bool, device=s.device)
    if causal:
        keep &= j <= p
    if window is not None:
        keep &= j > p - window
    return float(s.abs().masked_fill(~keep, 0.0).max())


@torch.no_grad()
def max_attention_logit(model: nn.Module, idx: Tensor) -> float:
    """The largest ``|q·k · scale|`` of ``model`` (an :class:`ablate.core.model.Transformer`) on tokens ``idx``."""
    seen: list[float] = []
    layers = [b.attn for b in model.blocks if hasattr(b.attn, "attn")]
    originals = [layer.attn for layer in layers]

    def wrap(fn: Any) -> Any:
        def probe(q, k, v, *, causal, bias=None, window=None, scale=None):
            seen.append(_scores_max(q, k, causal, window, scale))
            return fn(q, k, v, causal=causal, bias=bias, window=window, scale=scale)
        return probe

    was_training = model.training
    try:
        model.eval()
        for layer, fn in zip(layers, originals):
            layer.attn = wrap(fn)
        model(idx)
    finally:
        for layer, fn in zip(layers, originals):
            layer.attn = fn
        model.train(was_training)
    return max(seen) if seen else float("nan")
