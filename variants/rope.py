"""The RoPE family: :class:`Rotary` and its registered scalings (``rope``, ``rope_pi``, ``rope_ntk``,
``rope_dynamic_ntk``, ``rope_yarn`` and the temperature ablations ``rope_pi_temp``, ``rope_ntk_temp``,
``rope_yarn_notemp``). One class whose frequencies and attention factor come from :data:`ROPE_INIT_FUNCTIONS`
(:mod:`ablate.variants.rope_init`, in the manner of transformers' ``ROPE_INIT_FUNCTIONS``); none holds parameters,
so a model trained with ``rope`` is evaluated with any ``rope_*`` by swapping the module.

Registered in :data:`ablate.variants.position_base.BUILTIN` when :mod:`ablate.variants.positions` imports this
module (after ``none``, ``sinusoidal`` and ``learned``, so the keys keep their order).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.registry.keys import POSITION
from ablate.variants.position_base import BUILTIN, Caveat, Position, check_offset
from ablate.variants.rope_init import (DYNAMIC_SCALINGS, ROPE_INIT_FUNCTIONS, YARN_BETA_FAST, apply_rotary,
                                       yarn_correction_range)

__all__ = ["Rotary", "RotaryAtWidth", "RoPE", "RoPEPI", "RoPENTK", "RoPEDynamicNTK", "RoPEYaRN", "RoPEPITemp", "RoPENTKTemp",
           "RoPEYaRNNoTemp", "rope_attention_factor"]


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
        offset = check_offset(offset)
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


class RotaryAtWidth:
    """The model's rotary position rebuilt for a rotated part of ``width`` per head, narrower than ``head_dim`` (MLA's
    decoupled key ``d_R``, Based's feature dimension ``f``): parameter-free, rebuilt once per position module; any
    other position rotates nothing and is returned as it is. A layer calls it as ``self.rope(pos)``."""

    def __init__(self, width: int):
        self.width = int(width)
        self._hit: tuple[Position, Position] | None = None

    def __call__(self, pos: Position) -> Position:
        if not isinstance(pos, Rotary):
            return pos
        if self._hit is None or self._hit[0] is not pos:
            self._hit = (pos, type(pos)(replace(pos.cfg, d_model=pos.cfg.n_heads * self.width)))
        return self._hit[1]
