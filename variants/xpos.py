"""``xpos``: the extrapolatable position embedding of Sun et al. 2022, *A Length-Extrapolatable Transformer*,
following ``microsoft/torchscale``'s ``torchscale/component/xpos_relative_position.py`` (``XPOS``).

A rotary embedding whose pair ``i`` (of ``head_dim/2``) is also scaled: queries at position ``n`` by
``zeta_i^(n/gamma)`` and keys by ``zeta_i^(-n/gamma)``, with ``zeta_i = (2i + 0.4·d) / (1.4·d)`` and ``gamma`` the
reference's ``scale_base`` (512, :data:`XPOS_SCALE_BASE`), so a score is multiplied by ``zeta_i^((n - m)/gamma)``:
a decay with distance, a function of ``n - m`` only. The rotation frequencies are RoPE's (``10000^(-2i/d)``, the
reference's ``fixed_pos_embedding``); the reference rotates interleaved pairs where this rotates the half-split
pairs of :class:`~ablate.variants.positions.Rotary` (the same function up to a fixed permutation of the
projection's columns), and it centres positions on the current length, which cancels in every score (positions
here start at 0, so a key cached at its position stays valid). The paper's blockwise causal attention at
evaluation is not implemented.

Registered in :data:`ablate.variants.position_base.BUILTIN` (imported by :mod:`ablate.variants`); q and k go through
``rotate_q`` / ``rotate_k``, which every attention layer calls.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ablate.core.config import ModelConfig
from ablate.variants.position_base import BUILTIN
from ablate.variants.rope import Rotary

__all__ = ["XPos", "XPOS_SCALE_BASE", "xpos_zeta"]

XPOS_SCALE_BASE = 512.0  # torchscale XPOS(head_dim, scale_base=512)


def xpos_zeta(head_dim: int) -> Tensor:
    """``zeta_i = (2i + 0.4·d) / (1.4·d)`` for ``i < d/2`` (float64): the reference's ``scale`` buffer."""
    return (torch.arange(0, head_dim, 2, dtype=torch.float64) + 0.4 * head_dim) / (1.4 * head_dim)


@BUILTIN.register("xpos", description="xPos: RoPE with q scaled by zeta_i^(n/512) and k by zeta_i^(-n/512)",
                  paper="Sun et al. 2022, A Length-Extrapolatable Transformer; reference: microsoft/torchscale "
                        "xpos_relative_position.py (XPOS, scale_base 512)",
                  kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                  scaling="default")
class XPos(Rotary):
    """RoPE times the xPos scale, up on queries and down on keys (``rotate`` alone is plain RoPE)."""

    scaling = "default"
    scale_base = XPOS_SCALE_BASE

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.zeta = xpos_zeta(self.head_dim)  # float64, CPU; cast per call

    def xpos_scale(self, offset: int, n: int, sign: float, device, dtype: torch.dtype) -> Tensor:
        """``(n, head_dim)``: ``zeta_i^(sign·p/gamma)`` for positions ``p = offset..offset+n-1``, each pair's
        factor on both of its (half-split) dims."""
        p = torch.arange(offset, offset + n, dtype=torch.float64)[:, None]
        s = self.zeta[None, :] ** (sign * p / self.scale_base)
        return torch.cat([s, s], dim=-1).to(device=device, dtype=dtype)

    def _scaled(self, x: Tensor, offset: int, seq_len: int | None, sign: float) -> Tensor:
        offset = int(offset)  # Rotary.rotate refuses a negative one
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        rotated = self.rotate(x.to(cdtype), offset, seq_len)
        return (rotated * self.xpos_scale(offset, x.shape[-2], sign, x.device, cdtype)).to(x.dtype)

    def rotate_q(self, q: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        return self._scaled(q, offset, seq_len, 1.0)

    def rotate_k(self, k: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        return self._scaled(k, offset, seq_len, -1.0)
