"""``sliding_window``: local causal attention over the last ``W`` keys, via the fastest path available for the request
(flash_attn, compiled flex, or SDPA with a band mask). It is defined by its window: a call without one is refused."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ablate.errors import UnavailableError
from ablate.registry.keys import ATTENTION
from ablate.variants.attention.contract import BUILTIN, ALL_DTYPES, AttentionSpec, check_call, fa_flops, full_caps
from ablate.variants.attention.flash import flash_impl, flash_refusal, flash_variant
from ablate.variants.attention.flex import flex_impl, flex_mode
from ablate.variants.attention.reference import naive_attention
from ablate.variants.attention.sdpa import expand_suffix, sdpa_impl, sdpa_kernel_name

__all__ = ["SPEC"]


def _sliding_plan(q: Tensor, k: Tensor, v: Tensor, bias: Any, window: int | None) -> str:
    """flash_attn (CUDA, fp16/bf16, no bias or FA2 ALiBi) > compiled flex (CUDA) > SDPA with a band mask."""
    if q.is_cuda:
        if q.dtype in (torch.float16, torch.bfloat16) and ATTENTION.get("flash_attn").available("cuda")[0]:
            try:
                flash_ok = flash_refusal(q, k, v, True, bias, window) is None
            except UnavailableError:
                flash_ok = False
            if flash_ok:
                return "flash_attn"
        if ATTENTION.get("flex").available("cuda")[0] and q.dtype != torch.float64:
            return "flex"
    return "sdpa"


def _sliding_window(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                    scale: float | None = None) -> Tensor:
    check_call("sliding_window", q, k, v, causal, bias, window)
    plan = _sliding_plan(q, k, v, bias, window)
    if plan == "flash_attn":
        return flash_impl(q, k, v, True, bias, window, scale)
    if plan == "flex":
        return flex_impl(q, k, v, True, bias, window, scale)
    return sdpa_impl("sdpa", q, k, v, True, bias, window, scale)


def _backend_name(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    plan = _sliding_plan(q, k, v, bias, window)
    if plan == "sdpa":
        name = "sliding_window:sdpa:" + sdpa_kernel_name(lambda: sdpa_impl("sdpa", q, k, v, True, bias, window, None))
        return name + expand_suffix("sdpa", q, k, True, bias, window)
    if plan == "flash_attn":
        return "sliding_window:flash_attn:" + flash_variant(q, bias)
    return f"sliding_window:flex:{flex_mode(q.device.type)}"


SPEC = AttentionSpec(
    key="sliding_window",
    fn=_sliding_window,
    description="local causal attention over the last W keys via the fastest path (flash_attn, flex, SDPA mask)",
    paper="Beltagy et al. 2020 Longformer / Child et al. 2019",
    caps={"cpu": full_caps(bidirectional=False, dtypes=ALL_DTYPES),
          "cuda": full_caps(bidirectional=False, dtypes=ALL_DTYPES)},
    flops=fa_flops,  # windows are counted exactly (attended pairs) by the FlashAttention convention
    reference=naive_attention,
    backend_name=_backend_name,
    requires=("window",),
).register(BUILTIN)
