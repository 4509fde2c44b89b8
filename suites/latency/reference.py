"""The correctness check of the kernel part: every kernel's output (and gradients) against its registered reference
on a slice of the same inputs, before it is timed."""

from __future__ import annotations

import math
from typing import Any

import torch

from ablate.core.config import ModelConfig
from ablate.core.timing import is_cuda
from ablate.variants.positions import ScoreBias, build_position

from .config import DTYPES, Shape

# Relative L2 error allowed against the reference (computed in float32 on CUDA, float64 on CPU).
FWD_TOL = {"float64": 1e-8, "float32": 1e-3, "bfloat16": 3e-2, "float16": 1e-2}
GRAD_TOL = {"float64": 1e-7, "float32": 3e-3, "bfloat16": 6e-2, "float16": 3e-2}


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (x - ref).norm().item()
    if not math.isfinite(num):
        return float("inf")
    return num / den if den > 0 else num


def shape_score_bias(shape: Shape, device: str):
    """The ALiBi ScoreBias of the position slot for ``shape`` (None without bias)."""
    if shape.bias == "none":
        return None
    mcfg = ModelConfig(d_model=shape.n_heads * shape.head_dim, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
                       causal=shape.causal, max_len=max(shape.seq_len, 16), train_len=shape.seq_len,
                       position=shape.bias, attention="naive")
    return build_position(shape.bias, mcfg).to(device).score_bias()


def _slice_bias(bias, hs: int):
    if bias is None:
        return None
    slopes = None if bias.alibi_slopes is None else bias.alibi_slopes[:hs]
    return ScoreBias(dense=lambda tq, tk, dev, dt: bias.dense(tq, tk, dev, dt)[:hs], alibi_slopes=slopes,
                     kind=bias.kind)


class Reference:
    """Reference outputs and gradients for a slice of the inputs (batch 0, query heads 0..hs-1, kv head 0)."""

    def __init__(self, shape: Shape, q, k, v, dout, bias, device: str, check_mb: int, spec: Any,
                 need_grad: bool):
        """``spec``: the :class:`~ablate.variants.attention.AttentionSpec` whose ``reference`` to run."""
        g = shape.n_heads // shape.n_kv_heads
        per_head = shape.seq_len * shape.seq_len * 4 * 3  # fp32 scores, softmax and a temporary
        hs = max(1, min(g, 2 if g == 1 else g, (check_mb << 20) // max(per_head, 1)))
        self.hs, self.full_group = hs, hs == g
        ref_dtype = torch.float32 if is_cuda(device) else torch.float64
        self.dtype = str(ref_dtype).replace("torch.", "")
        qs = q[:1, :hs].detach().to(ref_dtype).requires_grad_(need_grad)
        ks = k[:1, :1].detach().to(ref_dtype).requires_grad_(need_grad)
        vs = v[:1, :1].detach().to(ref_dtype).requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            out = spec.reference(qs, ks, vs, causal=shape.causal, bias=_slice_bias(bias, hs), window=shape.window)
            self.name = f"{spec.reference_name} {self.dtype}"
            if need_grad:
                out.backward(dout[:1, :hs].to(ref_dtype))
        self.out = out.detach()
        self.dq = qs.grad if need_grad else None
        self.dk = ks.grad if need_grad else None
        self.dv = vs.grad if need_grad else None
        self.name += f", batch 0, heads 0..{hs - 1}" + ("" if self.full_group else " (dq only)")

    def fwd_err(self, out) -> float:
        return _rel_err(out[:1, :self.hs], self.out)

    def grad_err(self, q, k, v) -> float:
        errs = [_rel_err(q.grad[:1, :self.hs], self.dq)]
        if self.full_group:
            errs += [_rel_err(k.grad[:1, :1], self.dk), _rel_err(v.grad[:1, :1], self.dv)]
        return max(errs)


def shape_inputs(shape: Shape, device: str, seed: int):
    dt = DTYPES[shape.dtype]
    gen = torch.Generator(device=device).manual_seed(seed)
    b, h, hkv, n, d = shape.batch, shape.n_heads, shape.n_kv_heads, shape.seq_len, shape.head_dim
    q = torch.randn(b, h, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    k = torch.randn(b, hkv, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    v = torch.randn(b, hkv, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    dout = torch.randn(b, h, n, d, device=device, dtype=dt, generator=gen)
    return q, k, v, dout

