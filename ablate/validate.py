"""Checks that a model configuration can run, before any compute. Each failure is one line naming the fix."""

from __future__ import annotations

from typing import Iterator

from ablate.config import ModelConfig
from ablate.errors import ConfigError, UnavailableError
from ablate.registry import ACTIVATION, ATTENTION, NORM, POSITION, load_all

PLACEMENTS = ("pre", "post")


def validate_model(cfg: ModelConfig, device: str | None = None, *, backward: bool = False) -> None:
    """Raise :class:`ConfigError` for an impossible config (and :class:`UnavailableError` for a variant that
    cannot run on ``device``, when one is given). Unknown keys raise ``UnknownKeyError`` listing valid keys.

    Without ``device`` a feature counts as supported if the attention has it on any device; with ``device`` the
    check is exact for that device (and ``backward=True`` also requires a backward pass there, for training).
    """
    load_all()
    from ablate.variants import attention as attention_variants

    attn, pos = ATTENTION.get(cfg.attention), POSITION.get(cfg.position)

    has = attn.supports_  # supported on some device: anything else is a config error
    # Features this config needs from the attention, each (alternatives, what), re-checked per device at the end.
    needed: list[tuple[tuple[str, ...], str]] = [(("causal",) if cfg.causal else ("bidirectional",),
                                                  "causal attention" if cfg.causal else "bidirectional attention")]
    if cfg.kv_heads != cfg.n_heads:
        needed.append((("gqa",), "grouped KV heads"))
    if pos.supports_("needs_bias"):
        needed.append((("bias", "alibi") if cfg.position == "alibi" else ("bias",), f"the {cfg.position} score bias"))
    if cfg.window is not None:
        needed.append((("window",), "a sliding window"))

    if device is not None:
        ok, reason = attn.available(device)
        if not ok:
            raise UnavailableError(f"attention {cfg.attention!r} cannot run on {device}: {reason}")

    NORM.get(cfg.norm)
    ACTIVATION.get(cfg.activation)
    if cfg.norm_placement not in PLACEMENTS:
        raise ConfigError(f"unknown norm_placement {cfg.norm_placement!r}; valid: {', '.join(PLACEMENTS)}")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "train_len"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
    if cfg.n_kv_heads is not None and (cfg.n_kv_heads < 1 or cfg.n_heads % cfg.n_kv_heads):
        raise ConfigError(f"n_kv_heads={cfg.n_kv_heads} must divide n_heads={cfg.n_heads} (MHA: n_heads, MQA: 1)")
    if cfg.kv_heads != cfg.n_heads and not has("gqa"):
        raise ConfigError(f"attention {cfg.attention!r} does not support grouped KV heads (n_kv_heads)")
    if pos.supports.get("kind") == "rotary" and cfg.head_dim % 2:
        raise ConfigError(f"position {cfg.position!r} needs an even head_dim, got {cfg.head_dim}")
    if cfg.rope_scale <= 0:
        raise ConfigError(f"rope_scale must be > 0, got {cfg.rope_scale}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.causal and not has("causal"):
        raise ConfigError(f"attention {cfg.attention!r} cannot do causal attention")
    if not cfg.causal and not has("bidirectional"):
        raise ConfigError(f"attention {cfg.attention!r} is causal-only; it cannot run with causal=False")
    if pos.supports_("needs_bias"):
        takes = has("bias") or (cfg.position == "alibi" and has("alibi"))
        if not takes:
            raise ConfigError(f"position {cfg.position!r} adds a bias to attention scores, which attention "
                              f"{cfg.attention!r} cannot take; use one of: {', '.join(_bias_attentions(cfg.position))}")
    if cfg.attention == "sliding_window" and cfg.window is None:
        raise ConfigError("attention 'sliding_window' needs a window size: set window=W")
    if cfg.window is not None:
        if cfg.window < 1:
            raise ConfigError(f"window must be >= 1, got {cfg.window}")
        if not has("window"):
            raise ConfigError(f"attention {cfg.attention!r} has no sliding-window mode; unset window or use "
                              f"one of: {', '.join(k for k in ATTENTION.keys() if ATTENTION[k].supports_('window'))}")
        if not cfg.causal:
            raise ConfigError("a sliding window is defined for causal models only (causal=True)")
    if device is not None:
        for alternatives, what in needed:
            if not any(attention_variants.supports(cfg.attention, f, device) for f in alternatives):
                raise UnavailableError(f"attention {cfg.attention!r} cannot take {what} on {device}")
        if backward and not attention_variants.supports(cfg.attention, "backward", device):
            raise UnavailableError(f"attention {cfg.attention!r} has no backward pass on {device}, so it cannot train there")
        if (backward and pos.supports_("needs_bias") and pos.supports_("params")
                and not attention_variants.supports(cfg.attention, "bias_grad", device)):
            raise UnavailableError(f"attention {cfg.attention!r} cannot backpropagate into the learned "
                                   f"{cfg.position} bias on {device}, so it cannot train with it there")


def _bias_attentions(position: str) -> list[str]:
    alibi = position == "alibi"
    return [k for k in ATTENTION.keys() if ATTENTION[k].supports_("bias") or (alibi and ATTENTION[k].supports_("alibi"))]


def is_valid(cfg: ModelConfig) -> tuple[bool, str]:
    try:
        validate_model(cfg)
    except ConfigError as exc:
        return False, str(exc)
    return True, ""


def variant_grid(base: ModelConfig) -> Iterator[ModelConfig]:
    """Every combination of the registries' keys (and both norm placements) applied to ``base``."""
    from dataclasses import replace

    load_all()
    for a in ATTENTION.keys():
        for p in POSITION.keys():
            for n in NORM.keys():
                for act in ACTIVATION.keys():
                    for place in PLACEMENTS:
                        window = base.window if base.window is not None else (4 if a == "sliding_window" else None)
                        yield replace(base, attention=a, position=p, norm=n, activation=act,
                                      norm_placement=place, window=window)
