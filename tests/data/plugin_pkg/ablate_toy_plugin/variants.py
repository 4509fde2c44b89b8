"""ScaleNorm (Nguyen & Salazar 2019) as the norm variant ``toy_scalenorm``: ``g * x / max(||x||, eps)`` with one
learned scalar ``g`` initialised to ``sqrt(dim)``. Same signature as every norm: ``cls(dim, eps) -> nn.Module``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ablate.registry.keys import NORM


@NORM.register("toy_scalenorm", description="ScaleNorm: one learned scalar g times x / ||x|| (no per-channel gain)",
               paper="Nguyen & Salazar 2019, Transformers without Tears", learned_bias=False)
class ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.tensor(math.sqrt(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = self.g * xf / xf.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return y.to(x.dtype)
