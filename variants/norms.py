"""Normalisation layers. One signature: ``cls(dim: int, eps: float) -> nn.Module``.

Placement (pre / post residual) is the model config's ``norm_placement`` field, not a variant here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.registry.keys import NORM, Registry

BUILTIN = Registry("norm")  # this module's keys; ablate.registry.keys.build() copies them into NORM


@BUILTIN.register("layernorm", description="LayerNorm: subtract the mean, divide by the std, learned gain and bias",
               paper="Ba, Kiros, Hinton 2016, Layer Normalization", learned_bias=True)
class LayerNorm(nn.LayerNorm):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__(dim, eps=eps)


@BUILTIN.register("rmsnorm", description="RMSNorm: divide by the root mean square, learned gain, no centring",
               paper="Zhang & Sennrich 2019, Root Mean Square Layer Normalization", learned_bias=False)
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in at least float32 (bf16 sums of squares lose too much), return in the input dtype.
        # F.rms_norm is PyTorch's fused kernel (x * rsqrt(mean(x^2) + eps)); the tests check it against the formula.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = F.rms_norm(xf, (xf.shape[-1],), eps=self.eps)
        return (y * self.weight).to(x.dtype)


def build_norm(key: str, dim: int, eps: float = 1e-5) -> nn.Module:
    return NORM.get(key).fn(dim, eps)
