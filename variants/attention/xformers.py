"""``xformers``: xFormers' ``memory_efficient_attention`` (BMGHK layout for GQA, structured causal/local masks where
no score bias is involved, else a dense additive bias). The package is optional and imported on first use."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ablate.errors import UnavailableError
from ablate.registry.keys import Availability
from ablate.variants.attention.contract import (BUILTIN, AttentionSpec, expand_kv_heads, first_line, masked_dense_bias, tiny_inputs,
                                                allowed_mask, check_call, fa_flops, full_caps)
from ablate.variants.attention.reference import naive_attention

__all__ = ["SPEC"]


@functools.lru_cache(maxsize=None)
def _xformers_import() -> tuple[Any, str]:
    try:
        import xformers.ops as xops  # type: ignore[import-not-found]

        return xops, ""
    except Exception as exc:
        if isinstance(exc, ImportError):
            return None, "xformers not installed: pip install 'ablate-bench[xformers]'"
        return None, f"xformers import failed ({type(exc).__name__}: {first_line(exc, 150)})"


def _xformers_mask_bias(xops: Any, causal: bool, bias: Any, window: int | None) -> Any:
    """xFormers' structured causal / local mask when no score bias is involved; None: no mask or a dense one."""
    ab = getattr(getattr(xops, "fmha", None), "attn_bias", None)
    if bias is not None or not causal or ab is None:
        return None
    if window is None:
        return ab.LowerTriangularFromBottomRightMask() if hasattr(ab, "LowerTriangularFromBottomRightMask") else None
    if hasattr(ab, "LowerTriangularFromBottomRightLocalAttentionMask"):  # keys p - W < j <= p
        return ab.LowerTriangularFromBottomRightLocalAttentionMask(window)
    return None


def _xformers_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
                   scale: float | None) -> Tensor:
    xops, why = _xformers_import()
    if xops is None:
        raise UnavailableError(why)
    b, h, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = h // hkv
    attn_bias = _xformers_mask_bias(xops, causal, bias, window)
    if attn_bias is None and (bias is not None or causal):
        # dense additive tensor: bias (+ -inf outside the causal/window band); last dim padded to a multiple of 8
        # because the kernels need an aligned row stride
        if bias is not None:
            dense = masked_dense_bias(bias, tq, tk, causal, window, q.device, q.dtype)
        else:
            allowed = allowed_mask(tq, tk, causal, window, q.device)
            dense = torch.zeros(1, tq, tk, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        hb = dense.shape[0]
        pad = (tk + 7) // 8 * 8
        buf = torch.empty(hb, tq, pad, dtype=q.dtype, device=q.device)
        buf[..., :tk] = dense
        dense = buf[..., :tk]
        if g > 1:
            dense = dense.view(hkv, g, tq, tk) if hb == h else dense.view(1, 1, tq, tk)
            attn_bias = dense.unsqueeze(0).expand(b, hkv, g, tq, tk)
        else:
            attn_bias = dense.unsqueeze(0).expand(b, h, tq, tk)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D)
    if g > 1:  # BMGHK: G = kv heads, H = query heads per kv head
        qt = qt.reshape(b, tq, hkv, g, d)
        kt = kt.unsqueeze(3).expand(b, tk, hkv, g, d)
        vt = vt.unsqueeze(3).expand(b, tk, hkv, g, v.shape[-1])
    out = xops.memory_efficient_attention(qt, kt, vt, attn_bias=attn_bias, scale=scale)
    return out.reshape(b, tq, h, v.shape[-1]).transpose(1, 2)


def _xformers(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
              scale: float | None = None) -> Tensor:
    check_call("xformers", q, k, v, causal, bias, window)
    return _xformers_impl(q, k, v, causal, bias, window, scale)


def _probe_xformers(dev: str) -> Availability:
    xops, why = _xformers_import()
    if xops is None:
        return False, why
    q, k, v = tiny_inputs(dev, torch.float16)
    try:
        _xformers_impl(q, k, v, True, None, None, None)
        torch.cuda.synchronize()
    except Exception as exc:  # e.g. a wheel built for another torch: "No operator found for ..."
        return False, f"xformers imports but cannot run here (wheel built for another torch?): {first_line(exc, 200)}"
    return True, ""


def _xformers_op_name(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    try:  # what xformers' dispatcher picks for an equivalent causal/non-causal call
        from xformers.ops import fmha  # type: ignore[import-not-found]

        ke, ve = expand_kv_heads(k, v, q.shape[1])
        qt, kt, vt = (x.transpose(1, 2) for x in (q, ke, ve))
        ab = fmha.attn_bias.LowerTriangularFromBottomRightMask() if causal else None
        op = fmha.dispatch._dispatch_fw(fmha.Inputs(query=qt, key=kt, value=vt, attn_bias=ab), False)
        return str(getattr(op, "NAME", op.__name__))
    except Exception:
        return ""


def _backend_name(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    op = _xformers_op_name(q, k, v, causal, bias, window)
    return "xformers:" + op if op else "xformers"


def _no_cuda_reason(dev: str) -> str:
    xops, why = _xformers_import()
    return "needs CUDA" if xops is not None else f"needs CUDA; {why}"


SPEC = AttentionSpec(
    key="xformers",
    fn=_xformers,
    description="xFormers memory_efficient_attention (BMGHK layout for GQA)",
    paper="Lefaudeux et al. 2022 xFormers",
    caps={"cuda": full_caps(dtypes=("float16", "bfloat16", "float32"))},
    flops=fa_flops,
    reference=naive_attention,
    backend_name=_backend_name,
    no_device_reason={"*": _no_cuda_reason},
    probe=_probe_xformers,
).register(BUILTIN)
