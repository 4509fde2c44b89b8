"""Position encodings: one ``nn.Module`` per variant, built as ``cls(cfg)`` and registered in ``POSITION``.

Every variant offers the same three hooks (see ``docs/architecture.md``):

* ``embed(x, offset)``: add an absolute encoding to token embeddings ``(B, T, C)`` at positions ``offset..``;
* ``rotate(x, offset, seq_len)``: rotate queries or keys ``(B, H, T, D)`` at positions ``offset..offset+T-1``;
  ``seq_len`` is the total length so far (only dynamic scaling looks at it); the layer calls ``rotate_q`` and
  ``rotate_k``, which default to it, so a variant may transform q and k apart (xPos);
* ``score_bias()``: an additive attention-score bias (:class:`ScoreBias`) or ``None``.

The RoPE family (``rope``, ``rope_pi``, ``rope_ntk``, ``rope_dynamic_ntk``, ``rope_yarn``, and the temperature
ablations ``rope_pi_temp``, ``rope_ntk_temp``, ``rope_yarn_notemp``) is one class, :class:`Rotary`, whose
frequencies and attention factor come from :data:`ROPE_INIT_FUNCTIONS` (in the manner of transformers'
``ROPE_INIT_FUNCTIONS``). None of them holds parameters, so a model trained with ``rope`` is evaluated with any
``rope_*`` by swapping the module.

The contract (:class:`Position`, :class:`ScoreBias`, :class:`Caveat`, :data:`BUILTIN`) lives in
:mod:`ablate.variants.position_base`, the RoPE family in :mod:`ablate.variants.rope`, the frequency rules and the
rotation in :mod:`ablate.variants.rope_init`, the ALiBi slopes and T5 buckets in
:mod:`ablate.variants.score_bias`; every name of theirs is importable from here too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ablate.core.config import ModelConfig
from ablate.errors import PositionRangeError
from ablate.registry.keys import POSITION
from ablate.variants.position_base import (BUILTIN, Caveat, Position, ScoreBias, check_offset,  # noqa: F401
                                           query_key_positions)
from ablate.variants.rope_init import (DYNAMIC_SCALINGS, ROPE_INIT_FUNCTIONS, ROPE_TEMPERATURE,  # noqa: F401
                                       YARN_BETA_FAST, with_temperature,
                                       YARN_BETA_SLOW, default_inv_freq, ntk_base, rope_default,
                                       rope_dynamic_ntk_freqs, rope_ntk_freqs, rope_pi_freqs, rope_yarn_freqs, apply_rotary,
                                       rotate_half, yarn_attention_factor, yarn_correction_range,
                                       yarn_find_correction_dim)
from ablate.variants.score_bias import (T5_MAX_DISTANCE, T5_NUM_BUCKETS, alibi_slopes, t5_max_distance,  # noqa: F401
                                        t5_max_exact, t5_relative_position_bucket)

__all__ = [
    "ScoreBias", "Position", "NoPE", "Sinusoidal", "Learned", "Rotary", "RotaryAtWidth", "RoPE", "RoPEPI", "RoPENTK",
    "RoPEDynamicNTK", "RoPEYaRN", "RoPEPITemp", "RoPENTKTemp", "RoPEYaRNNoTemp", "ALiBi", "T5Bias", "ROPE_INIT_FUNCTIONS", "build_position", "alibi_slopes",
    "t5_relative_position_bucket", "sinusoidal_table", "rotate_half", "apply_rotary", "Caveat", "position_caveats",
    "t5_max_distance", "t5_max_exact", "YARN_BETA_FAST", "YARN_BETA_SLOW", "yarn_attention_factor",
    "yarn_find_correction_dim", "yarn_correction_range", "ROPE_TEMPERATURE", "with_temperature", "rope_attention_factor",
]


# ---------------------------------------------------------------------------------------------------------------
# NoPE


@BUILTIN.register("none", description="NoPE: no position information (causal masking alone orders tokens)",
                   paper="Kazemnejad et al. 2023, The Impact of Positional Encoding on Length Generalization",
                   kind="none", extrapolates=True, params=False, needs_bias=False, max_len_bound=False)
class NoPE(Position):
    """No position encoding: every hook is the identity."""


# ---------------------------------------------------------------------------------------------------------------
# Sinusoidal (Vaswani et al. 2017)


def sinusoidal_table(n: int, d: int, base: float = 10000.0) -> Tensor:
    """``(n, d)`` float64: ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(p / base^(2i/d))``."""
    half = (d + 1) // 2
    two_i = torch.arange(half, dtype=torch.float64) * 2
    inv = base ** (-two_i / d)  # 1 / base^(2i/d)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    pe = torch.empty(n, 2 * half, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe[:, :d]


@BUILTIN.register("sinusoidal", description="fixed sin/cos absolute encodings added to the token embeddings",
                   paper="Vaswani et al. 2017, Attention Is All You Need",
                   kind="absolute", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scale_embeddings=True)
class Sinusoidal(Position):
    """Vaswani et al. fixed sinusoids (interleaved sin/cos), added to ``x``; any length."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self._table64 = torch.zeros(0, cfg.d_model, dtype=torch.float64)  # CPU float64, grown on demand
        self._cache: dict[tuple, Tensor] = {}

    def _table(self, n: int, device, dtype) -> Tensor:
        if self._table64.shape[0] < n:
            self._table64 = sinusoidal_table(max(n, 2 * self._table64.shape[0], 64), self.cfg.d_model)
            self._cache.clear()
        key = (torch.device(device), dtype)
        t = self._cache.get(key)
        if t is None or t.shape[0] < n:
            t = self._table64.to(device=device, dtype=dtype)
            self._cache[key] = t
        return t

    def embed(self, x: Tensor, offset: int = 0) -> Tensor:
        offset = check_offset(offset)
        T = x.shape[-2]
        if x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"sinusoidal: expected last dim d_model={self.cfg.d_model}, got {x.shape[-1]}")
        return x + self._table(offset + T, x.device, x.dtype)[offset:offset + T]


# ---------------------------------------------------------------------------------------------------------------
# Learned absolute (GPT-2 / BERT)


@BUILTIN.register("learned", description="learned absolute position table of cfg.max_len rows, added to x",
                   paper="Gehring et al. 2017 (ConvS2S); Radford et al. 2018/2019 (GPT, GPT-2)",
                   kind="absolute", extrapolates=False, params=True, needs_bias=False, max_len_bound=True)
class Learned(Position):
    """A trainable ``(max_len, d_model)`` table; positions at or past ``max_len`` raise PositionRangeError.

    Initialised N(0, init_std) (GPT-2), or N(0, d^-1/2) with ``cfg.scale_embeddings``: fairseq's learned positional
    embedding, the treatment that goes with its sqrt(d)-scaled token embeddings (``PositionalEmbedding(learned=True)``
    in fairseq/modules/positional_embedding.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.max_len = int(cfg.max_len)
        self.weight = nn.Parameter(torch.empty(self.max_len, cfg.d_model))
        std = cfg.d_model ** -0.5 if cfg.scale_embeddings else cfg.init_std
        nn.init.normal_(self.weight, mean=0.0, std=std)

    @classmethod
    def param_count(cls, cfg: ModelConfig) -> int:
        return int(cfg.max_len) * int(cfg.d_model)

    def embed(self, x: Tensor, offset: int = 0) -> Tensor:
        offset = check_offset(offset)
        end = offset + x.shape[-2]
        if end > self.max_len:
            raise PositionRangeError(f"no positions past max_len={self.max_len} (asked for {end})")
        return x + self.weight[offset:end].to(x.dtype)

    @classmethod
    def caveats(cls, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False) -> list[Caveat]:
        longest = max((int(n) for n in eval_lens), default=0)
        if longest <= cfg.max_len:
            return []
        return [Caveat("learned_table_short", f"learned position table has max_len={cfg.max_len} rows; eval length "
                                              f"{longest} needs positions up to {longest - 1}, and those >= "
                                              f"{cfg.max_len} raise PositionRangeError")]


# The RoPE family registers here, after none / sinusoidal / learned, so the keys keep their order.
from ablate.variants.rope import (Rotary, RotaryAtWidth, RoPE, RoPEDynamicNTK, RoPENTK, RoPENTKTemp,  # noqa: E402,F401
                                  RoPEPI, RoPEPITemp, RoPEYaRN, RoPEYaRNNoTemp, rope_attention_factor)


# ---------------------------------------------------------------------------------------------------------------
# ALiBi (Press et al. 2022)


@BUILTIN.register("alibi", description="ALiBi: per-head linear distance penalty -slope*dist added to scores",
                   paper="Press et al. 2022, Train Short, Test Long: Attention with Linear Biases (ICLR)",
                   kind="bias", extrapolates=True, params=False, needs_bias=True, max_len_bound=False, alibi=True)
class ALiBi(Position):
    """bias[h, i, j] = -slope[h] * (p - j) (causal) or -slope[h] * |p - j| (bidirectional), p = Tk - Tq + i."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.n_heads = int(cfg.n_heads)
        self.causal = bool(cfg.causal)
        # non-persistent: follows .to(device) but never enters state_dict (no parameters, swappable)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(self.n_heads), dtype=torch.float32),
                             persistent=False)

    def dense(self, Tq: int, Tk: int, device=None, dtype=torch.float32) -> Tensor:
        device = self.slopes.device if device is None else device
        p, j = query_key_positions(Tq, Tk, device)
        dist = p - j
        if not self.causal:
            dist = dist.abs()
        slopes = torch.tensor(alibi_slopes(self.n_heads), dtype=torch.float64, device=device)
        return (-slopes[:, None, None] * dist[None].to(torch.float64)).to(dtype)

    def score_bias(self) -> ScoreBias:
        return ScoreBias(dense=self.dense, alibi_slopes=self.slopes, kind="alibi")


# ---------------------------------------------------------------------------------------------------------------
# T5 relative position bias (Raffel et al. 2020)


@BUILTIN.register("t5_bias", description="T5 relative bias: a learned scalar per (log-bucketed distance, head)",
                   paper="Raffel et al. 2020, Exploring the Limits of Transfer Learning (T5), JMLR",
                   kind="bias", extrapolates=True, params=True, needs_bias=True, max_len_bound=False,
                   num_buckets=T5_NUM_BUCKETS, max_distance="cfg.t5_max_distance or max(train_len // 4, 2 * max_exact)")
class T5Bias(Position):
    """One ``(num_buckets, n_heads)`` table shared by all layers; bidirectional buckets iff not ``cfg.causal``;
    ``max_distance = t5_max_distance(cfg)``."""

    # T5 trains its bias table without weight decay (Adafactor, no decay); ablate.core.train.param_groups reads this
    no_weight_decay = ("relative_attention_bias.weight",)

    @classmethod
    def param_count(cls, cfg: ModelConfig) -> int:
        return T5_NUM_BUCKETS * int(cfg.n_heads)

    def __init__(self, cfg: ModelConfig, num_buckets: int = T5_NUM_BUCKETS):
        super().__init__(cfg)
        self.n_heads = int(cfg.n_heads)
        self.bidirectional = not bool(cfg.causal)
        self.num_buckets = int(num_buckets)
        self.max_distance = t5_max_distance(cfg, self.num_buckets)
        self.relative_attention_bias = nn.Embedding(self.num_buckets, self.n_heads)
        nn.init.normal_(self.relative_attention_bias.weight, mean=0.0, std=cfg.init_std)
        self._buckets: dict[tuple, Tensor] = {}

    def buckets(self, Tq: int, Tk: int, device=None) -> Tensor:
        """``(Tq, Tk)`` bucket ids with bottom-right alignment (cached per shape and device)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (Tq, Tk, device)
        b = self._buckets.get(key)
        if b is None:  # computed on the CPU in float64 so every device gets the same buckets
            p, j = query_key_positions(Tq, Tk, "cpu")
            b = t5_relative_position_bucket(j - p, self.bidirectional, self.num_buckets, self.max_distance)
            b = b.to(device)
            if len(self._buckets) > 32:
                self._buckets.clear()
            self._buckets[key] = b
        return b

    def dense(self, Tq: int, Tk: int, device=None, dtype=None) -> Tensor:
        w = self.relative_attention_bias.weight
        device = w.device if device is None else device
        b = self.buckets(Tq, Tk, device)
        out = self.relative_attention_bias(b.to(w.device)).permute(2, 0, 1)  # (H, Tq, Tk), differentiable
        return out.to(device=device, dtype=dtype or w.dtype)

    def score_bias(self) -> ScoreBias:
        return ScoreBias(dense=self.dense, alibi_slopes=None, kind="t5")

    @classmethod
    def caveats(cls, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False,
                num_buckets: int = T5_NUM_BUCKETS) -> list[Caveat]:
        """Flags buckets an eval length uses that no distance < train_len (within the window) ever reaches."""
        lens = sorted({int(n) for n in eval_lens})
        if not lens:
            return []
        md, bidirectional = t5_max_distance(cfg, num_buckets), not bool(cfg.causal)

        def reach(n: int) -> int:  # the longest key-query distance an n-token window attends over
            return max(min(n, cfg.window or n) - 1, 0)

        def buckets(n: int) -> dict[int, int]:
            """bucket -> smallest distance reaching it, over the key-query offsets of an n-token window."""
            dist = torch.arange(reach(n) + 1)
            rel = torch.cat((-dist, dist)) if bidirectional else -dist
            first: dict[int, int] = {}
            for b, r in zip(t5_relative_position_bucket(rel, bidirectional, num_buckets, md).tolist(), rel.tolist()):
                first[b] = min(first.get(b, abs(r)), abs(r))
            return first

        trained = buckets(int(cfg.train_len))
        used = buckets(lens[-1])
        untrained = {b: d for b, d in used.items() if b not in trained}
        if not untrained:
            return []
        first_len = next(n for n in lens if any(b not in trained for b in buckets(n)))
        kind = "bidirectional" if bidirectional else "causal"
        return [Caveat("t5_untrained_buckets",
                       f"t5_bias ({num_buckets} {kind} buckets, max_distance {md}): buckets {_ranges(untrained)} "
                       f"(distances >= {min(untrained.values())}) are used from eval length {first_len} but never "
                       f"reached at train_len {cfg.train_len} (distances <= {reach(int(cfg.train_len))}); their bias "
                       "stays at its initialisation")]


def _ranges(ids) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    ids, out = sorted(ids), []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------------------------


def build_position(key: str, cfg: ModelConfig) -> Position:
    """``POSITION[key].fn(cfg)``; an unknown key raises UnknownKeyError listing the valid ones."""
    return POSITION.get(key).fn(cfg)


def position_caveats(key: str, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False) -> list[Caveat]:
    """``POSITION[key].fn.caveats(...)``: why evaluating position ``key`` of a model trained with ``cfg`` at
    ``eval_lens`` is degenerate or untrained (empty when it is not)."""
    return POSITION.get(key).fn.caveats(cfg, [int(n) for n in eval_lens], incremental)
