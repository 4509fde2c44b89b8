"""Frozen configuration dataclasses and named presets (torchtitan style).

An ablation is a ``dataclasses.replace``: ``replace(PRESETS["tiny"], position="alibi")``.
Variant fields are plain registry keys; :func:`ablate.core.validate.validate_model` checks a config before any compute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Union

from ablate.core.ranges import INT64, NONNEG, ONE_PLUS, POS, SEED, Range, between, ge, gt
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
    # multi-head latent attention's KV latent width d_c (DeepSeek-V2's kv_lora_rank; variants/attention/mla.py);
    # None: 4 x head_dim. Left out of flattened configs (ids, rows) while None, so earlier ids keep their hashes
    kv_lora_rank: int | None = field(default=None, metadata={"omit_default": True})

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
    # the extrapolation suite's CPU default: tiny at half the width (the whole suite in <= 5 min on slower machines)
    "tiny-narrow": ModelConfig(d_model=64, n_layers=2, n_heads=4, train_len=64, max_len=4096),
    # the CPU `small` rung: tiny's width, one more layer, twice the context (docs/presets.md has the arithmetic)
    "small": ModelConfig(d_model=128, n_layers=3, n_heads=4, train_len=128, max_len=8192),
    "gpu": ModelConfig(d_model=512, n_layers=6, n_heads=8, train_len=256, max_len=16384),
    # the GPU latency suite's training step (issue #15's MFU target: d=1024, 8 layers, T=2048)
    "large": ModelConfig(d_model=1024, n_layers=8, n_heads=8, train_len=2048, max_len=4096),
    # the ALiBi paper's WikiText-103 model (Baevski & Auli 2019's transformer_lm_wiki103, as ALiBi's fairseq fork
    # trains it): 16 pre-LN layers, d=1024, 8 heads, ReLU FFN 4096, biases, dropout 0.3, embeddings x sqrt(d)
    "paper": ModelConfig(d_model=1024, n_layers=16, n_heads=8, train_len=512, max_len=512, norm="layernorm",
                         activation="relu", bias=True, dropout=0.3, scale_embeddings=True),
}


def model_preset(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid: {', '.join(MODEL_PRESETS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Ranges: the numbers each setting may take. One table for every config class a suite exposes to --set (keyed by the
# class's name, so suites and library modules need not import each other); a field can instead carry its range in
# ``dataclasses.field(metadata={"range": ...})``. Besides these, every float anywhere must be finite and every
# integer must fit in int64. :func:`check_fields` applies them, :func:`apply_overrides` calls it on every result and
# :func:`ablate.core.validate.validate_model` on every model -- one place for each rule.

# Cross-field rules (shapes) per class, run where the class sits inside a suite config (and by validate_model).
CHECKS: dict[str, Callable[[Any, str], None]] = {}

RANGES: dict[str, dict[str, Range]] = {
    "ModelConfig": {
        "vocab_size": ONE_PLUS, "d_model": ONE_PLUS, "n_layers": ONE_PLUS, "n_heads": ONE_PLUS,
        "n_kv_heads": ONE_PLUS, "ffn_mult": POS, "max_len": ONE_PLUS, "train_len": ONE_PLUS,
        "rope_base": gt(1), "rope_scale": POS, "t5_max_distance": ONE_PLUS, "window": ONE_PLUS,
        "dropout": between(0, 1, hi_open=True), "norm_eps": POS, "init_std": POS, "kv_lora_rank": ONE_PLUS,
    },
    "TrainConfig": {  # ablate.core.train
        "steps": ONE_PLUS, "batch_size": ONE_PLUS, "seq_len": ONE_PLUS, "lr": POS, "min_lr": NONNEG,
        "warmup": NONNEG, "weight_decay": NONNEG, "grad_clip": NONNEG, "betas": between(0, 1, hi_open=True),
        "seed": SEED, "eval_every": NONNEG, "log_every": NONNEG,
    },
    "DataSettings": {"val_frac": between(0, 1, lo_open=True, hi_open=True), "vocab_size": ONE_PLUS},  # ablate.io.data
    "GridSpec": {"gqa_kv_heads": NONNEG, "window": NONNEG},  # ablate.plan.grid (0 = derived from the model)
    # suites/extrapolation/ and suites/training/ (both name their eval settings EvalSettings)
    "EvalSettings": {"stride": ONE_PLUS, "factors": ge(1, nonempty=True), "tokens": ONE_PLUS,
                     "curve_tokens": ONE_PLUS, "batch_tokens": ONE_PLUS, "pos_bins": ONE_PLUS,
                     "decode_chunk": ONE_PLUS, "doc_seed": SEED, "max_doc_tokens": ge(2)},
    "PasskeySettings": {"keys": between(1, 26), "digits": ONE_PLUS, "depths": between(0, 1, nonempty=True),
                        "trials": ONE_PLUS, "steps": ONE_PLUS, "answer_weight": NONNEG},
    "ExtrapolationConfig": {"cpu_threads": NONNEG},
    "FinetuneSettings": {"scale": gt(1), "steps": ONE_PLUS, "lr": POS},  # suites/extrapolation/finetune.py
    "StreamSettings": {"factors": ge(1, nonempty=True), "budget": ONE_PLUS, "sinks": ONE_PLUS,  # .../stream.py
                       "sequences": ONE_PLUS},
    "BudgetSettings": {"tokens": NONNEG, "flops": NONNEG, "seconds": NONNEG, "calib_steps": ge(2)},
    "TrainingConfig": {"time_limit_s": NONNEG, "cpu_threads": NONNEG},
    # suites/latency/
    "KernelSweep": {"seq_lens": ge(1, nonempty=True), "compiled_seq_lens": ONE_PLUS, "tokens": ONE_PLUS,
                    "hidden": ONE_PLUS, "head_dims": ge(1, nonempty=True), "feature_seq_len": ONE_PLUS,
                    "feature_head_dim": ONE_PLUS, "gqa_group": ONE_PLUS, "windows": ONE_PLUS, "warmup_ms": NONNEG,
                    "rep_ms": POS, "min_reps": ONE_PLUS, "min_run_time": POS, "check_mb": ONE_PLUS,
                    "budget_s": NONNEG},
    "PositionSweep": {"seq_lens": ge(1, nonempty=True), "tokens": ONE_PLUS, "n_heads": ONE_PLUS,
                      "head_dim": ONE_PLUS, "budget_s": NONNEG},
    "TrainSweep": {"seq_len": ONE_PLUS, "batch": ONE_PLUS, "warmup_steps": NONNEG, "budget_s": NONNEG},
    "DecodeSweep": {"gqa_group": ONE_PLUS, "contexts": ge(1, nonempty=True), "batch": ONE_PLUS, "steps": ONE_PLUS,
                    "warmup_steps": NONNEG, "prompt_lens": ge(1, nonempty=True), "prefill_batch": ONE_PLUS,
                    "budget_s": NONNEG},
    "StreamSweep": {"tokens": ge(1, nonempty=True), "budget": ge(2), "sinks": ONE_PLUS, "steps": ONE_PLUS,
                    "warmup_steps": ONE_PLUS, "budget_s": NONNEG},
    "LatencyConfig": {"budget_s": NONNEG, "seed": SEED, "cpu_threads": NONNEG},
}


def range_of(cls: type, name: str) -> Range | None:
    """The :class:`Range` of field ``name`` of config class ``cls`` (its metadata first, then :data:`RANGES`)."""
    for f in fields(cls):
        if f.name == name and "range" in f.metadata:
            return f.metadata["range"]
    return RANGES.get(cls.__name__, {}).get(name)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def _number_kind(tp: Any) -> str | None:
    """"int" / "float" for a number type (bool is not one), else None."""
    return "int" if tp is int else "float" if tp is float else None


def _range_message(name: str, kind: str, rng: Range | None, got: str, optional: bool = False,
                   plural: bool = False, huge: bool = False) -> str:
    what = ("integers" if kind == "int" else "finite numbers") if plural else \
        ("an integer" if kind == "int" else "a finite number")
    desc = rng.describe() if rng is not None else ""
    if huge:  # an integer past int64 (torch, numpy)
        desc = f"{desc} and < 2^63" if desc else "in [-2^63, 2^63)"
    return f"{name} must be {what}{' ' + desc if desc else ''}{' or none' if optional else ''}, got {got}"


def _check_number(name: str, v: Any, kind: str, rng: Range | None, optional: bool = False,
                  whole: tuple | None = None) -> None:
    """``v`` (an element of the tuple ``whole``, if given) must be a finite float / an int64 integer in ``rng``."""
    if kind == "float":
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    else:
        bad = isinstance(v, bool) or not isinstance(v, int)
    huge = not bad and kind == "int" and not -INT64 <= v < INT64
    if bad or huge or (rng is not None and not rng.ok(v)):
        shown = repr(v) if whole is None else ",".join(repr(x) if isinstance(x, float) else str(x) for x in whole)
        raise ConfigError(_range_message(name, kind, rng, shown, optional, whole is not None, huge))


def _shape_of(tp: Any) -> tuple[str | None, bool, bool]:
    """(number kind "int"/"float" or None, optional, a tuple of them) of a declared field type."""
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) in (tuple, list):
        kinds = {_number_kind(a) for a in typing.get_args(tp) if a is not Ellipsis}
        return (kinds.pop() if len(kinds) == 1 else None), optional, True
    return _number_kind(tp), optional, False


def _check(name: str, value: Any, kind: str | None, optional: bool, is_tuple: bool, rng: Range | None) -> None:
    if kind is None or (value is None and optional):
        return
    if is_tuple:
        if rng is not None and rng.nonempty and len(value) == 0:
            raise ConfigError(f"{name} must list at least one value (comma-separated), got none")
        for x in value:
            _check_number(name, x, kind, rng, whole=tuple(value))
        return
    _check_number(name, value, kind, rng, optional)


def check_value(name: str, value: Any, tp: Any, rng: Range | None = None) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` (of declared type ``tp``) is a finite float / an int64
    in ``rng`` -- for a tuple, every element (and at least one with ``rng.nonempty``). Other types pass."""
    _check(name, value, *_shape_of(tp), rng)


@functools.lru_cache(maxsize=None)
def _plan(cls: type) -> tuple[tuple[str, str | None, bool, bool, Range | None], ...]:
    """(name, number kind, optional, tuple, range) per field of ``cls``: what :func:`check_fields` looks at."""
    hints = _hints(cls)
    return tuple((f.name, *_shape_of(hints[f.name]), range_of(cls, f.name)) for f in fields(cls))


def check_fields(cfg: Any, prefix: str = "", *, cross: bool = True) -> None:
    """Check every number of the (nested) config ``cfg`` against :data:`RANGES` (finite floats, int64 integers
    everywhere) and, with ``cross``, the cross-field rules of :data:`CHECKS`; nested configs always get them. One-line
    :class:`ConfigError` naming the dotted setting (``prefix`` + field) and what it may be."""
    cls = type(cfg)
    for name, kind, optional, is_tuple, rng in _plan(cls):
        v = getattr(cfg, name)
        if kind is not None:
            t = type(v)  # fast path (validate_model runs per model built): a plain number in range
            if not is_tuple and (t is int and -INT64 <= v < INT64 or t is float and kind == "float" and v - v == 0) \
                    and (rng is None or rng.ok(v)):
                continue
            _check(prefix + name, v, kind, optional, is_tuple, rng)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            check_fields(v, f"{prefix}{name}.", cross=True)
    if cross and cls.__name__ in CHECKS:
        CHECKS[cls.__name__](cfg, prefix)


def check_model_shape(cfg: ModelConfig, prefix: str = "") -> None:
    """The shape rules of a model that no single field shows: heads divide the width, KV heads divide the heads,
    the FFN has a hidden unit. (Ranges of single fields: :data:`RANGES`; variant combinations: ``validate_model``.)"""
    p = prefix
    if cfg.d_model % cfg.n_heads:
        valid = [h for h in range(1, min(cfg.d_model, 128) + 1) if cfg.d_model % h == 0]
        raise ConfigError(f"{p}d_model={cfg.d_model} is not divisible by {p}n_heads={cfg.n_heads}; valid {p}n_heads "
                          f"for this d_model: {', '.join(map(str, valid))}{', ...' if cfg.d_model > 128 else ''}")
    if cfg.n_kv_heads is not None and cfg.n_heads % cfg.n_kv_heads:
        valid = [h for h in range(1, min(cfg.n_heads, 128) + 1) if cfg.n_heads % h == 0]
        raise ConfigError(f"{p}n_kv_heads={cfg.n_kv_heads} must divide {p}n_heads={cfg.n_heads} (MHA: n_heads, "
                          f"MQA: 1); valid: {', '.join(map(str, valid))}{', ...' if cfg.n_heads > 128 else ''} or none")
    width = cfg.ffn_mult * cfg.d_model
    if not width < INT64:  # inf included
        raise ConfigError(f"{p}ffn_mult={cfg.ffn_mult} gives an FFN width past 2^63 at d_model={cfg.d_model}; "
                          f"{p}ffn_mult is the FFN width over d_model (4 in the 2017 Transformer)")
    if int(width) < 1:
        raise ConfigError(f"{p}ffn_mult={cfg.ffn_mult} gives an FFN of width 0 at d_model={cfg.d_model}; "
                          f"{p}ffn_mult must be >= 1/d_model = {1 / cfg.d_model:.3g}")


CHECKS["ModelConfig"] = check_model_shape

NORM_PLACEMENTS = ("pre", "post")


def check_model_keys(cfg: ModelConfig, prefix: str = "model.") -> None:
    """Every variant slot of ``cfg`` names a registered key (``UnknownKeyError``, one line listing the valid ones,
    with the dotted setting) and ``norm_placement`` is pre or post: checked when a suite resolves its settings, so
    a misspelt variant is refused before any work, not when the part that builds the model is reached."""
    from ablate.registry.keys import ACTIVATION, ATTENTION, NORM, POSITION

    for name, reg in (("attention", ATTENTION), ("position", POSITION), ("norm", NORM), ("activation", ACTIVATION)):
        key = getattr(cfg, name)
        if key not in reg:
            raise ConfigError(f"{prefix}{name}={key!r} is not a known {name}; valid: {', '.join(reg.keys())}")
    if cfg.norm_placement not in NORM_PLACEMENTS:
        raise ConfigError(f"{prefix}norm_placement={cfg.norm_placement!r}; valid: {', '.join(NORM_PLACEMENTS)}")


# ---------------------------------------------------------------------------------------------------------------
# `--set key=value` overrides on (nested) frozen dataclasses.


def _coerce(value: str, tp: Any, name: str, rng: Range | None = None) -> Any:
    """Parse a command-line string into the dataclass field's declared type (``rng``: for the message only; floats
    must be finite and integers fit in int64 whatever the range)."""
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
                return _coerce(value, a, name, rng)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: cannot parse {value!r}")
    if origin in (tuple, list):
        args = typing.get_args(tp) or (str, Ellipsis)
        parts = split_list(value, name)
        if Ellipsis not in args and len(parts) != len(args):
            raise ConfigError(f"{name} takes exactly {len(args)} comma-separated values, got {len(parts)} "
                              f"({value!r})")
        inner = args if Ellipsis not in args else (args[0],) * len(parts)
        return tuple(_coerce(p, a, name, rng) for p, a in zip(parts, inner))
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp in (int, float) and not value.isascii():  # int("٣٢") and float("３２") are 32: read as written or refuse
        raise ConfigError(f"{name}: expected {'an integer' if tp is int else 'a number'} in ASCII digits (0-9), "
                          f"got {value!r}")
    if tp is int:
        try:
            n = int(value)
        except ValueError:
            try:
                f = float(value)  # accept 1e4
            except ValueError:
                f = None
            if f is None or not f.is_integer():
                raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
            n = int(f)
        if not -INT64 <= n < INT64:
            raise ConfigError(_range_message(name, "int", rng, value if len(value) <= 40 else repr(value),
                                             huge=True))
        return n
    if tp is float:
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if not math.isfinite(f):
            shown = repr(f) if value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity") else \
                f"{f!r} (from {value!r})"
            raise ConfigError(_range_message(name, "float", rng, shown))
        return f
    if tp is str:
        return value
    raise ConfigError(f"{name}: cannot set a field of type {tp}")


_SEPARATORS = {";": "a semicolon", "\n": "a newline", "\r": "a carriage return", "\t": "a tab"}


def split_list(value: str, name: str) -> list[str]:
    """The items of a comma-separated list setting, as ``--dry-run`` prints it or as typed: ``1,2``, ``[1,2]``,
    ``[1, 2]``, ``["rope", "alibi"]`` (quotes around an item are dropped), ``""`` or ``[]`` for none. Refused in one
    line: an empty item (``rope,,alibi``, a trailing comma) -- it would be dropped silently -- and a separator
    (``;``, a newline, a tab) inside the list."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]") or text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if text == "":
        return []
    for sep, what in _SEPARATORS.items():
        if sep in text:
            raise ConfigError(f"{name}: {what} inside the list {value!r}; separate values with commas "
                              f"(e.g. {name}=a,b)")
    parts = []
    for item in text.split(","):
        item = item.strip()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            item = item[1:-1]
        if item == "":
            raise ConfigError(f"{name}: empty value in the list {value!r}; give each value once between commas "
                              f"(e.g. {name}=a,b), or nothing for an empty list")
        parts.append(item)
    return parts


def override_keys(overrides: Any) -> set[str]:
    """The keys that ``key=value`` overrides set (as the user wrote them)."""
    return {str(o).split("=", 1)[0].strip() for o in overrides if "=" in str(o)}


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Return ``cfg`` with ``key=value`` overrides applied; dotted keys reach nested dataclasses.

    ``apply_overrides(cfg, ["model.position=alibi", "steps=200"])``. Unknown keys raise :class:`ConfigError`
    naming the valid ones. The result is checked whole by :func:`check_fields` (ranges of every field; the
    cross-field rules of nested configs -- a bare ``ModelConfig`` may be a probe for one grid-axis value), so a
    setting out of range is refused here, before any suite code sees it.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        paths = _all_paths(cfg)
        if key not in paths and not any(p.startswith(key + ".") for p in paths):
            raise ConfigError(f"unknown setting {key!r}; valid: {', '.join(paths)}")
        cfg = _set_path(cfg, key.split("."), value.strip(), key)
    check_fields(cfg, cross=False)
    return cfg


def _set_path(obj: Any, path: list[str], value: str, full: str) -> Any:
    hints = _hints(type(obj))
    head = path[0]
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown setting {full!r}: {head} has no sub-settings")
        return replace(obj, **{head: _set_path(current, path[1:], value, full)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"setting {full!r} needs a sub-key, e.g. {full}.{fields(current)[0].name}=...")
    rng = range_of(type(obj), head)
    new = _coerce(value, hints[head], full, rng)
    check_value(full, new, hints[head], rng)  # before replace(): a class's own __post_init__ would word it otherwise
    return replace(obj, **{head: new})


def _all_paths(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += _all_paths(v, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def unified_train_len(base_train_len: int, base_seq_len: int, train_len: int, seq_len: int,
                      keys: set[str] | None = None) -> int:
    """``model.train_len`` and ``train.seq_len`` are one setting: follow whichever an override set. ``keys``: the
    keys the user set (:func:`override_keys`); when both are set to different values -- or, without ``keys``, both
    differ from the preset and from each other -- the conflict is refused naming both, never resolved silently."""
    if keys is not None:
        tl_set, sl_set = "model.train_len" in keys, "train.seq_len" in keys
    else:
        tl_set, sl_set = train_len != base_train_len, seq_len != base_seq_len
    if tl_set and sl_set and train_len != seq_len:
        raise ConfigError(f"model.train_len={train_len} and train.seq_len={seq_len} conflict: they are one setting "
                          f"(the training context); set one of them, or both to the same value")
    return seq_len if sl_set else train_len


def check_max_len(max_len: int, train_len: int, keys: set[str], key: str = "model.max_len",
                  what: str = "model.train_len") -> None:
    """A ``max_len`` the user set below the training length is refused (it would be raised silently, or leave a
    learned position table shorter than the sequences it is trained on)."""
    if key in keys and max_len < train_len:
        raise ConfigError(f"{key}={max_len} is below {what}={train_len}: the model trains on {train_len} positions; "
                          f"set {key} >= {train_len} or leave it out")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as one flat dict with dotted keys (for result rows); a field marked ``omit_default`` in its
    metadata is left out while it holds its default (a setting added later keeps the ids of earlier configs)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.metadata.get("omit_default") and v == f.default:
            continue
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = list(v) if isinstance(v, tuple) else v
    return out


__all__ = ["ModelConfig", "MODEL_PRESETS", "model_preset", "apply_overrides", "flatten", "unified_train_len", "field",
           "split_list", "override_keys", "check_max_len", "check_model_keys", "NORM_PLACEMENTS",
           "Range", "RANGES", "CHECKS", "range_of", "check_value", "check_fields", "check_model_shape"]
