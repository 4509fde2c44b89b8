"""``linear``: Katharopoulos et al. 2020 linear attention (feature map ``elu(x) + 1``, no softmax, no scale), causal
as a chunked prefix-sum scan (memory O(T*D + C*C), never T*T). It computes a different function from softmax
attention, so its reference is its own O(n^2) form and its FLOPs are those of the algorithm that runs."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.errors import ConfigError
from ablate.core.attention_cost import linear_attention_flops
from ablate.variants.attention.contract import BUILTIN, ALL_DTYPES, FLOPS_LINEAR, AttentionSpec, check_call, full_caps

__all__ = ["linear_attention", "linear_reference", "LINEAR_CHUNK", "SPEC"]

LINEAR_CHUNK = 64  # chunk size C of the causal linear-attention scan (memory O(T*D + C*C), never T*T)


def _phi(x: Tensor) -> Tensor:
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, chunk_size: int = LINEAR_CHUNK,
                     feature_map: Callable[[Tensor], Tensor] | None = None, eps: float | None = None) -> Tensor:
    """Katharopoulos et al. 2020 linear attention with feature map ``elu(x) + 1`` (no softmax, no scale).

    Non-causal: ``phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(K_j))``. Causal: the same with prefix sums over
    ``j <= p``, computed chunk by chunk (an intra-chunk masked ``C x C`` product plus a running ``D x Dv`` state),
    so memory is O(T*D + C*C) and no ``Tq x Tk`` matrix is ever formed. ``Tq < Tk``: queries are the last ``Tq``
    positions (the first ``Tk - Tq`` keys only feed the initial state). Half inputs accumulate in float32.
    ``feature_map`` replaces ``elu(x) + 1`` (it may change the last dim, e.g. Based's Taylor map) and ``eps`` is then
    added to the denominator (Based: ``+ 1e-12``) instead of clamping it to the smallest normal number.
    """
    if chunk_size < 1:
        raise ConfigError(f"linear attention chunk_size must be >= 1, got {chunk_size}")
    b, h, tq, d = q.shape
    hkv, tk, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = h // hkv
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    phi = _phi if feature_map is None else feature_map
    fq = phi(q.to(work)).reshape(b, hkv, g, tq, -1)  # query heads grouped under their kv head
    fk = phi(k.to(work))  # (B, Hkv, Tk, D) (D: the feature map's width)
    vv = v.to(work)
    tiny = torch.finfo(work).tiny

    def divide(num: Tensor, den: Tensor) -> Tensor:
        return num / (den.clamp_min(tiny) if eps is None else den + eps)

    if not causal:
        kv = fk.transpose(-2, -1) @ vv  # (B, Hkv, D, Dv)
        z = fk.sum(dim=-2)  # (B, Hkv, D)
        num = fq @ kv.unsqueeze(2)  # (B, Hkv, G, Tq, Dv)
        den = fq @ z[:, :, None, :, None]  # (B, Hkv, G, Tq, 1)
        out = divide(num, den)
    else:
        p0 = tk - tq
        state = fk[:, :, :p0].transpose(-2, -1) @ vv[:, :, :p0]  # keys before the first query: (B, Hkv, D, Dv)
        z = fk[:, :, :p0].sum(dim=-2)  # (B, Hkv, D)
        tri = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
        outs = []
        for s in range(0, tq, chunk_size):
            e = min(s + chunk_size, tq)
            qc = fq[:, :, :, s:e]  # (B, Hkv, G, c, D)
            kc = fk[:, :, p0 + s:p0 + e]  # (B, Hkv, c, D)
            vc = vv[:, :, p0 + s:p0 + e]
            a = (qc @ kc.transpose(-2, -1).unsqueeze(2)).masked_fill(~tri[: e - s, : e - s], 0.0)  # (.., c, c)
            num = a @ vc.unsqueeze(2) + qc @ state.unsqueeze(2)
            den = a.sum(dim=-1, keepdim=True) + qc @ z[:, :, None, :, None]
            outs.append(divide(num, den))
            state = state + kc.transpose(-2, -1) @ vc
            z = z + kc.sum(dim=-2)
        out = torch.cat(outs, dim=-2)
    return out.reshape(b, h, tq, dv).to(q.dtype)


def _linear(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
            scale: float | None = None) -> Tensor:
    """Linear attention; ``scale`` has no meaning without a softmax and is ignored."""
    check_call("linear", q, k, v, causal, bias, window)
    return linear_attention(q, k, v, causal=causal, chunk_size=LINEAR_CHUNK)


def linear_reference(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                     scale: float | None = None) -> Tensor:
    """Linear attention in its O(n^2) form, the reference ``linear`` is compared against (on upcast inputs):
    ``(A * M) V / (A * M) 1`` with ``A = phi(Q) phi(K)^T`` and ``M`` the bottom-right causal mask. ``bias``,
    ``window`` and ``scale`` are accepted for the common signature; ``linear`` takes none of them."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    a = _phi(q) @ _phi(k).transpose(-2, -1)
    if causal:
        tq, tk = q.shape[2], k.shape[2]
        p = torch.arange(tk - tq, tk, device=q.device)[:, None]
        j = torch.arange(tk, device=q.device)[None, :]
        a = a.masked_fill(j > p, 0.0)
    return (a @ v) / a.sum(-1, keepdim=True)


def _linear_flops(pass_: str, *, batch: int, n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int,
                  causal: bool, window: int | None, chunk: int | None = None) -> tuple[float, str]:
    """The FLOPs of the algorithm that runs (:func:`ablate.core.flops.linear_attention_flops`), chunk ``LINEAR_CHUNK``."""
    return (linear_attention_flops(batch, n_heads, n_kv_heads, seq_len, seq_len, head_dim, causal=causal,
                                   chunk=int(LINEAR_CHUNK if chunk is None else chunk), mode=pass_), FLOPS_LINEAR)


SPEC = AttentionSpec(
    key="linear",
    fn=_linear,
    description="linear attention, feature map elu(x)+1, chunked causal prefix sums (O(n) memory; scale unused)",
    paper="Katharopoulos et al. 2020",
    caps={"cpu": full_caps(bias=False, alibi=False, window=False, dtypes=ALL_DTYPES),
          "cuda": full_caps(bias=False, alibi=False, window=False, dtypes=ALL_DTYPES)},
    flops=_linear_flops,
    reference=linear_reference,
    reference_name="linear O(n^2)",
    chunk=LINEAR_CHUNK,
    backend_name=lambda q, k, v, causal, bias, window: "linear:chunked" if causal else "linear:parallel",
).register(BUILTIN)
