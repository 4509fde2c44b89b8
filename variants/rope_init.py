"""RoPE frequency rules (``ROPE_INIT_FUNCTIONS``, in the manner of transformers') and the rotation itself, used by
:class:`ablate.variants.positions.Rotary` (which re-exports every name here). No registration happens here.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["ROPE_INIT_FUNCTIONS", "ROPE_TEMPERATURE", "rotate_half", "apply_rotary", "YARN_BETA_FAST", "YARN_BETA_SLOW",
           "yarn_attention_factor", "yarn_find_correction_dim", "yarn_correction_range", "with_temperature"]


# ---------------------------------------------------------------------------------------------------------------
# Rotary family (Su et al. 2021 and its context-extension scalings)
#
# Each init function maps (head_dim, base, scale, train_len, seq_len) -> (inv_freq (head_dim/2,) float64 on CPU,
# attention_factor). attention_factor multiplies cos and sin, i.e. both q and k, so logits scale by its square.


def default_inv_freq(head_dim: int, base: float) -> Tensor:
    """theta_i = base^(-2i/d), i = 0..d/2-1."""
    return 1.0 / (float(base) ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))


def rope_default(head_dim, base, scale, train_len, seq_len):
    return default_inv_freq(head_dim, base), 1.0


def rope_pi_freqs(head_dim, base, scale, train_len, seq_len):
    """Position interpolation (Chen et al. 2023): positions / s, i.e. every frequency / s."""
    return default_inv_freq(head_dim, base) / float(scale), 1.0


def ntk_base(base: float, scale: float, head_dim: int) -> float:
    return float(base) * float(scale) ** (head_dim / (head_dim - 2))


def rope_ntk_freqs(head_dim, base, scale, train_len, seq_len):
    """NTK-aware scaling (bloc97 2023): base' = base * s^(d/(d-2))."""
    return default_inv_freq(head_dim, ntk_base(base, scale, head_dim)), 1.0


def rope_dynamic_ntk_freqs(head_dim, base, scale, train_len, seq_len):
    """Dynamic NTK (emozilla 2023): NTK at s_eff = max(1, seq_len / train_len), recomputed from the length.

    ``scale`` is ignored (transformers' formula with factor 1: base * (seq_len/train_len)^(d/(d-2)))."""
    s_eff = 1.0 if seq_len is None else max(1.0, float(seq_len) / float(train_len))
    return default_inv_freq(head_dim, ntk_base(base, s_eff, head_dim)), 1.0


YARN_BETA_FAST = 32.0  # rotations over the original context above which a dimension keeps its RoPE frequency
YARN_BETA_SLOW = 1.0  # rotations below which a dimension is fully interpolated (frequency / s)


def yarn_attention_factor(scale: float) -> float:
    """mscale = 0.1 ln(s) + 1 for s > 1, else 1 (YaRN ``get_mscale``); multiplies cos and sin."""
    return 1.0 if scale <= 1.0 else 0.1 * math.log(scale) + 1.0


def yarn_find_correction_dim(num_rotations: float, head_dim: int, base: float, original_len: int) -> float:
    """The (fractional) dimension index whose frequency turns ``num_rotations`` times over ``original_len`` tokens:
    ``d * ln(L / (num_rotations * 2 pi)) / (2 ln base)``."""
    return head_dim * math.log(original_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_correction_range(head_dim: int, base: float, original_len: int, beta_fast: float = YARN_BETA_FAST,
                          beta_slow: float = YARN_BETA_SLOW) -> tuple[int, int]:
    """``(low, high)``: floor of the beta_fast dim clamped at 0, ceil of the beta_slow dim clamped at head_dim - 1."""
    low = math.floor(yarn_find_correction_dim(beta_fast, head_dim, base, original_len))
    high = math.ceil(yarn_find_correction_dim(beta_slow, head_dim, base, original_len))
    return max(low, 0), min(high, head_dim - 1)


def rope_yarn_freqs(head_dim, base, scale, train_len, seq_len):
    """YaRN as in its reference code: jquesnelle/yarn ``scaled_rope/LlamaYaRNScaledRotaryEmbedding.py``
    (``yarn()``), which transformers' ``_compute_yarn_parameters`` (rope_type "yarn") follows.

    ``(low, high) = yarn_correction_range(d, base, L)`` with L = train_len (original_max_position_embeddings);
    ``ramp(i) = clamp((i - low) / (high - low), 0, 1)`` for i = 0..d/2-1 (high += 0.001 if low == high);
    ``theta'_i = theta_i / s * ramp(i) + theta_i * (1 - ramp(i))``; attention factor ``yarn_attention_factor(s)``.
    The ramp is linear in the dimension index, not in L / wavelength as in the paper's text. Computed in float64
    (the reference uses float32). s == 1 returns plain RoPE exactly.
    """
    s = float(scale)
    theta = default_inv_freq(head_dim, base)
    if s == 1.0:
        return theta, 1.0
    low, high = yarn_correction_range(head_dim, base, train_len)
    hi = high + 0.001 if low == high else high
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (hi - low)).clamp(0.0, 1.0)
    extrapolation = 1.0 - ramp  # 1: keep theta_i, 0: theta_i / s
    inv_freq = theta / s * (1.0 - extrapolation) + theta * extrapolation
    return inv_freq, yarn_attention_factor(s)


def with_temperature(fn: Callable[..., tuple[Tensor, float]], on: bool) -> Callable[..., tuple[Tensor, float]]:
    """``fn``'s frequencies with YaRN's temperature switched on or off: attention factor
    ``yarn_attention_factor(s)`` (the logits scale by its square, i.e. by 1/t with sqrt(1/t) = 0.1 ln s + 1) or 1.

    On for PI / NTK: YaRN's factor (Peng et al. 2023, eq. for sqrt(1/t); transformers' ``get_mscale``) applied
    unchanged to their frequencies, an ablation: neither method defines a temperature of its own. Off for YaRN:
    transformers' rope_type "yarn" with ``attention_factor=1.0`` (the frequencies of :func:`rope_yarn_freqs`, no logit
    scaling)."""
    def init(head_dim, base, scale, train_len, seq_len):
        inv, _ = fn(head_dim, base, scale, train_len, seq_len)
        return inv, (yarn_attention_factor(float(scale)) if on else 1.0)

    init.__name__ = f"{fn.__name__}_{'temp' if on else 'notemp'}"
    init.__doc__ = f"{fn.__name__} with YaRN's temperature {'on' if on else 'off'} (see with_temperature)."
    return init


ROPE_INIT_FUNCTIONS: dict[str, Callable[..., tuple[Tensor, float]]] = {
    "default": rope_default,
    "pi": rope_pi_freqs,
    "ntk": rope_ntk_freqs,
    "dynamic_ntk": rope_dynamic_ntk_freqs,
    "yarn": rope_yarn_freqs,
    "pi_temp": with_temperature(rope_pi_freqs, True),
    "ntk_temp": with_temperature(rope_ntk_freqs, True),
    "yarn_notemp": with_temperature(rope_yarn_freqs, False),
}
# Whether a frequency rule applies YaRN's logit temperature (attention factor 0.1 ln s + 1 on q and k).
ROPE_TEMPERATURE: dict[str, bool] = {"default": False, "pi": False, "ntk": False, "dynamic_ntk": False,
                                     "yarn": True, "pi_temp": True, "ntk_temp": True, "yarn_notemp": False}
DYNAMIC_SCALINGS = frozenset({"dynamic_ntk"})


def rotate_half(x: Tensor) -> Tensor:
    """Half-split rotation (GPT-NeoX / LLaMA): (x1, x2) -> (-x2, x1)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x * cos + rotate_half(x) * sin``; cos/sin ``(T, D)`` already in x's dtype/device.

    Computed half by half (``x1 c1 - x2 s1``, ``x2 c2 + x1 s2``): the same operations in the same order as the
    formula, so bit-identical to it, with fewer temporaries (a dynamic-NTK decode step re-rotates every cached key)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos[..., :h] - x2 * sin[..., :h], x2 * cos[..., h:] + x1 * sin[..., h:]), dim=-1)
