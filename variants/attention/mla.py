"""``mla`` / ``mla_q``: multi-head latent attention (DeepSeek-AI 2024, *DeepSeek-V2: A Strong, Economical, and
Efficient Mixture-of-Experts Language Model*, section 2.1), following Hugging Face transformers'
``DeepseekV3Attention`` (the V2/V3 modelling code) for training and DeepSeek-V3's ``inference/model.py`` ``MLA``
(``attn_impl="absorb"``) for decoding.

With the model's ``H`` heads of ``hd`` and ``d_model = d``:

* keys and values come from one latent per token, ``c = RMSNorm(x W_DKV)`` of width ``d_c`` (``model.kv_lora_rank``,
  HF's name; default ``4·hd``, V2: 512 = 4·128; in ``1..2·H·hd``: wider would compress nothing),
  up-projected per head by ``kv_b`` to a no-position key part ``k_C`` (``hd``) and a value (``hd``);
* a decoupled rotary key ``k_R = RoPE(x W_KR)`` of width ``d_R = hd/2`` (V2: 64 = 128/2) is shared by the heads;
  queries are ``[q_C, RoPE(q_R)]`` per head (``hd + d_R``), from ``x`` (``mla``) or from a compressed query latent
  ``RMSNorm(x W_DQ)`` of width ``d_c' = 12·hd`` (V2: 1536 = 12·128; ``mla_q``);
* scores are scaled by ``1/sqrt(hd + d_R)``; the output projection reads ``H·hd``.

The cache keeps only ``c`` and the rotated ``k_R``: ``(d_c + d_R)`` elements per token and layer (V2: 576 = the
cache of GQA with 2.25 groups of ``2·hd``), the :class:`CacheLayout` ``("latent", "k_rope")``.

Decoding without gradients takes the absorbed path: ``W_UK`` is folded into the query (``q_C W_UK^T`` scores the
latent directly) and ``W_UV`` is applied after attention, so the kernel runs one shared key/value head of width
``d_c + d_R`` / ``d_c`` over the cached latent and nothing is up-projected per token. ``absorb`` (None: that rule;
True / False) forces a path; the test checks both give the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.registry.keys import ATTENTION
from ablate.variants.attention.cache import CacheLayout
from ablate.variants.attention.contract import BUILTIN, spec
from ablate.variants.attention.layer import LayerSpec
from ablate.variants.positions import RotaryAtWidth  # positions first: the keys keep their order

__all__ = ["LatentAttention", "LatentAttentionQ", "LatentSpec", "mla_dims", "mla_params", "LATENT_LAYOUT",
           "KV_RANK_MULT", "Q_RANK_MULT"]

KV_RANK_MULT = 4  # d_c = 4·head_dim (DeepSeek-V2: kv_lora_rank 512, head_dim 128)
Q_RANK_MULT = 12  # d_c' = 12·head_dim (DeepSeek-V2: q_lora_rank 1536)


def mla_dims(cfg: Any, q_rank: bool = False) -> tuple[int, int, int | None]:
    """``(d_c, d_R, d_c' or None)`` for ``cfg``."""
    hd = cfg.head_dim
    dc = getattr(cfg, "kv_lora_rank", None) or KV_RANK_MULT * hd
    return dc, hd // 2, (Q_RANK_MULT * hd if q_rank else None)


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (F.rms_norm(xf, (xf.shape[-1],), eps=eps) * weight).to(x.dtype)


class LatentAttention(nn.Module):
    """Multi-head latent attention (see the module docstring); ``forward(x, pos, bias, cache, layer)``."""

    q_rank = False

    def __init__(self, cfg: Any):
        super().__init__()
        d, h, hd = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.h, self.hd = h, hd
        self.dc, self.dr, qr = mla_dims(cfg, self.q_rank)
        if qr is None:
            self.q = nn.Linear(d, h * (hd + self.dr), bias=False)
        else:
            self.q_a = nn.Linear(d, qr, bias=False)
            self.q_a_norm = nn.Parameter(torch.ones(qr))
            self.q_b = nn.Linear(qr, h * (hd + self.dr), bias=False)
        self.kv_a = nn.Linear(d, self.dc + self.dr, bias=False)  # DeepSeek's kv_a_proj_with_mqa
        self.kv_norm = nn.Parameter(torch.ones(self.dc))  # kv_a_layernorm (RMSNorm)
        self.kv_b = nn.Linear(self.dc, h * 2 * hd, bias=False)  # per head: [k_C (hd), v (hd)]
        self.out = nn.Linear(h * hd, d, bias=False)
        self.attn = ATTENTION.get("sdpa").fn
        self.causal, self.window, self.eps = cfg.causal, cfg.window, cfg.norm_eps
        self.scale = 1.0 / math.sqrt(hd + self.dr)
        self.absorb: bool | None = None
        self.rope = RotaryAtWidth(self.dr)  # the model's rotary position at width d_R

    # -- pieces ------------------------------------------------------------------------------------------------------


    def queries(self, x: Tensor) -> Tensor:
        """``(B, H, T, hd + d_R)`` before rotation."""
        b, t, _ = x.shape
        q = self.q(x) if not self.q_rank else self.q_b(_rms(self.q_a(x), self.q_a_norm, self.eps))
        return q.view(b, t, self.h, self.hd + self.dr).transpose(1, 2)

    def up(self) -> tuple[Tensor, Tensor]:
        """``W_UK``, ``W_UV``: ``(H, hd, d_c)`` each (views of ``kv_b.weight``)."""
        w = self.kv_b.weight.view(self.h, 2 * self.hd, self.dc)
        return w[:, :self.hd], w[:, self.hd:]

    def attend_window(self, cache: Any) -> int | None:
        held = cache.window() if cache is not None else None
        return self.window if held is None else min(w for w in (self.window, held) if w is not None)

    # -- forward -----------------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, pos: Any, bias: Any, cache: Any, layer: int) -> Tensor:
        b, t, _ = x.shape
        offset = cache.length if cache is not None else 0
        seq_len = offset + t
        rope = self.rope(pos)
        q_nope, q_pe = self.queries(x).split([self.hd, self.dr], dim=-1)
        c, k_pe = self.kv_a(x).split([self.dc, self.dr], dim=-1)
        c = _rms(c, self.kv_norm, self.eps)
        if cache is not None and getattr(cache, "reposition", False):  # StreamingLLM: positions within the cache
            c, k_pe = cache.update(layer, c, k_pe)
            n = c.shape[1]
            q_pe, k_pe = rope.rotate_q(q_pe, n - t, n), rope.rotate_k(k_pe[:, None], 0, n)[:, 0]
        elif cache is not None and pos.needs_raw_cache:  # length-dependent rotation: keep raw keys, rotate them all
            q_pe = rope.rotate_q(q_pe, offset, seq_len)
            c, k_pe = cache.update(layer, c, k_pe)
            k_pe = rope.rotate_k(k_pe[:, None], 0, seq_len)[:, 0]
        else:
            q_pe = rope.rotate_q(q_pe, offset, seq_len)
            k_pe = rope.rotate_k(k_pe[:, None], offset, seq_len)[:, 0]
            if cache is not None:
                c, k_pe = cache.update(layer, c, k_pe)
        window = self.attend_window(cache)
        absorb = self.absorb if self.absorb is not None else (cache is not None and not torch.is_grad_enabled())
        if absorb:
            w_uk, w_uv = self.up()
            qa = torch.cat([torch.einsum("bhtd,hdc->bhtc", q_nope, w_uk), q_pe], dim=-1)
            ka = torch.cat([c, k_pe], dim=-1)[:, None]
            # the values are the latent, the first d_c dims of the keys: attending over the keys as values gives
            # q, k and v one head dim, which the fused kernels need (else the math path: 20x slower at 8k on CPU)
            # one shared latent head: a one-query step is MQA decode, which the SDPA kernel folds into one head's
            # query rows (variants/attention/sdpa.py), reading the latent once
            yc = self.attn(qa, ka, ka, causal=self.causal, bias=bias, window=window, scale=self.scale)[..., :self.dc]
            y = torch.einsum("bhtc,hdc->bhtd", yc, w_uv)
        else:
            n = c.shape[1]
            k_nope, v = self.kv_b(c).view(b, n, self.h, 2 * self.hd).transpose(1, 2).split(self.hd, dim=-1)
            k = torch.cat([k_nope, k_pe[:, None].expand(b, self.h, n, self.dr)], dim=-1)
            # the values padded with zeros to the query/key head dim (hd + d_R), the output's first hd dims kept
            # (exact: the padding's outputs are weighted sums of zeros): one head dim for q, k and v, which the fused
            # kernels need, as vLLM pads MLA's prefill values; else SDPA's (much slower) math path
            y = self.attn(torch.cat([q_nope, q_pe], dim=-1), k, F.pad(v, (0, self.dr)), causal=self.causal, bias=bias,
                          window=window, scale=self.scale)[..., :self.hd]
        return self.out(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


class LatentAttentionQ(LatentAttention):
    """:class:`LatentAttention` with the query compressed too (``d_c' = 12·hd``)."""

    q_rank = True


def mla_params(cfg: Any, q_rank: bool = False) -> int:
    """What :class:`LatentAttention` allocates: q (or q_a, its norm, q_b), kv_a, the latent norm, kv_b, out."""
    d, h, hd = cfg.d_model, cfg.n_heads, cfg.head_dim
    dc, dr, qr = mla_dims(cfg, q_rank)
    q = d * h * (hd + dr) if qr is None else d * qr + qr + qr * h * (hd + dr)
    return q + d * (dc + dr) + dc + dc * h * 2 * hd + h * hd * d


LATENT_LAYOUT = CacheLayout(
    names=("latent", "k_rope"),
    shapes=lambda cfg, b, n: ((b, n, mla_dims(cfg)[0]), (b, n, cfg.head_dim // 2)),
    time_dim=1, description="the normalised KV latent (B, T, d_c; default 4·hd) and the rotated shared key (B, T, hd/2)")


def _check(cfg: Any) -> str | None:
    if cfg.bias:
        return "has no projection biases (bias=False), as DeepSeek-V2's attention"
    if cfg.head_dim % 4:
        return f"needs head_dim divisible by 4 (a rotary key of head_dim/2 dims), got {cfg.head_dim}"
    top = 2 * cfg.n_heads * cfg.head_dim
    if getattr(cfg, "kv_lora_rank", None) is not None and not 1 <= cfg.kv_lora_rank <= top:
        return (f"model.kv_lora_rank (d_c) must be in 1..{top} (2·n_heads·head_dim: a latent wider than MHA's keys "
                f"and values compresses nothing), got {cfg.kv_lora_rank}")
    return None


@dataclass(frozen=True, eq=False)
class LatentSpec(LayerSpec):
    """A latent-attention :class:`LayerSpec`: ``knobs`` are the model settings only it reads."""

    knobs: tuple[str, ...] = ("kv_lora_rank",)


def _flops(pass_: str, cfg: Any, *, batch: int, seq_len: int, chunk: int | None = None) -> tuple[float, str]:
    """The training path's core: scores over ``hd + d_R`` dims, values of ``hd``: the standard count at an
    effective head dim of ``(1.5·hd + hd) / 2 = 1.25·hd``."""
    return spec("sdpa").flops(pass_, batch=batch, n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads, seq_len=seq_len,
                              head_dim=5 * cfg.head_dim // 4, causal=cfg.causal, window=cfg.window, chunk=chunk)


_PAPER = ("DeepSeek-AI 2024, DeepSeek-V2 (multi-head latent attention); reference: transformers "
          "DeepseekV3Attention, DeepSeek-V3 inference/model.py MLA (absorb)")
SPEC = LatentSpec(
    key="mla", module=LatentAttention, kernel="sdpa", paper=_PAPER,
    description="multi-head latent attention: KV from a cached 4·hd latent plus a shared hd/2 rotary key",
    params=mla_params, cache=LATENT_LAYOUT, flops=_flops, unsupported=("gqa",), check=_check,
).register(BUILTIN)
SPEC_Q = LatentSpec(
    key="mla_q", module=LatentAttentionQ, kernel="sdpa", paper=_PAPER,
    description="multi-head latent attention with the query compressed too (a 12·hd query latent)",
    params=lambda cfg: mla_params(cfg, True), cache=LATENT_LAYOUT, flops=_flops, unsupported=("gqa",),
    check=_check,
).register(BUILTIN)
