"""``naive``: materialised softmax attention in the input dtype, the reference every softmax kernel is compared
against (it is itself checked against an independent loop in ``tests/variants/test_attention.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ablate.variants.attention.contract import (BUILTIN, ALL_DTYPES, AttentionSpec, default_scale, expand_kv_heads, allowed_mask,
                                                check_call, fa_flops, full_caps)

__all__ = ["SPEC"]


def naive_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
          scale: float | None = None) -> Tensor:
    """softmax(Q K^T * scale + bias + mask) V, materialised, in the input dtype."""
    check_call("naive", q, k, v, causal, bias, window)
    tq, tk = q.shape[2], k.shape[2]
    k, v = expand_kv_heads(k, v, q.shape[1])
    scores = (q @ k.transpose(-2, -1)) * default_scale(q, scale)
    if bias is not None:
        scores = scores + bias.dense(tq, tk, q.device, q.dtype)
    allowed = allowed_mask(tq, tk, causal, window, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


SPEC = AttentionSpec(
    key="naive",
    fn=naive_attention,
    description="materialised softmax(QK^T*scale + bias + mask)V in the input dtype (the reference)",
    paper="Vaswani et al. 2017",
    caps={"cpu": full_caps(dtypes=ALL_DTYPES), "cuda": full_caps(dtypes=ALL_DTYPES)},
    flops=fa_flops,
    reference=naive_attention,  # its own reference; the tests check it against an independent loop
    backend_name=lambda q, k, v, causal, bias, window: "naive",
    materialises_scores=True,
).register(BUILTIN)
