"""Frozen configuration dataclasses and named presets (torchtitan style).

An ablation is a ``dataclasses.replace``: ``replace(PRESETS["tiny"], position="alibi")``.
Variant fields are plain registry keys; :func:`ablate.validate.validate_model` checks a config before any compute.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Union

from ablate.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """The reference decoder (or encoder, ``causal=False``) and its variant slots."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: MHA (= n_heads); 1: MQA; in between: GQA
    ffn_mult: float = 4.0  # non-GLU hidden = ffn_mult * d_model; GLU variants use 2/3 of it (Shazeer 2020)
    attention: str = "sdpa"
    position: str = "rope"
    norm: str = "rmsnorm"
    norm_placement: str = "pre"  # "pre" or "post"
    activation: str = "swiglu"
    causal: bool = True
    max_len: int = 4096  # size of the `learned` position table; longer inputs are refused
    train_len: int = 256  # context the model is trained at (reference length for RoPE scaling)
    rope_base: float = 10000.0
    rope_scale: float = 1.0  # RoPE scaling factor s for rope_pi / rope_ntk / rope_yarn (1.0 = plain RoPE)
    t5_max_distance: int | None = None  # t5_bias log-bucket horizon; None = tied to train_len as T5 ties 128 to 512
    window: int | None = None  # sliding-window size W (keys attended, self included)
    dropout: float = 0.0
    bias: bool = False  # biases in linear layers
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (Vaswani et al. 2017, sec. 3.4)
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# Named model presets. `tiny` is the CPU default; `gpu` is the default on CUDA.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "micro": ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=512),
    "tiny": ModelConfig(d_model=128, n_layers=2, n_heads=4, train_len=64, max_len=4096),
    "small": ModelConfig(d_model=256, n_layers=4, n_heads=8, train_len=128, max_len=8192),
    "gpu": ModelConfig(d_model=512, n_layers=6, n_heads=8, train_len=256, max_len=16384),
}


def model_preset(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid: {', '.join(MODEL_PRESETS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# `--set key=value` overrides on (nested) frozen dataclasses.


def _coerce(value: str, tp: Any, name: str) -> Any:
    """Parse a command-line string into the dataclass field's declared type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: cannot parse {value!r}")
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(tp) or (str,)
        parts = [p for p in value.split(",") if p != ""]
        return tuple(_coerce(p, inner, name) for p in parts)
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)  # accept 1e4
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        return value
    raise ConfigError(f"{name}: cannot set a field of type {tp}")


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Return ``cfg`` with ``key=value`` overrides applied; dotted keys reach nested dataclasses.

    ``apply_overrides(cfg, ["model.position=alibi", "steps=200"])``. Unknown keys raise :class:`ConfigError`
    naming the valid ones.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in _all_paths(cfg) and not any(p.startswith(key + ".") for p in _all_paths(cfg)):
            raise ConfigError(f"unknown setting {key!r}; valid: {', '.join(_all_paths(cfg))}")
        cfg = _set_path(cfg, key.split("."), value.strip(), key)
    return cfg


def _set_path(obj: Any, path: list[str], value: str, full: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    head = path[0]
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown setting {full!r}: {head} has no sub-settings")
        return replace(obj, **{head: _set_path(current, path[1:], value, full)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"setting {full!r} needs a sub-key, e.g. {full}.{fields(current)[0].name}=...")
    return replace(obj, **{head: _coerce(value, hints[head], full)})


def _all_paths(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += _all_paths(v, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def unified_train_len(base_train_len: int, base_seq_len: int, train_len: int, seq_len: int) -> int:
    """``model.train_len`` and ``train.seq_len`` are one setting: follow whichever an override changed."""
    tl_changed, sl_changed = train_len != base_train_len, seq_len != base_seq_len
    if tl_changed and sl_changed and train_len != seq_len:
        raise ConfigError(f"model.train_len={train_len} and train.seq_len={seq_len} differ; set one of them")
    return seq_len if sl_changed else train_len


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as one flat dict with dotted keys (for result rows)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = list(v) if isinstance(v, tuple) else v
    return out


__all__ = ["ModelConfig", "MODEL_PRESETS", "model_preset", "apply_overrides", "flatten", "unified_train_len", "field"]
