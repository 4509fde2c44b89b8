"""The position slot's contract: the :class:`Position` base class (hooks ``embed`` / ``rotate_q`` / ``rotate_k`` /
``score_bias``), the :class:`ScoreBias` and :class:`Caveat` it returns, and :data:`BUILTIN`, the table every
position module registers its keys in (:mod:`ablate.variants.positions`, :mod:`ablate.variants.rope`,
:mod:`ablate.variants.xpos`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ablate.core.config import ModelConfig
from ablate.registry.keys import Registry

__all__ = ["BUILTIN", "Caveat", "Position", "ScoreBias", "check_offset", "query_key_positions"]

BUILTIN = Registry("position")  # the position keys; ablate.registry.keys.build() copies them into POSITION

# ---------------------------------------------------------------------------------------------------------------
# Contracts


@dataclass
class ScoreBias:
    """An additive attention-score bias from the position slot.

    ``dense(Tq, Tk, device, dtype) -> (H, Tq, Tk)`` with bottom-right alignment: query ``i`` sits at absolute
    position ``Tk - Tq + i``, keys at ``0..Tk-1``. ``alibi_slopes`` is ``(H,)`` when the bias is ALiBi
    (``bias[h, i, j] = -slope[h] * dist(i, j)``), so kernels with native ALiBi can use the slopes instead.
    """

    dense: Callable[[int, int, torch.device, torch.dtype], Tensor]
    alibi_slopes: Tensor | None = None
    kind: str = "dense"


@dataclass(frozen=True)
class Caveat:
    """Why a configuration makes a position variant degenerate or untrained; ``message`` is one line."""

    code: str
    message: str


def query_key_positions(Tq: int, Tk: int, device) -> tuple[Tensor, Tensor]:
    """Absolute positions ``(Tq, 1)`` of the queries (bottom-right aligned) and ``(1, Tk)`` of the keys."""
    if Tq < 0 or Tk < 0 or Tq > Tk:
        raise ValueError(f"need 0 <= Tq <= Tk, got Tq={Tq}, Tk={Tk}")
    p = torch.arange(Tk - Tq, Tk, device=device, dtype=torch.long)[:, None]
    j = torch.arange(Tk, device=device, dtype=torch.long)[None, :]
    return p, j


class Position(nn.Module):
    """Base class: no position information (identities / ``None``)."""

    needs_raw_cache: bool = False  # True when the KV cache must keep un-rotated keys (rope_dynamic_ntk)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    def embed(self, x: Tensor, offset: int = 0) -> Tensor:
        return x

    def rotate(self, x: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        return x

    def rotate_q(self, q: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        """The transform of queries (default :meth:`rotate`); xPos-like variants scale q and k apart."""
        return self.rotate(q, offset, seq_len)

    def rotate_k(self, k: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        """The transform of keys (default :meth:`rotate`)."""
        return self.rotate(k, offset, seq_len)

    def score_bias(self) -> ScoreBias | None:
        return None

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:  # so that `module(x)` means embed
        return self.embed(x, offset)

    @classmethod
    def param_count(cls, cfg: ModelConfig) -> int:
        """Parameters this position slot adds to a model of ``cfg`` (0: parameter-free)."""
        return 0

    @classmethod
    def caveats(cls, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False) -> list[Caveat]:
        """What makes this variant degenerate or untrained when a model trained with ``cfg`` is evaluated on
        ``eval_lens`` (``incremental``: token by token with a KV cache rather than full windows)."""
        return []


def check_offset(offset: int) -> int:
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"position offset must be >= 0, got {offset}")
    return offset
