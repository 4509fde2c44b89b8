"""``based`` / ``based_f8`` / ``based_f24``: Based linear attention (Arora et al. 2024, *Simple linear attention
language models balance the recall-throughput tradeoff*), as HazyResearch ``zoology`` builds it for the paper's
Figure 2 (``zoology/experiments/paper_configs/arxiv24_based_figure2/configs.py``): a short causal convolution
(``zoology/mixers/base_conv.py`` ``BaseConv``, kernel 3) and linear attention with a 2nd-order Taylor feature map
(``zoology/mixers/based.py`` ``Based``, ``zoology/mixers/feature_maps/taylor.py`` ``TaylorExp``).

With the model's ``H`` heads, ``Hkv`` KV heads of width ``hd`` and ``d_model = d``, on the block's normed input ``x``:

* ``u = conv(x) * proj(x) + x``: ``conv`` a depthwise causal ``Conv1d`` of kernel 3 with bias (padding 2, the first
  ``T`` outputs), ``proj`` a ``d x d`` linear layer with bias (``BaseConv``, ``use_act=False``);
* ``q = u W_q`` (``H x f``), ``k = u W_k`` (``Hkv x f``), ``v = u W_v`` (``Hkv x hd``), no biases; a rotary position
  rotates ``q`` and ``k`` at width ``f`` (the reference's ``apply_rotary`` option; its Figure 2 runs without);
* ``phi(x) = [1, x / f^(1/4), vec(x x^T) / (sqrt(2) sqrt(f))]`` (``1 + f + f^2`` features), so
  ``phi(q).phi(k) = 1 + q.k / sqrt(f) + (q.k)^2 / (2 f)``;
* ``y_i = sum_{j<=i} phi(q_i).phi(k_j) v_j / (sum_{j<=i} phi(q_i).phi(k_j) + 1e-12)``, then the output projection.

Where the reference places the convolution: its 2-layer Figure 2 model is a ``Hybrid`` of ``[BaseConv, Based]``
picked by layer index (layer 0 the convolution, layer 1 the linear attention). An ablate attention key names the
same layer in every block, so this layer runs the pair in one attention slot, convolution first: a 2-layer model
has two of each (the reference one of each).

Up to ``LINEAR_CHUNK`` tokens the attention runs in the reference's quadratic view (:func:`based_quadratic`, the
Figure 2 setting), longer as the chunked scan of :func:`ablate.variants.attention.linear_attention` over the
Taylor features. Decoding caches the layer's input ``x`` (``d`` per token) and recomputes the layer over the kept
tokens (exact; the recurrent form is :func:`based_recurrent`). The decode state a recurrent implementation keeps is
what the reference's ``state_size`` counts: ``Hkv (hd + 1) E`` with ``E = 1 + f + f (f + 1) / 2`` (the symmetric
2nd-order terms once) plus the convolution's ``d x 3``. ``f`` is the key: 16 (``based``, the reference's default), 8,
24 (the Figure 2 sweep); :func:`based_layer` registers another from a plugin.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ablate.core.attention_cost import LINEAR_PASS_FACTOR, linear_attention_flops
from ablate.variants.attention.cache import CacheLayout
from ablate.variants.attention.contract import BUILTIN, FLOPS_LINEAR
from ablate.variants.attention.layer import LayerSpec
from ablate.variants.attention.linear import LINEAR_CHUNK, linear_attention
from ablate.variants.positions import RotaryAtWidth  # positions first: the keys keep their order

__all__ = ["BasedAttention", "BaseConv", "taylor_exp", "based_quadratic", "based_recurrent", "based_params",
           "based_state", "based_layer", "CONV_KERNEL", "BASED_EPS", "FEATURE_DIMS", "X_LAYOUT"]

CONV_KERNEL = 3  # BaseConv kernel_size in the Figure 2 configs
BASED_EPS = 1e-12  # Based(eps=1e-12): added to the denominator
FEATURE_DIMS = {"based": 16, "based_f8": 8, "based_f24": 24}  # Based's default 16; Figure 2 sweeps 8, 16, 24


def taylor_exp(x: Tensor) -> Tensor:
    """``TaylorExp.forward``: ``[1, x / f^(1/4), vec(x x^T) / (sqrt(2) sqrt(f))]`` over the last dim ``f``."""
    f = x.shape[-1]
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(start_dim=-2) / math.sqrt(2.0)
    return torch.cat([torch.ones_like(x[..., :1]), x / f ** 0.25, x2 / math.sqrt(f)], dim=-1)


def based_quadratic(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, eps: float = BASED_EPS) -> Tensor:
    """The reference's ``train_view="quadratic"`` (its Figure 2 setting): ``A = phi(Q) phi(K)^T`` in closed form,
    ``1 + s / sqrt(f) + s^2 / (2 f)`` with ``s = q.k`` (no ``1 + f + f^2`` features formed), causal mask
    (bottom-right: queries are the last ``Tq`` of ``Tk``), ``y = A V / (A 1 + eps)``. Half inputs in float32."""
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    b, h, tq, f = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    qg = q.to(work).reshape(b, hkv, h // hkv, tq, f)  # query heads grouped under their kv head
    s = qg @ k.to(work).transpose(-2, -1).unsqueeze(2)  # (B, Hkv, G, Tq, Tk)
    a = 1.0 + s / math.sqrt(f) + s * s / (2.0 * f)
    if causal:
        hide = torch.arange(tk, device=q.device)[None, :] > torch.arange(tk - tq, tk, device=q.device)[:, None]
        a = a.masked_fill(hide, 0.0)
    y = (a @ v.to(work).unsqueeze(2)) / (a.sum(-1, keepdim=True) + eps)
    return y.reshape(b, h, tq, -1).to(q.dtype)


def based_recurrent(q: Tensor, k: Tensor, v: Tensor, eps: float = BASED_EPS) -> Tensor:
    """The recurrent (decode) form, one token at a time: ``S += phi(k) v^T``, ``z += phi(k)``,
    ``y = phi(q) S / (phi(q) z + eps)``; ``q`` ``(B, H, T, f)``, ``k`` ``(B, Hkv, T, f)``, ``v`` ``(B, Hkv, T, dv)``."""
    g = q.shape[1] // k.shape[1]
    fk, vv = taylor_exp(k).repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    fq = taylor_exp(q)
    s = fq.new_zeros(*fq.shape[:2], fq.shape[-1], v.shape[-1])
    z = fq.new_zeros(*fq.shape[:2], fq.shape[-1])
    out = []
    for t in range(q.shape[2]):
        s = s + fk[:, :, t, :, None] * vv[:, :, t, None, :]
        z = z + fk[:, :, t]
        num = (fq[:, :, t, :, None] * s).sum(-2)
        out.append(num / ((fq[:, :, t] * z).sum(-1, keepdim=True) + eps))
    return torch.stack(out, dim=2)


class BaseConv(nn.Module):
    """``y = conv(u) * proj(u) + u``: a depthwise causal convolution gated by a linear projection."""

    def __init__(self, d: int, kernel: int = CONV_KERNEL):
        super().__init__()
        self.conv = nn.Conv1d(d, d, kernel_size=kernel, groups=d, padding=kernel - 1)
        self.proj = nn.Linear(d, d)

    def forward(self, u: Tensor) -> Tensor:
        t = u.shape[1]
        return self.conv(u.transpose(1, 2))[..., :t].transpose(1, 2) * self.proj(u) + u


class BasedAttention(nn.Module):
    """BaseConv then Based linear attention with the Taylor feature map of width ``feature_dim``."""

    feature_dim = 16

    def __init__(self, cfg: Any):
        super().__init__()
        d, f = cfg.d_model, self.feature_dim
        self.h, self.hkv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.mix = BaseConv(d)
        self.q = nn.Linear(d, self.h * f, bias=False)
        self.k = nn.Linear(d, self.hkv * f, bias=False)
        self.v = nn.Linear(d, self.hkv * self.hd, bias=False)
        self.out = nn.Linear(self.h * self.hd, d, bias=False)
        self.causal = cfg.causal
        self.rope = RotaryAtWidth(self.feature_dim)  # the model's rotary position at width f


    def forward(self, x: Tensor, pos: Any, bias: Any, cache: Any, layer: int) -> Tensor:
        b, t, _ = x.shape
        if cache is not None:
            (x,) = cache.update(layer, x)  # every kept input: the layer is recomputed over them
        n, f = x.shape[1], self.feature_dim
        u = self.mix(x)
        q = self.q(u[:, n - t:]).view(b, t, self.h, f).transpose(1, 2)
        k = self.k(u).view(b, n, self.hkv, f).transpose(1, 2)
        v = self.v(u).view(b, n, self.hkv, self.hd).transpose(1, 2)
        rope = self.rope(pos)
        q, k = rope.rotate_q(q, n - t, n), rope.rotate_k(k, 0, n)
        if n <= LINEAR_CHUNK:  # one chunk: the quadratic view (the scan would form the same T x T matrix)
            y = based_quadratic(q, k, v, causal=self.causal)
        else:
            y = linear_attention(q, k, v, causal=self.causal, feature_map=taylor_exp, eps=BASED_EPS)
        return self.out(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


def based_params(cfg: Any, f: int) -> int:
    """What :class:`BasedAttention` allocates: conv ``d·3 + d``, proj ``d² + d``, q ``d·H·f``, k ``d·Hkv·f``,
    v ``d·Hkv·hd``, out ``H·hd·d``."""
    d, h, hkv, hd = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
    return d * CONV_KERNEL + d + d * d + d + d * h * f + d * hkv * f + d * hkv * hd + h * hd * d


def based_state(cfg: Any, f: int) -> int:
    """Decode-state elements of one layer for one sequence (the reference's ``Based.state_size`` plus
    ``ShortConvolution.state_size``): ``Hkv·hd·E + Hkv·E + d·3``, ``E = 1 + f + f(f+1)/2``."""
    e = 1 + f + f * (f + 1) // 2
    return cfg.kv_heads * cfg.head_dim * e + cfg.kv_heads * e + cfg.d_model * CONV_KERNEL


def _flops(f: int):
    def count(pass_: str, cfg: Any, *, batch: int, seq_len: int, chunk: int | None = None) -> tuple[float, str]:
        """What runs: up to one chunk the quadratic view (``q.k`` and ``A V`` products over all ``T x T`` pairs,
        about 7 element-wise operations per pair for the kernel, mask and row sum, the division), longer the chunked
        scan at feature width ``1 + f + f²`` and value width ``hd``; plus the depthwise convolution and its gate
        (``2·3·d + 2·d`` per token). Backward: 2 x forward. ``proj`` and q/k/v/out are matmul parameters."""
        c = int(LINEAR_CHUNK if chunk is None else chunk)
        h, hd, t = cfg.n_heads, cfg.head_dim, seq_len
        if t <= LINEAR_CHUNK:
            scan = batch * (2.0 * h * t * t * (f + hd) + 7.0 * h * t * t + h * t * hd) * LINEAR_PASS_FACTOR[pass_]
        else:
            scan = linear_attention_flops(batch, h, cfg.kv_heads, t, t, 1 + f + f * f, hd, causal=cfg.causal,
                                          chunk=c, mode=pass_)
        conv = batch * seq_len * cfg.d_model * (2.0 * CONV_KERNEL + 2.0)
        return scan + conv * LINEAR_PASS_FACTOR[pass_], FLOPS_LINEAR
    return count


X_LAYOUT = CacheLayout(names=("x",), shapes=lambda cfg, b, n: ((b, n, cfg.d_model),), time_dim=1,
                       description="the layer's input x, (B, T, d_model): the layer is recomputed over it")


def _check(cfg: Any) -> str | None:
    if cfg.bias:
        return "has no q/k/v/out biases (bias=False), as the reference's Based"
    return None


_PAPER = ("Arora et al. 2024, Simple linear attention language models balance the recall-throughput tradeoff "
          "(Based); reference: HazyResearch zoology mixers/based.py (Based), feature_maps/taylor.py (TaylorExp), "
          "mixers/base_conv.py (BaseConv, kernel 3)")


def based_layer(key: str, feature_dim: int, table: Any = None) -> LayerSpec:
    """Register Based with Taylor feature dimension ``feature_dim`` (even: RoPE rotates pairs) under ``key``."""
    if feature_dim < 2 or feature_dim % 2:
        raise ValueError(f"based feature_dim must be even and >= 2, got {feature_dim}")
    cls = type(f"BasedAttentionF{feature_dim}", (BasedAttention,), {"feature_dim": feature_dim})
    return LayerSpec(
        key=key, module=cls, kernel="linear", paper=_PAPER,
        description=f"Based: short causal conv (BaseConv, kernel 3) then linear attention with a 2nd-order Taylor "
                    f"feature map of dim {feature_dim}",
        params=lambda cfg: based_params(cfg, feature_dim), cache=X_LAYOUT, flops=_flops(feature_dim),
        unsupported=("window",), check=_check, state=lambda cfg: based_state(cfg, feature_dim),
        state_description=f"recurrent state (Taylor features E={1 + feature_dim + feature_dim * (feature_dim + 1) // 2}"
                          f" x d_v + E per KV head, conv d_model x {CONV_KERNEL})",
    ).register(BUILTIN if table is None else table)


SPECS = {key: based_layer(key, f) for key, f in FEATURE_DIMS.items()}
