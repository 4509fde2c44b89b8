"""``diff``: differential attention (Ye et al. 2024, *Differential Transformer*), following the official
``microsoft/unilm`` ``Diff-Transformer/multihead_diffattn.py`` (``MultiheadDiffAttn``).

At equal parameters to the baseline, as the reference does (``num_heads`` = half the baseline's): with the model's
``n_heads = H`` and ``kv_heads = Hkv``, the layer has ``H/2`` differential heads. The projections are the standard
layer's (``q``: ``H·hd``, ``kv``: ``2·Hkv·hd``, ``out``), viewed as the reference views them: query heads ``2h`` and
``2h+1`` (each ``hd`` wide, rotated) form head ``h``'s two maps, key heads likewise (query head ``j`` uses key head
``j // (H/Hkv)``, the reference's ``repeat_kv``), and values are ``Hkv/2`` heads of width ``2·hd``. Per head::

    A1, A2 = softmax(q_{2h} k^T / sqrt(hd)), softmax(q_{2h+1} k^T / sqrt(hd))
    lambda = exp(lq1·lk1) - exp(lq2·lk2) + lambda_init,  lambda_init = 0.8 - 0.6·exp(-0.3·layer)  (layer from 0)
    out_h  = (1 - lambda_init) · RMSNorm_{2hd}((A1 - lambda·A2) V_h)       (eps 1e-5, learned gain, shared by heads)

``lq1, lk1, lq2, lk2`` are ``hd``-vectors initialised ``N(0, 0.1)``. One kernel call computes both maps (``A_j V``
for all ``H`` query heads, the values of head ``h`` repeated for its two maps); the rotation is the model's
position (half-split RoPE where the reference rotates interleaved pairs: the same function up to a fixed
permutation of the projection's columns). The cache holds the standard ``k, v`` (the same bytes as the baseline).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.variants.attention.contract import BUILTIN, spec
from ablate.variants.attention.layer import LayerSpec, MultiHeadAttention, mha_params

__all__ = ["DiffAttention", "lambda_init", "SPEC", "SUBLN_EPS"]

SUBLN_EPS = 1e-5  # the reference's RMSNorm(2 * head_dim, eps=1e-5)


def lambda_init(layer: int) -> float:
    """``0.8 - 0.6·exp(-0.3·layer)`` for the block at index ``layer`` (0-based: the paper's ``l - 1``)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


class DiffAttention(MultiHeadAttention):
    """Differential attention over the standard layer's projections (see the module docstring)."""

    def __init__(self, cfg: Any):
        super().__init__(cfg, kernel="sdpa")
        hd = cfg.head_dim
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(hd) * 0.1) for _ in range(4))
        self.subln = nn.Parameter(torch.ones(2 * hd))  # the RMSNorm's gain (its eps: SUBLN_EPS)

    def lam(self, dtype: torch.dtype) -> Tensor:
        """The re-parameterised lambda less ``lambda_init`` (a scalar), computed in at least float32."""
        ct = torch.promote_types(self.lambda_q1.dtype, torch.float32)
        l1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1).to(ct))
        l2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2).to(ct))
        return (l1 - l2).to(dtype)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Any, window: int | None, layer: int) -> Tensor:
        b, h, tq, hd = q.shape
        hkv, n = v.shape[1], v.shape[2]
        # values as the reference views them: Hkv/2 heads of 2·hd, each repeated for its two maps
        v2 = v.transpose(1, 2).reshape(b, n, hkv // 2, 2 * hd).transpose(1, 2).repeat_interleave(2, dim=1)
        # A_j V in two halves of hd, as the reference's flash version does (multihead_flashdiff_1.py): q, k and v of
        # one head dim, which the fused kernels need (one call with 2hd-wide values runs SDPA's math path)
        y = torch.cat([self.attn(q, k, half, causal=self.causal, bias=bias, window=window)
                       for half in v2.split(hd, dim=-1)], dim=-1)  # (B, H, Tq, 2hd)
        y = y.reshape(b, h // 2, 2, tq, 2 * hd)
        init = lambda_init(layer)
        y = y[:, :, 0] - (self.lam(y.dtype) + init) * y[:, :, 1]
        yf = y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
        y = (F.rms_norm(yf, (2 * hd,), eps=SUBLN_EPS) * self.subln).to(y.dtype)
        return y * (1 - init)  # (B, H/2, Tq, 2hd): the layer's out projection reads H·hd features per token


def _check(cfg: Any) -> str | None:
    if cfg.n_heads % 2 or cfg.kv_heads % 2:
        return (f"needs an even number of heads and KV heads (two softmax maps per head, half the baseline's heads "
                f"as the paper does), got n_heads={cfg.n_heads}, kv_heads={cfg.kv_heads}")
    return None


def _flops(pass_: str, cfg: Any, *, batch: int, seq_len: int, chunk: int | None = None) -> tuple[float, str]:
    """The kernel's count for what runs: ``H`` query heads scoring ``hd``-wide keys and reading ``2·hd``-wide
    values, i.e. the standard count at an effective head dim of ``1.5·hd``."""
    return spec("sdpa").flops(pass_, batch=batch, n_heads=cfg.n_heads, n_kv_heads=cfg.kv_heads, seq_len=seq_len,
                              head_dim=3 * cfg.head_dim // 2, causal=cfg.causal, window=cfg.window, chunk=chunk)


SPEC = LayerSpec(
    key="diff", module=DiffAttention, kernel="sdpa",
    description="differential attention: two softmax maps subtracted with a learned lambda, head-wise RMSNorm",
    paper="Ye et al. 2024, Differential Transformer; reference: microsoft/unilm Diff-Transformer "
          "multihead_diffattn.py (MultiheadDiffAttn)",
    params=lambda cfg: mha_params(cfg) + 4 * cfg.head_dim + 2 * cfg.head_dim,
    check=_check,
    flops=_flops,
).register(BUILTIN)
