"""Score-bias math of the bias positions, used by :class:`ablate.variants.positions.ALiBi` and
:class:`~ablate.variants.positions.T5Bias` (which re-export every name here): ALiBi head slopes (Press et al. 2022)
and T5 relative-position buckets (Raffel et al. 2020). No registration happens here."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError

__all__ = ["alibi_slopes", "T5_NUM_BUCKETS", "T5_MAX_DISTANCE", "t5_relative_position_bucket", "t5_max_exact",
           "t5_max_distance"]


# ---------------------------------------------------------------------------------------------------------------
# ALiBi (Press et al. 2022)


def alibi_slopes(n_heads: int) -> list[float]:
    """Head slopes: geometric 2^(-8i/n), i = 1..n, for n a power of two; otherwise the slopes for the closest
    lower power of two c, followed by every other slope of 2c (the odd-indexed ones), the first n - c of them."""
    if n_heads < 1:
        raise ConfigError(f"ALiBi needs n_heads >= 1, got {n_heads}")

    def pow2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    if n_heads & (n_heads - 1) == 0:
        return pow2(n_heads)
    closest = 1 << (n_heads.bit_length() - 1)
    return pow2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


# ---------------------------------------------------------------------------------------------------------------
# T5 relative position bias (Raffel et al. 2020)

T5_NUM_BUCKETS = 32
T5_MAX_DISTANCE = 128  # T5's value, for its 512-token training; t5_max_distance(cfg) ties it to train_len


def t5_relative_position_bucket(relative_position: Tensor, bidirectional: bool = True,
                                num_buckets: int = T5_NUM_BUCKETS, max_distance: int = T5_MAX_DISTANCE) -> Tensor:
    """Bucket of ``relative_position = key_pos - query_pos`` (T5).

    Bidirectional: half the buckets for keys after the query (offset num_buckets/2), half for keys at or before.
    Causal: only keys at or before the query count (future keys share bucket 0). Within a half of ``nb`` buckets,
    distances below nb/2 get their own bucket; larger ones are binned logarithmically up to ``max_distance``,
    beyond which they all share the last bucket.
    """
    rel = relative_position.to(torch.long)
    bucket = torch.zeros_like(rel)
    nb = num_buckets
    if bidirectional:
        nb = nb // 2
        bucket = bucket + (rel > 0).to(torch.long) * nb
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)
    max_exact = nb // 2
    is_small = n < max_exact
    nf = n.to(torch.float64).clamp(min=1.0)  # log(0) never used: those are small
    large = max_exact + (torch.log(nf / max_exact) / math.log(max_distance / max_exact)
                         * (nb - max_exact)).to(torch.long)
    large = large.clamp(max=nb - 1)
    return bucket + torch.where(is_small, n, large)


def t5_max_exact(num_buckets: int, bidirectional: bool) -> int:
    """Distances below this get one bucket each: half of the buckets of one direction."""
    return (num_buckets // 2 if bidirectional else num_buckets) // 2


def t5_max_distance(cfg: ModelConfig, num_buckets: int = T5_NUM_BUCKETS) -> int:
    """``cfg.t5_max_distance``, or when None ``max(train_len // 4, 2 * max_exact)`` (T5 ties 128 to 512 tokens):
    128 at train_len 512 bidirectional, 32 at train_len 64 causal. An explicit value must exceed max_exact."""
    bidirectional = not bool(cfg.causal)
    max_exact = t5_max_exact(num_buckets, bidirectional)
    md = cfg.t5_max_distance
    if md is None:
        return max(int(cfg.train_len) // 4, 2 * max_exact)
    if isinstance(md, bool) or int(md) != md or md <= max_exact:
        kind = "bidirectional" if bidirectional else "causal"
        raise ConfigError(f"t5_max_distance must be an integer > {max_exact} (the exact-distance buckets of "
                          f"{num_buckets} {kind} buckets), got {md}")
    return int(md)
