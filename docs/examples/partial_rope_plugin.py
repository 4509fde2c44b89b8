"""A position encoding defined outside ablate: partial rotary embeddings (``rope_partial``).

GPT-NeoX-20B and GPT-J rotate only the first part of every query/key head (GPT-NeoX-20B: ``rotary_pct = 0.25``;
GPT-J: ``rotary_dim = 64`` of 256) and pass the other dimensions through unrotated, so part of each head is
position-free. The frequencies are RoPE's for a head of the rotated width: ``theta_i = base^(-2i / rot_dim)``, and
the rotated part pairs its halves like ``rope`` (``rotate_half``).

Use it without installing anything (docs/adding-a-variant.md walks through this file):

    ablate list --plugin docs/examples/partial_rope_plugin.py --axis position
    ablate run --suite extrapolation --preset micro --plugin docs/examples/partial_rope_plugin.py \\
        --set model.position=rope_partial
"""

from __future__ import annotations

from torch import Tensor, cat

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.registry import POSITION
from ablate.variants.positions import Rotary

ROTARY_FRACTION = 0.25  # GPT-NeoX-20B's rotary_pct


def rotary_dim(head_dim: int, fraction: float = ROTARY_FRACTION) -> int:
    """Width of the rotated part: ``int(head_dim * fraction)`` (as GPT-NeoX), rounded down to an even number."""
    return int(head_dim * fraction) // 2 * 2


@POSITION.register(
    "rope_partial",
    description="partial RoPE: rotate the first 25% of each head's dims (RoPE frequencies of that width), "
                "pass the rest through",
    paper="Black et al. 2022, GPT-NeoX-20B: An Open-Source Autoregressive Language Model (rotary_pct 0.25)",
    # The facts the suites and validation ask a position entry (see the built-ins in ablate/variants/positions.py):
    kind="rotary",          # rotates q and k inside attention (an even head_dim is checked for it)
    extrapolates=False,     # no length-extrapolation method of its own
    params=False,           # parameter-free: swaps freely at evaluation time
    needs_bias=False,       # no additive attention-score bias for the kernel to take
    max_len_bound=False,    # no table that ends at max_len
)
class PartialRoPE(Rotary):
    """:class:`~ablate.variants.positions.Rotary` on the first :func:`rotary_dim` dims of each head."""

    scaling = "default"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)  # checks head_dim, rope_base, rope_scale, train_len like every rotary variant
        self.full_dim = self.head_dim
        self.rot_dim = rotary_dim(self.full_dim)
        if self.rot_dim < 2:
            raise ConfigError(f"rope_partial rotates {ROTARY_FRACTION:g} of head_dim={self.full_dim}, fewer than 2 "
                              f"dims; use a head_dim of at least {int(2 / ROTARY_FRACTION)}")
        self.head_dim = self.rot_dim  # Rotary builds its frequencies and cos/sin tables for the rotated width

    def rotate(self, x: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        if x.shape[-1] != self.full_dim:
            raise ValueError(f"PartialRoPE: expected head_dim={self.full_dim}, got last dim {x.shape[-1]}")
        r = self.rot_dim
        return cat((super().rotate(x[..., :r], offset, seq_len), x[..., r:]), dim=-1)

    def extra_repr(self) -> str:
        return f"rot_dim={self.rot_dim} of {self.full_dim}, " + super().extra_repr()
