"""Feed-forward blocks, keyed by their activation. One signature: ``cls(d_model, hidden, bias) -> nn.Module``.

``hidden`` is the width of the plain (non-GLU) FFN. GLU variants have three matrices instead of two, so they use
``int(2 * hidden / 3)`` to keep the parameter count matched, as in Shazeer 2020 ("GLU Variants Improve Transformer").
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.registry.keys import ACTIVATION, Registry

BUILTIN = Registry("activation")  # this module's keys; ablate.registry.keys.build() copies them into ACTIVATION

SHAZEER = "Shazeer 2020, GLU Variants Improve Transformer"


def glu_hidden(hidden: int) -> int:
    """Width of a GLU FFN with the same parameter count as a plain FFN of width ``hidden``."""
    return max(1, int(2 * hidden / 3))


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


class FFN(nn.Module):
    """x -> W2 act(W1 x)."""

    act: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, d_model: int, hidden: int, bias: bool = False):
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(type(self).act(self.up(x)))


class GLUFFN(nn.Module):
    """x -> W2 (act(W x) * V x), hidden width 2/3 of the plain FFN's."""

    act: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, d_model: int, hidden: int, bias: bool = False):
        super().__init__()
        h = glu_hidden(hidden)
        self.gate = nn.Linear(d_model, h, bias=bias)
        self.up = nn.Linear(d_model, h, bias=bias)
        self.down = nn.Linear(h, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(type(self).act(self.gate(x)) * self.up(x))


def _register(key: str, base: type, act: Callable, description: str, paper: str) -> type:
    cls = type(f"{key.upper()}FFN", (base,), {"act": staticmethod(act), "__doc__": description})
    BUILTIN.register(key, description=description, paper=paper, glu=base is GLUFFN)(cls)
    return cls


ReLUFFN = _register("relu", FFN, F.relu, "ReLU FFN (the 2017 Transformer)", "Vaswani et al. 2017")
GELUFFN = _register("gelu", FFN, F.gelu, "GELU FFN (exact erf GELU)", "Hendrycks & Gimpel 2016")
SiLUFFN = _register("silu", FFN, F.silu, "SiLU / Swish FFN", "Ramachandran et al. 2017; Elfwing et al. 2018")
ReLU2FFN = _register("relu2", FFN, relu2, "Squared-ReLU FFN", "So et al. 2021, Primer")
SwiGLUFFN = _register("swiglu", GLUFFN, F.silu, "SwiGLU: Swish(xW) * xV", SHAZEER)
GEGLUFFN = _register("geglu", GLUFFN, F.gelu, "GEGLU: GELU(xW) * xV", SHAZEER)
ReGLUFFN = _register("reglu", GLUFFN, F.relu, "ReGLU: ReLU(xW) * xV", SHAZEER)


def build_ffn(key: str, d_model: int, hidden: int, bias: bool = False) -> nn.Module:
    return ACTIVATION.get(key).fn(d_model, hidden, bias)
