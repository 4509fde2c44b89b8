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

The frequency rules and the rotation live in :mod:`ablate.variants.rope_init`, the ALiBi slopes and T5 buckets in
:mod:`ablate.variants.score_bias`; every name of theirs is importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError, PositionRangeError
from ablate.registry.keys import POSITION, Registry

BUILTIN = Registry("position")  # this module's keys; ablate.registry.keys.build() copies them into POSITION
from ablate.variants.rope_init import (DYNAMIC_SCALINGS, ROPE_INIT_FUNCTIONS, ROPE_TEMPERATURE,  # noqa: F401
                                       YARN_BETA_FAST, with_temperature,
                                       YARN_BETA_SLOW, default_inv_freq, ntk_base, rope_default,
                                       rope_dynamic_ntk_freqs, rope_ntk_freqs, rope_pi_freqs, rope_yarn_freqs, apply_rotary,
                                       rotate_half, yarn_attention_factor, yarn_correction_range,
                                       yarn_find_correction_dim)
from ablate.variants.score_bias import (T5_MAX_DISTANCE, T5_NUM_BUCKETS, alibi_slopes, t5_max_distance,  # noqa: F401
                                        t5_max_exact, t5_relative_position_bucket)

__all__ = [
    "ScoreBias", "Position", "NoPE", "Sinusoidal", "Learned", "Rotary", "RoPE", "RoPEPI", "RoPENTK",
    "RoPEDynamicNTK", "RoPEYaRN", "RoPEPITemp", "RoPENTKTemp", "RoPEYaRNNoTemp", "ALiBi", "T5Bias", "ROPE_INIT_FUNCTIONS", "build_position", "alibi_slopes",
    "t5_relative_position_bucket", "sinusoidal_table", "rotate_half", "apply_rotary", "Caveat", "position_caveats",
    "t5_max_distance", "t5_max_exact", "YARN_BETA_FAST", "YARN_BETA_SLOW", "yarn_attention_factor",
    "yarn_find_correction_dim", "yarn_correction_range", "ROPE_TEMPERATURE", "with_temperature", "rope_attention_factor",
]


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


def _query_key_positions(Tq: int, Tk: int, device) -> tuple[Tensor, Tensor]:
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


def _check_offset(offset: int) -> int:
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"position offset must be >= 0, got {offset}")
    return offset


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
        offset = _check_offset(offset)
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
        offset = _check_offset(offset)
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


# ---------------------------------------------------------------------------------------------------------------
# Rotary family (Su et al. 2021 and its context-extension scalings; frequency rules in rope_init.py)


class Rotary(Position):
    """Rotary position embedding with a pluggable frequency rule ``ROPE_INIT_FUNCTIONS[scaling]``.

    q and k are rotated in float32 (float64 stays float64) and cast back. cos/sin tables are cached per
    (frequency set, device, dtype): static scalings keep one table that grows; dynamic NTK keys on the length.
    """

    scaling: str = "default"

    def __init__(self, cfg: ModelConfig, scaling: str | None = None):
        super().__init__(cfg)
        if scaling is not None:
            self.scaling = scaling
        if self.scaling not in ROPE_INIT_FUNCTIONS:
            raise ConfigError(f"unknown rope scaling {self.scaling!r}; valid: {', '.join(ROPE_INIT_FUNCTIONS)}")
        self.head_dim = int(cfg.head_dim)
        if self.head_dim < 2 or self.head_dim % 2:
            raise ConfigError(f"rotary embeddings need an even head_dim >= 2, got {self.head_dim}")
        if self.scaling in DYNAMIC_SCALINGS and self.head_dim <= 2:
            raise ConfigError("dynamic NTK needs head_dim > 2")
        self.base = float(cfg.rope_base)
        self.scale = float(cfg.rope_scale)
        self.train_len = int(cfg.train_len)
        if self.base <= 1.0:
            raise ConfigError(f"rope_base must be > 1, got {cfg.rope_base}")
        if not self.scale > 0:
            raise ConfigError(f"rope_scale must be > 0, got {cfg.rope_scale}")
        if self.train_len <= 0:
            raise ConfigError(f"train_len must be > 0, got {cfg.train_len}")
        self.needs_raw_cache = self.scaling in DYNAMIC_SCALINGS
        self._init_fn = ROPE_INIT_FUNCTIONS[self.scaling]
        # frequency-set key -> (inv_freq float64 CPU, attention_factor)
        self._freqs: dict[object, tuple[Tensor, float]] = {}
        # (frequency-set key, device, dtype) -> (cos, sin) of shape (n, D)
        self._tables: dict[tuple, tuple[Tensor, Tensor]] = {}

    # -- frequencies -------------------------------------------------------------------------------------------

    def _freq_key(self, seq_len: int | None) -> object:
        """Which frequency set a given total length uses (None = the static one)."""
        if self.scaling in DYNAMIC_SCALINGS and seq_len is not None and seq_len > self.train_len:
            return int(seq_len)
        return None

    def inv_freq(self, seq_len: int | None = None) -> tuple[Tensor, float]:
        """``(inv_freq (D/2,) float64, attention_factor)`` used at total length ``seq_len``."""
        key = self._freq_key(seq_len)
        hit = self._freqs.get(key)
        if hit is None:
            inv, factor = self._init_fn(self.head_dim, self.base, self.scale, self.train_len,
                                        None if key is None else key)
            hit = (inv.to(torch.float64), float(factor))
            if len(self._freqs) > 16:  # dynamic lengths: keep the cache small
                self._freqs = {k: v for k, v in self._freqs.items() if k is None}
            self._freqs[key] = hit
        return hit

    def cos_sin(self, n: int, seq_len: int | None = None, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """cos and sin ``(>= n, D)`` for positions 0.. (attention factor folded in), in ``dtype`` on ``device``."""
        device = torch.device("cpu") if device is None else torch.device(device)
        fkey = self._freq_key(seq_len)
        key = (fkey, device, dtype)
        hit = self._tables.get(key)
        if hit is not None and hit[0].shape[0] >= n:
            return hit
        inv, factor = self.inv_freq(seq_len)
        old = 0 if hit is None else hit[0].shape[0]
        size = max(n, fkey) if fkey is not None else max(n, 2 * old, 64)
        ang = torch.arange(size, dtype=torch.float64)[:, None] * inv[None, :]  # computed in float64 on CPU
        emb = torch.cat((ang, ang), dim=-1)
        cos = (emb.cos() * factor).to(device=device, dtype=dtype)
        sin = (emb.sin() * factor).to(device=device, dtype=dtype)
        if len(self._tables) > 16:
            self._tables = {k: v for k, v in self._tables.items() if k[0] is None}
        self._tables[key] = (cos, sin)
        return cos, sin

    # -- the hook ----------------------------------------------------------------------------------------------

    def rotate(self, x: Tensor, offset: int = 0, seq_len: int | None = None) -> Tensor:
        offset = _check_offset(offset)
        T, D = x.shape[-2], x.shape[-1]
        if D != self.head_dim:
            raise ValueError(f"{type(self).__name__}: expected head_dim={self.head_dim}, got last dim {D}")
        end = offset + T
        total = end if seq_len is None else max(int(seq_len), end)
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(end, total, x.device, cdtype)
        xc = x.to(cdtype)
        out = apply_rotary(xc, cos[offset:end], sin[offset:end])
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"scaling={self.scaling!r}, head_dim={self.head_dim}, base={self.base:g}, scale={self.scale:g}, "
                f"train_len={self.train_len}")


_ROPE_PAPER = "Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position Embedding"


@BUILTIN.register("rope", description="rotary position embedding (half-split, GPT-NeoX/LLaMA form)",
                   paper=_ROPE_PAPER, kind="rotary", extrapolates=False, params=False, needs_bias=False,
                   max_len_bound=False, scaling="default")
class RoPE(Rotary):
    scaling = "default"


@BUILTIN.register("rope_pi", description="RoPE with position interpolation: positions / cfg.rope_scale",
                   paper="Chen et al. 2023, Extending Context Window of LLMs via Positional Interpolation",
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="pi", rescales="rope", temperature=False)
class RoPEPI(Rotary):
    scaling = "pi"


@BUILTIN.register("rope_ntk", description="NTK-aware RoPE: base * s^(d/(d-2)) with s = cfg.rope_scale",
                   paper="bloc97 2023, NTK-Aware Scaled RoPE (reddit r/LocalLLaMA); Peng et al. 2023 sec. 3.1",
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="ntk", rescales="rope", temperature=False)
class RoPENTK(Rotary):
    scaling = "ntk"


@BUILTIN.register("rope_dynamic_ntk",
                   description="dynamic NTK RoPE: NTK base at s = max(1, seq_len / cfg.train_len), per length",
                   paper="emozilla 2023, Dynamically Scaled RoPE (reddit r/LocalLLaMA); Peng et al. 2023 sec. 3.3",
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="dynamic_ntk", needs_raw_cache=True, rescales="rope", temperature=False)
class RoPEDynamicNTK(Rotary):
    scaling = "dynamic_ntk"
    needs_raw_cache = True

    @classmethod
    def caveats(cls, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False) -> list[Caveat]:
        longer = sorted({int(n) for n in eval_lens if n > cfg.train_len})
        if incremental or not longer:
            return []
        lens = ", ".join(str(n) for n in longer)
        scales = ", ".join(f"{n / cfg.train_len:g}" for n in longer)
        return [Caveat("dynamic_equals_static",
                       f"rope_dynamic_ntk on full windows of {lens} tokens uses one frequency set per window: static "
                       f"rope_ntk at scale eval_len/train_len = {scales} (train_len {cfg.train_len}); it differs "
                       "only in token-by-token decoding")]


@BUILTIN.register("rope_yarn",
                   description="YaRN RoPE as in its reference code: beta_fast=32/beta_slow=1 correction dims, ramp "
                               "linear in the dim index between them, mscale 0.1 ln s + 1",
                   paper="Peng et al. 2023, YaRN: Efficient Context Window Extension of Large Language Models",
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="yarn", rescales="rope", temperature=True)
class RoPEYaRN(Rotary):
    scaling = "yarn"
    key = "rope_yarn"

    @classmethod
    def caveats(cls, cfg: ModelConfig, eval_lens: list[int], incremental: bool = False) -> list[Caveat]:
        """Flags a YaRN that keeps fewer than 1/4 of the frequencies unscaled (dims i <= low keep theta_i)."""
        L = int(cfg.train_len)
        longest = max((int(n) for n in eval_lens), default=0)
        if not (cfg.rope_scale > 1 or longest > L):
            return []
        scale = longest / L if cfg.rope_scale == 1 else float(cfg.rope_scale)
        d, half = int(cfg.head_dim), int(cfg.head_dim) // 2
        low, _ = yarn_correction_range(d, cfg.rope_base, L)
        kept = min(low + 1, half)
        if 4 * kept >= half:
            return []
        return [Caveat("yarn_mostly_interpolated",
                       f"{cls.key} at scale {scale:g} from original length {L} (head_dim {d}, base {cfg.rope_base:g}): "
                       f"only {kept} of {half} frequencies {'keeps its' if kept == 1 else 'keep their'} RoPE value "
                       f"(beta_fast={YARN_BETA_FAST:g} rotations need wavelengths <= {L / YARN_BETA_FAST:.1f} tokens); "
                       "it acts like position interpolation plus a temperature")]


# YaRN's temperature on and off (the logit scaling sqrt(1/t) = 0.1 ln s + 1 on q and k; rope_init.with_temperature)

_TEMP_PAPER = ("Peng et al. 2023, YaRN, sec. 3.4 (temperature sqrt(1/t) = 0.1 ln s + 1; transformers' get_mscale), "
               "applied to {}")


@BUILTIN.register("rope_pi_temp", description="position interpolation plus YaRN's temperature: q, k x (0.1 ln s + 1)",
                   paper=_TEMP_PAPER.format("Chen et al. 2023 (PI)"),
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="pi_temp", rescales="rope", temperature=True)
class RoPEPITemp(Rotary):
    scaling = "pi_temp"


@BUILTIN.register("rope_ntk_temp", description="NTK-aware base scaling plus YaRN's temperature: q, k x (0.1 ln s + 1)",
                   paper=_TEMP_PAPER.format("bloc97 2023 (NTK-aware)"),
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="ntk_temp", rescales="rope", temperature=True)
class RoPENTKTemp(Rotary):
    scaling = "ntk_temp"


@BUILTIN.register("rope_yarn_notemp",
                   description="YaRN's frequencies (reference-code ramp) without its temperature: attention factor 1",
                   paper="Peng et al. 2023, YaRN (transformers rope_type yarn with attention_factor=1.0)",
                   kind="rotary", extrapolates=True, params=False, needs_bias=False, max_len_bound=False,
                   scaling="yarn_notemp", rescales="rope", temperature=False)
class RoPEYaRNNoTemp(RoPEYaRN):
    scaling = "yarn_notemp"
    key = "rope_yarn_notemp"


def rope_attention_factor(key: str, cfg: ModelConfig) -> float:
    """The attention factor (multiplying q and k) position ``key`` applies at ``cfg.rope_scale``: 1 for every
    non-rotary variant and every rule without a temperature, ``0.1 ln s + 1`` with one (s > 1)."""
    fn = POSITION.get(key).fn
    if not (isinstance(fn, type) and issubclass(fn, Rotary)):
        return 1.0
    return float(ROPE_INIT_FUNCTIONS[fn.scaling](int(cfg.head_dim), float(cfg.rope_base), float(cfg.rope_scale),
                                                 int(cfg.train_len), None)[1])


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
        p, j = _query_key_positions(Tq, Tk, device)
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
            p, j = _query_key_positions(Tq, Tk, "cpu")
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
