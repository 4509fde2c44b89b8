"""Ablation grids: named model/training configurations to train under one budget.

Two ways to declare a grid:

* **the default grid** (``axes=""``): the 2017 Transformer ("original": post-LN LayerNorm, ReLU, sinusoidal, MHA, full
  attention) and today's LLM block ("modern": pre-RMSNorm, SwiGLU, RoPE, GQA), each change between them applied
  alone to "original" (``original+swiglu``) and removed alone from "modern" (``modern-rope→sinusoidal``), plus
  sliding-window and linear attention on "modern" (``modern+sliding_window``, ``modern+linear``);
* **axes** (``"norm=layernorm,rmsnorm;activation=relu,gelu,swiglu"``, also space-separated): a full factorial
  (``mode="factorial"``) or one-at-a-time (``mode="oat"``: each value alone on the base) grid over any model field
  (``norm``, ``position``, ``n_kv_heads``, ...) and a few training fields (``train.lr``, ...), on top of the
  "modern", "original" or preset configuration (``base``). The first value of every axis is the reference.

Every point of every grid gets the same embedding treatment (``GridSpec.scale_embeddings``, default: token
embeddings x sqrt(d_model), fairseq init) unless ``scale_embeddings`` is itself an axis, and a point with grouped
KV heads gets its FFN widened to the parameter count of the same point with MHA, and a point whose attention layer
is larger or smaller than the standard layer (``mla``) gets its FFN resized to the standard layer's count
(``GridSpec.gqa_equal_params``, :func:`reference_model`; the widths appear in the point's ``change``).

Every point names the point it is compared against (``baseline``), so a report can print "Δ vs baseline".
Parse errors are :class:`~ablate.errors.ConfigError` with a one-line message naming the valid axes or keys.

    axes = parse_axes("norm=layernorm,rmsnorm activation=relu,swiglu")
    points = build_grid(preset_model, GridSpec(axes="norm=layernorm,rmsnorm"))
    [p.name for p in points]    # ['layernorm', 'rmsnorm']
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from ablate.core.config import ModelConfig, apply_overrides
from ablate.errors import AblateError, ConfigError
from ablate.registry.keys import ACTIVATION, REGISTRIES

__all__ = ["Axis", "GridPoint", "GridSpec", "MODES", "BASES", "MODEL_AXES", "TRAIN_AXES", "valid_axes",
           "parse_axes", "build_grid", "default_grid", "axes_grid", "select", "to_override", "ORIGINAL", "MODERN",
           "CHANGES", "EQUAL_PARAMS_TOL", "param_count", "equal_params_model", "reference_model",
           "ffn_width"]

MODES = ("factorial", "oat")
BASES = ("modern", "original", "preset")

# Model fields a grid may vary (bare name or "model.<name>"); structure-defining ones included (d_model, ...).
MODEL_AXES: tuple[str, ...] = tuple(f.name for f in fields(ModelConfig) if f.name not in ("causal",))
# Training fields a grid may vary ("train.<name>"); steps come from the budget and seeds from --seeds.
TRAIN_AXES: tuple[str, ...] = ("train.lr", "train.min_lr", "train.warmup", "train.weight_decay", "train.grad_clip",
                               "train.batch_size")
# Axes whose values are self-describing in a point name ("rmsnorm" rather than "norm=rmsnorm").
_NAMED_VALUES = ("attention", "position", "norm", "activation", "norm_placement")


def valid_axes() -> list[str]:
    return list(MODEL_AXES) + list(TRAIN_AXES)


# ---------------------------------------------------------------------------------------------------------------
# The default grid: original (2017) vs modern, one change at a time.

# model fields each end sets; n_kv_heads of "modern" is filled in from the spec (GQA groups).
ORIGINAL: dict[str, Any] = {"norm": "layernorm", "norm_placement": "post", "activation": "relu",
                            "position": "sinusoidal", "n_kv_heads": None, "attention": "sdpa", "window": None}
MODERN: dict[str, Any] = {"norm": "rmsnorm", "norm_placement": "pre", "activation": "swiglu", "position": "rope",
                          "n_kv_heads": "gqa", "attention": "sdpa", "window": None}


@dataclass(frozen=True)
class Change:
    """One step from original to modern: ``add`` names it on original, ``remove`` names its undoing on modern."""

    add: str
    remove: str
    field: str


CHANGES: tuple[Change, ...] = (
    Change("prenorm", "prenorm→postnorm", "norm_placement"),
    Change("rmsnorm", "rmsnorm→layernorm", "norm"),
    Change("swiglu", "swiglu→relu", "activation"),
    Change("rope", "rope→sinusoidal", "position"),
    Change("gqa", "gqa→mha", "n_kv_heads"),
)
# Extra attention variants tried on "modern" (name suffix, model fields).
EXTRAS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sliding_window", {"attention": "sliding_window", "window": "window"}),
    ("linear", {"attention": "linear"}),
)


@dataclass(frozen=True)
class GridSpec:
    """How to build a grid (the ``grid.*`` settings of the training suite)."""

    axes: str = ""  # "" = the default original/modern grid; else "norm=layernorm,rmsnorm;activation=relu,swiglu"
    mode: str = "factorial"  # how `axes` combine: factorial | oat (one at a time from the base)
    base: str = "modern"  # the configuration `axes` vary: modern | original | preset
    only: tuple[str, ...] = ()  # keep only these point names (after building)
    gqa_kv_heads: int = 0  # KV heads of "modern" (GQA); 0 = n_heads // 2 (at least 1)
    window: int = 0  # sliding-window size W; 0 = train_len // 4 (at least 1)
    # One embedding treatment for every point: token embeddings x sqrt(d_model) with fairseq's N(0, d^-1/2) init
    # (Vaswani et al. sec. 3.4; the ALiBi paper's fairseq models scale them for every position method). A
    # `scale_embeddings` axis overrides it on its own points (then it is a factor of the grid, named in `change`).
    scale_embeddings: bool = True
    # GQA at equal parameters: a point with fewer KV heads than query heads gets its FFN widened until its parameter
    # count matches the same point with MHA (within EQUAL_PARAMS_TOL; Ainslie et al. compare at equal size). The
    # same for an attention layer whose size differs from the standard layer's by more than EQUAL_PARAMS_TOL (mla):
    # its FFN is resized to the standard layer's count (reference_model).
    gqa_equal_params: bool = True


@dataclass(frozen=True)
class Axis:
    key: str  # canonical: a model field name, or "train.<field>"
    values: tuple[str, ...]  # as written (parsed into the field's type when applied)

    @property
    def is_train(self) -> bool:
        return self.key.startswith("train.")


@dataclass(frozen=True)
class GridPoint:
    """One configuration to train: the model, training overrides and where it sits in the grid."""

    name: str
    model: ModelConfig
    train_overrides: tuple[str, ...] = ()  # "lr=0.01" style, applied to the suite's TrainConfig
    baseline: str | None = None  # the point this one is compared against (None: the reference)
    change: str = ""  # human-readable difference from the baseline
    group: str = ""  # "original", "modern", "factorial", "oat"
    index: int = 0  # position in the grid (report order)
    settings: Mapping[str, Any] = field(default_factory=dict)  # axis key -> value, for factorial analysis

    def describe(self) -> dict[str, Any]:
        return {"point": self.name, "baseline": self.baseline, "change": self.change, "group": self.group,
                "point_index": self.index, **{f"axis.{k}": v for k, v in self.settings.items()}}


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def _canonical_key(raw: str) -> str:
    key = raw.strip()
    if key.startswith("model."):
        key = key[len("model."):]
    if key in MODEL_AXES or key in TRAIN_AXES:
        return key
    if "train." + key in TRAIN_AXES:  # lr → train.lr is NOT accepted silently: name it
        raise ConfigError(f"unknown grid axis {raw!r}: training settings take the train. prefix "
                          f"(train.{key}); valid: {', '.join(valid_axes())}")
    raise ConfigError(f"unknown grid axis {raw!r}; valid: {', '.join(valid_axes())}")


def _split_items(spec: str | Sequence[str]) -> list[str]:
    if isinstance(spec, str):
        parts = [spec]
    else:
        parts = list(spec)
    out: list[str] = []
    for part in parts:
        out.extend(p for p in re.split(r"[;\s]+", str(part).strip()) if p)
    return out


def parse_axes(spec: str | Sequence[str]) -> list[Axis]:
    """``"norm=layernorm,rmsnorm;activation=relu,swiglu"`` (or space-separated, or a list of ``key=v1,v2``) →
    axes, checked: known keys, values parse into the field's type, registry keys exist. One-line errors."""
    axes: list[Axis] = []
    seen: set[str] = set()
    probe = ModelConfig()
    from ablate.core.train import TrainConfig  # the train fields' types

    tprobe = TrainConfig()
    for item in _split_items(spec):
        if "=" not in item:
            raise ConfigError(f"grid axis {item!r} is not key=v1,v2 (e.g. norm=layernorm,rmsnorm); "
                              f"valid keys: {', '.join(valid_axes())}")
        raw_key, raw_vals = item.split("=", 1)
        key = _canonical_key(raw_key)
        if key in seen:
            raise ConfigError(f"grid axis {key} given twice; list all its values once: {key}=v1,v2")
        seen.add(key)
        values = tuple(v.strip() for v in raw_vals.split(",") if v.strip())
        if not values:
            raise ConfigError(f"grid axis {key} has no values (e.g. {key}=v1,v2)")
        if len(set(values)) != len(values):
            raise ConfigError(f"grid axis {key} repeats a value: {raw_vals}")
        for v in values:  # type and registry checks, so that errors come before any training
            if key in REGISTRIES:
                REGISTRIES[key].get(v)  # UnknownKeyError: "unknown norm 'x'; valid: ..."
            try:
                if key.startswith("train."):
                    apply_overrides(tprobe, [f"{key[len('train.'):]}={v}"])
                else:
                    apply_overrides(probe, [f"{key}={v}"])
            except ConfigError as exc:
                raise ConfigError(f"grid axis {key}: {exc}") from None
        axes.append(Axis(key, values))
    if not axes:
        raise ConfigError(f"empty grid; give key=v1,v2 axes, valid keys: {', '.join(valid_axes())}")
    return axes


def to_override(values: Sequence[str]) -> str:
    """The ``--set`` override for ``--grid`` option values: ``["norm=a,b", "activation=c"]`` →
    ``"grid.axes=norm=a,b;activation=c"`` (parsed, so a bad axis fails here with its one-line message)."""
    axes = parse_axes(values)
    return "grid.axes=" + ";".join(f"{a.key}={','.join(a.values)}" for a in axes)


# ---------------------------------------------------------------------------------------------------------------
# Building


def _fill(model: ModelConfig, spec: GridSpec, changes: Mapping[str, Any]) -> ModelConfig:
    """``model`` with ``changes`` applied; the placeholders "gqa" and "window" resolved from ``spec``."""
    out: dict[str, Any] = {}
    for k, v in changes.items():
        if v == "gqa":
            v = spec.gqa_kv_heads or max(1, model.n_heads // 2)
        elif v == "window":
            v = spec.window or max(1, model.train_len // 4)
        out[k] = v
    return replace(model, **out)


def _complete(model: ModelConfig, spec: GridSpec) -> ModelConfig:
    """Give an attention that requires a window (``spec(key).requires``) one when none is set."""
    from ablate.variants.attention import spec as attention_spec

    if "window" in attention_spec(model.attention).requires and model.window is None:
        return replace(model, window=spec.window or max(1, model.train_len // 4))
    return model


def _with_embed_scale(p: GridPoint, spec: GridSpec) -> GridPoint:
    """The grid's one embedding treatment (``spec.scale_embeddings``) on every point, except where a
    ``scale_embeddings`` axis sets it (an explicit factor). Without scaling, unit-amplitude sinusoids drown the
    0.02-std embeddings and a sinusoidal model learns no context; with it on sinusoidal points only, the position
    change would carry a second change (the embedding scale and the tied output head's init)."""
    if "scale_embeddings" in p.settings:
        return p
    return replace(p, model=replace(p.model, scale_embeddings=bool(spec.scale_embeddings)))


EQUAL_PARAMS_TOL = 0.01  # relative parameter difference accepted as "equal parameters"
_COUNTS: dict[ModelConfig, int] = {}


def param_count(model: ModelConfig) -> int:
    """Parameters of ``model`` (built on the meta device: no memory, any size; cached)."""
    if model not in _COUNTS:
        import torch

        from ablate.core.model import Transformer

        with torch.device("meta"):
            _COUNTS[model] = sum(p.numel() for p in Transformer(model).parameters())
    return _COUNTS[model]


def _mult_for(width: int, d_model: int) -> float:
    """The ``ffn_mult`` whose ``int(ffn_mult * d_model)`` is ``width`` exactly."""
    m = width / d_model
    while int(m * d_model) < width:
        m = math.nextafter(m, math.inf)
    return m


def _ffn_params(model: ModelConfig, plain_width: int) -> int:
    """Parameters of all FFNs of ``model`` at plain width ``plain_width`` (a GLU has three matrices of 2/3 of it)."""
    glu = ACTIVATION.get(model.activation).supports_("glu")
    h = max(1, int(2 * plain_width / 3)) if glu else plain_width
    mats = 3 if glu else 2
    bias = (mats - 1) * h + model.d_model if model.bias else 0
    return model.n_layers * (mats * model.d_model * h + bias)


def reference_model(model: ModelConfig) -> ModelConfig:
    """What ``model`` is sized against at equal parameters: the same model with MHA (``n_kv_heads`` None) and, when
    its attention layer's parameters differ from the standard layer's over the same kernel by more than
    :data:`EQUAL_PARAMS_TOL` (a latent-KV layer), that standard layer (``LayerSpec.kernel``)."""
    from ablate.variants.attention.layer import layer_spec

    ref = replace(model, n_kv_heads=None)
    try:
        spec = layer_spec(model.attention)
        std = replace(ref, attention=spec.kernel)
        mine, theirs = param_count(ref), param_count(std)
    except AblateError:  # an impossible combination: its row will say why
        return ref
    return std if abs(mine / theirs - 1.0) > EQUAL_PARAMS_TOL else ref


def equal_params_model(model: ModelConfig) -> ModelConfig:
    """``model`` with its FFN resized so its parameter count matches :func:`reference_model`'s: the parameters GQA
    saves in the K/V projections go to the FFN, and a layer larger (smaller) than the standard one (``mla`` at a
    small ``d_model``) takes them from (gives them to) the FFN. A model that is its own reference comes back
    unchanged."""
    try:
        ref = reference_model(model)
        if ref == model:
            return model
        target = param_count(ref)
        mine = param_count(model)
    except AblateError:  # an impossible combination: left as it is, its row will say why (status unsupported)
        return model
    if target == mine:  # MHA spelled n_kv_heads = n_heads, a layer of the standard size
        return model
    base = int(model.ffn_mult * model.d_model)
    rest = mine - _ffn_params(model, base)  # everything but the FFNs
    per_unit = max(1, 2 * model.n_layers * model.d_model)  # parameters per unit of plain width (both kinds)
    guess = base + (target - mine) // per_unit
    lo, hi = max(1, min(base, guess) - 8), max(base, guess) + 8
    best = min(range(lo, hi + 1), key=lambda w: (abs(rest + _ffn_params(model, w) - target), abs(w - base), w))
    return replace(model, ffn_mult=_mult_for(best, model.d_model))


def ffn_width(model: ModelConfig) -> int:
    """The FFN's hidden width as built (a GLU's is 2/3 of ``ffn_mult * d_model``, Shazeer 2020)."""
    plain = int(model.ffn_mult * model.d_model)
    return max(1, int(2 * plain / 3)) if ACTIVATION.get(model.activation).supports_("glu") else plain


def _with_equal_params(p: GridPoint, spec: GridSpec) -> GridPoint:
    """GQA points, and points whose attention layer differs in size from the standard one (``mla``), with the FFN
    resized to :func:`reference_model`'s parameter count (``spec.gqa_equal_params``), unless ``ffn_mult`` is an axis
    of the grid."""
    if not spec.gqa_equal_params or "ffn_mult" in p.settings:
        return p
    return replace(p, model=equal_params_model(p.model))


def _finish(pts: list[GridPoint], spec: GridSpec) -> list[GridPoint]:
    """The grid-wide treatments (embedding scale, GQA at equal parameters), the FFN widths named in each point's
    ``change`` where they differ from its baseline's, and the report order."""
    pts = [_with_equal_params(_with_embed_scale(p, spec), spec) for p in pts]
    by = {p.name: p for p in pts}
    out = []
    for i, p in enumerate(pts):
        base = by.get(p.baseline) if p.baseline else None
        if base is not None and (base.model.kv_heads, base.model.attention) != (p.model.kv_heads, p.model.attention) \
                and "ffn_mult" not in p.settings and base.model.ffn_mult != p.model.ffn_mult:
            w0, w1 = ffn_width(base.model), ffn_width(p.model)
            what = f"FFN width {w0}→{w1}" if base.model.activation == p.model.activation else \
                f"FFN width {w1}"
            why = "GQA" if base.model.kv_heads != p.model.kv_heads else "attention layer"
            p = replace(p, change=f"{p.change}; {what} ({why} at equal parameters)")
        out.append(replace(p, index=i))
    return out


def default_grid(model: ModelConfig, spec: GridSpec = GridSpec()) -> list[GridPoint]:
    """original, original+<change> for each change, modern, modern-<change> for each, modern+<extra>."""
    original = _fill(model, spec, ORIGINAL)
    modern = _fill(model, spec, MODERN)
    pts: list[GridPoint] = [GridPoint("original", original, group="original", change="2017 Transformer")]
    for c in CHANGES:
        new = getattr(modern, c.field)
        old = getattr(original, c.field)
        pts.append(GridPoint(f"original+{c.add}", replace(original, **{c.field: new}), baseline="original",
                             change=f"{c.field}: {_show(old, c.field)}→{_show(new, c.field)}", group="original"))
    pts.append(GridPoint("modern", modern, baseline="original", change="all changes", group="modern"))
    for c in CHANGES:
        new = getattr(original, c.field)
        old = getattr(modern, c.field)
        pts.append(GridPoint(f"modern-{c.remove}", replace(modern, **{c.field: new}), baseline="modern",
                             change=f"{c.field}: {_show(old, c.field)}→{_show(new, c.field)}", group="modern"))
    for suffix, changes in EXTRAS:
        cfg = _fill(modern, spec, changes)
        what = ", ".join(f"{k}: {_show(getattr(modern, k), k)}→{_show(getattr(cfg, k), k)}" for k in changes)
        pts.append(GridPoint(f"modern+{suffix}", cfg, baseline="modern", change=what, group="modern"))
    return _finish(pts, spec)


def _show(v: Any, key: str = "n_kv_heads") -> str:
    if v is None:
        return {"n_kv_heads": "MHA", "window": "full"}.get(key, "none")
    return str(v)


def _short(axis: Axis, value: str) -> str:
    if axis.key in _NAMED_VALUES:
        return value
    return f"{axis.key.removeprefix('train.')}={value}"


def _base_model(model: ModelConfig, spec: GridSpec) -> tuple[str, ModelConfig]:
    if spec.base not in BASES:
        raise ConfigError(f"unknown grid.base {spec.base!r}; valid: {', '.join(BASES)}")
    if spec.base == "original":
        return "original", _fill(model, spec, ORIGINAL)
    if spec.base == "modern":
        return "modern", _fill(model, spec, MODERN)
    return "preset", model


def _apply(model: ModelConfig, settings: Sequence[tuple[Axis, str]]) -> tuple[ModelConfig, tuple[str, ...]]:
    model_ovr = [f"{a.key}={v}" for a, v in settings if not a.is_train]
    train_ovr = tuple(f"{a.key[len('train.'):]}={v}" for a, v in settings if a.is_train)
    return apply_overrides(model, model_ovr), train_ovr


def axes_grid(model: ModelConfig, spec: GridSpec) -> list[GridPoint]:
    """Factorial or one-at-a-time grid over ``spec.axes`` on the chosen base configuration."""
    if spec.mode not in MODES:
        raise ConfigError(f"unknown grid.mode {spec.mode!r}; valid: {', '.join(MODES)}")
    axes = parse_axes(spec.axes)
    base_name, base = _base_model(model, spec)
    pts: list[GridPoint] = []
    if spec.mode == "factorial":
        combos = list(itertools.product(*[a.values for a in axes]))
        ref_name = None
        for combo in combos:
            settings = list(zip(axes, combo))
            cfg, tr = _apply(base, settings)
            name = "/".join(_short(a, v) for a, v in settings)
            change = ", ".join(f"{a.key}={v}" for a, v, r in zip(axes, combo, combos[0]) if v != r)
            pts.append(GridPoint(name, _complete(cfg, spec), tr, baseline=ref_name, change=change or "reference",
                                 group="factorial", settings={a.key: v for a, v in settings}))
            ref_name = ref_name or name
    else:
        pts.append(GridPoint(base_name, _complete(base, spec), (), baseline=None, change="reference",
                             group="oat"))
        for a in axes:
            current = None if a.is_train else getattr(base, a.key)
            for v in a.values:
                cfg, tr = _apply(base, [(a, v)])
                if not a.is_train and getattr(cfg, a.key) == current:
                    continue  # the base already has this value
                pts.append(GridPoint(f"{base_name}+{_short(a, v)}", _complete(cfg, spec), tr, baseline=base_name,
                                     change=f"{a.key}: {_show(current, a.key) if not a.is_train else '-'}→"
                                            f"{_show(getattr(cfg, a.key), a.key) if not a.is_train else v}",
                                     group="oat", settings={a.key: v}))
    names = [p.name for p in pts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"grid has duplicate point names {dup}; make the axis values distinct")
    return _finish(pts, spec)


def select(points: list[GridPoint], only: Sequence[str]) -> list[GridPoint]:
    """Keep the points named in ``only`` (grid order kept); an unknown name is a one-line error naming the valid."""
    if not only:
        return points
    names = [p.name for p in points]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"unknown grid point {unknown[0]!r} in grid.only; valid: {', '.join(names)}")
    keep = set(only)
    return [p for p in points if p.name in keep]


def build_grid(model: ModelConfig, spec: GridSpec = GridSpec()) -> list[GridPoint]:
    """The grid described by ``spec`` on the preset ``model`` (sizes, lengths come from ``model``)."""
    if spec.gqa_kv_heads < 0 or spec.window < 0:
        raise ConfigError(f"grid.gqa_kv_heads and grid.window must be >= 0 (0 = automatic), got "
                          f"{spec.gqa_kv_heads}, {spec.window}")
    points = axes_grid(model, spec) if spec.axes.strip() else default_grid(model, spec)
    return select(points, spec.only)
