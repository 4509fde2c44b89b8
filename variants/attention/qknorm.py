"""``qknorm``: the standard multi-head layer with a norm on each head's query and key after the projection and before
the rotation (Dehghani et al. 2023, *Scaling Vision Transformers to 22B Parameters*; Wortsman et al. 2023,
*Small-scale proxies for large-scale Transformer training instabilities*).

Follows Hugging Face transformers' ``Qwen3Attention`` (also Gemma 3): ``q_norm`` / ``k_norm`` are norms of width
``head_dim`` applied to ``q_proj(x).view(..., heads, head_dim)`` -- one set of weights shared by the heads -- and the
rotary embedding comes after them. The norm is the model's own ``cfg.norm`` (RMSNorm as in Qwen3/OLMo 2, or
LayerNorm), at ``cfg.norm_eps``. (OLMo 2 normalises the whole ``H·head_dim`` projection instead; this is the per-head
form the issue asks for.) Everything else -- projections, GQA, windows, caches -- is :class:`MultiHeadAttention`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ablate.registry.keys import NORM
from ablate.variants.attention.contract import BUILTIN
from ablate.variants.attention.layer import LayerSpec, MultiHeadAttention, mha_params
from ablate.variants.norms import build_norm

__all__ = ["QKNormAttention", "qknorm_params", "SPEC"]


class QKNormAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` with ``q_norm`` / ``k_norm`` (``cfg.norm`` over ``head_dim``) before rotation."""

    def __init__(self, cfg: Any):
        super().__init__(cfg, kernel="sdpa")
        self.q_norm = build_norm(cfg.norm, cfg.head_dim, cfg.norm_eps)
        self.k_norm = build_norm(cfg.norm, cfg.head_dim, cfg.norm_eps)

    def transform_q(self, q: Tensor, pos: Any, offset: int, seq_len: int) -> Tensor:
        return pos.rotate_q(self.q_norm(q), offset, seq_len)

    def transform_k(self, k: Tensor, pos: Any, offset: int, seq_len: int) -> Tensor:
        return pos.rotate_k(self.k_norm(k), offset, seq_len)


def qknorm_params(cfg: Any) -> int:
    """The standard layer's parameters plus two norms of width ``head_dim`` (gain, and a bias if the norm has one)."""
    per_norm = cfg.head_dim * (2 if NORM.get(cfg.norm).supports_("learned_bias") else 1)
    return mha_params(cfg) + 2 * per_norm


SPEC = LayerSpec(
    key="qknorm", module=QKNormAttention, kernel="sdpa",
    description="QK-norm: cfg.norm on each head's q and k after projection, before rotation (Qwen3/Gemma 3 form)",
    paper="Dehghani et al. 2023 (ViT-22B); Wortsman et al. 2023, Small-scale proxies for large-scale Transformer "
          "training instabilities; reference: transformers Qwen3Attention q_norm/k_norm",
    params=qknorm_params,
).register(BUILTIN)
