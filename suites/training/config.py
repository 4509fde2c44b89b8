"""Settings of the training suite: the config dataclasses, presets, ``resolve`` (``--set`` overrides checked), the grid
points and the hashes (``grid_id``, ``config_id``) that identify a grid and a point's runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ablate.core.config import (ModelConfig, apply_overrides, check_max_len, check_model_keys, flatten,
                                model_preset,
                                override_keys, unified_train_len)
from ablate.io.data import DataSettings, data_fields
from ablate.errors import ConfigError
from ablate.plan.grid import MODERN, ORIGINAL, GridPoint, GridSpec, build_grid, parse_axes, select
from ablate.core.lr_sweep import SweepSettings
from ablate.store.results import row_key
from ablate.core.train import TrainConfig

from .constants import ID_OMIT_AT, BUDGET_KINDS, PROTOCOL


@dataclass(frozen=True)
class BudgetSettings:
    kind: str = "tokens"  # tokens | flops | time: what every grid point gets the same amount of
    tokens: int = 0  # training tokens per run; 0 = train.steps x batch_size x seq_len
    flops: float = 0.0  # training FLOPs per run; 0 = the reference point's FLOPs per step x train.steps
    seconds: float = 0.0  # training seconds per run (evaluation excluded); 0 = the reference's time for train.steps
    calib_steps: int = 8  # throw-away steps timed to turn seconds into a step count (kind=time)


@dataclass(frozen=True)
class EvalSettings:
    tokens: int = 32768  # held-out targets scored for the final validation loss: whole test documents drawn across
    #                      the held-out split (ablate.core.evalset, role "test"), the same for every point
    curve_tokens: int = 8192  # the first test documents holding this many targets, scored at each curve point
    batch_tokens: int = 16384  # tokens per evaluation forward


@dataclass(frozen=True)
class TrainingConfig:
    model: ModelConfig  # sizes and lengths; the grid sets the variant fields
    train: TrainConfig
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    grid: GridSpec = field(default_factory=GridSpec)
    eval: EvalSettings = field(default_factory=EvalSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lr_sweep: SweepSettings = field(default_factory=SweepSettings)  # a learning rate per point (ablate.core.lr_sweep)
    time_limit_s: float = 0.0  # stop starting new runs after this many seconds (0 = no limit); re-run to resume
    cpu_threads: int = 0  # CPU: torch threads (0 = torch's default); recorded in every row's config


PRESETS: dict[str, TrainingConfig] = {
    # Tests: seconds on a CPU.
    "micro": TrainingConfig(
        model=replace(model_preset("micro"), max_len=64),
        train=TrainConfig(steps=12, batch_size=8, seq_len=16, lr=3e-3, min_lr=3e-4, warmup=3, log_every=4,
                          eval_every=6, amp=None),
        grid=GridSpec(gqa_kv_heads=1, window=4),
        eval=EvalSettings(tokens=512, curve_tokens=256, batch_tokens=4096),
    ),
    # CPU default: the whole default grid (14 points, 1 seed) in <= 10 minutes on the slower 2-core machines
    # (about 4 minutes on the faster ones); no learning-rate sweep (it would cost +75%); see docs/training.md.
    "tiny": TrainingConfig(
        model=replace(model_preset("tiny"), max_len=64),
        train=TrainConfig(steps=200, batch_size=16, seq_len=64, lr=3e-3, min_lr=3e-4, warmup=20, log_every=10,
                          eval_every=20, amp=None),
        grid=GridSpec(gqa_kv_heads=2, window=16),
        eval=EvalSettings(tokens=16384, curve_tokens=4096, batch_tokens=16384),
    ),
    # CPU, the whole default grid with --seeds 3 in <= 60 minutes on 2 cores (docs/presets.md); a learning rate per
    # point from 3 candidates (lr/2, lr, 2 lr) trained a quarter of the steps each, scored on tune documents.
    "small": TrainingConfig(
        model=replace(model_preset("small"), max_len=128),
        train=TrainConfig(steps=300, batch_size=32, seq_len=128, lr=3e-3, min_lr=3e-4, warmup=30, log_every=10,
                          eval_every=30, amp=None),
        grid=GridSpec(gqa_kv_heads=2, window=32),
        eval=EvalSettings(tokens=131072, curve_tokens=16384, batch_tokens=16384),
        data=DataSettings(corpus="stdlib"),
        lr_sweep=SweepSettings(points=3, spacing=2.0, fraction=0.25, tokens=32768),
    ),
    # CUDA default: d=512, 6 layers, 16k tokens/step, bf16; see docs/training.md for its time on one H100.
    "gpu": TrainingConfig(
        model=replace(model_preset("gpu"), max_len=256),
        train=TrainConfig(steps=1500, batch_size=64, seq_len=256, lr=1e-3, min_lr=1e-4, warmup=100, log_every=50,
                          eval_every=150, amp="bf16"),
        grid=GridSpec(gqa_kv_heads=2, window=64),
        eval=EvalSettings(tokens=262144, curve_tokens=32768, batch_tokens=65536),
        data=DataSettings(corpus="stdlib"),
        lr_sweep=SweepSettings(points=3, spacing=2.0, fraction=0.25, tokens=65536),
    ),
}



def _grid_alias(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """``grid=norm=a,b;activation=c`` is short for ``grid.axes=...``."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        out.append("grid.axes=" + item.split("=", 1)[1] if key == "grid" and "=" in item else item)
    return out


def resolve(preset: str, overrides: tuple[str, ...] | list[str] = ()) -> TrainingConfig:
    """The preset with ``--set`` overrides applied and checked (one-line ConfigError / UnknownKeyError)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown training preset {preset!r}; valid: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    cfg = apply_overrides(base, _grid_alias(overrides))
    keys = override_keys(_grid_alias(overrides))
    # train.seq_len and model.train_len are one setting: follow whichever the user set (as extrapolation does); both
    # set to different values is refused naming both. A model.max_len set below it is refused, not raised.
    m, t = cfg.model, cfg.train
    train_len = unified_train_len(base.model.train_len, base.train.seq_len, m.train_len, t.seq_len, keys)
    check_max_len(m.max_len, train_len, keys, what="train.seq_len" if "train.seq_len" in keys else "model.train_len")
    max_len = m.max_len if "model.max_len" in keys else max(m.max_len, train_len)
    cfg = replace(cfg, model=replace(m, train_len=train_len, max_len=max_len), train=replace(t, seq_len=train_len))
    b = cfg.budget
    if b.kind not in BUDGET_KINDS:
        raise ConfigError(f"unknown budget.kind {b.kind!r}; valid: {', '.join(BUDGET_KINDS)}")
    if b.tokens < 0 or b.flops < 0 or b.seconds < 0 or b.calib_steps < 2:
        raise ConfigError("budget.tokens, budget.flops and budget.seconds must be >= 0 (0 = from train.steps) and "
                          f"budget.calib_steps >= 2 (got {b.tokens}, {b.flops}, {b.seconds}, {b.calib_steps})")
    e = cfg.eval
    if e.tokens < 1 or e.curve_tokens < 1 or e.batch_tokens < 1:
        raise ConfigError(f"eval.tokens, eval.curve_tokens and eval.batch_tokens must be >= 1 "
                          f"(got {e.tokens}, {e.curve_tokens}, {e.batch_tokens})")
    for name, n in (("eval.tokens", e.tokens), ("eval.curve_tokens", e.curve_tokens)):
        if n < train_len:  # as the extrapolation suite refuses eval.tokens below its longest evaluation length
            raise ConfigError(f"{name}={n} is shorter than train.seq_len={train_len}, the length every point is "
                              f"scored at; raise {name} or lower train.seq_len")
    cfg.lr_sweep.check()
    off = sorted(k for k in {str(o).split("=", 1)[0].strip() for o in overrides}
                 if k.startswith("lr_sweep.") and k != "lr_sweep.points")
    if off and not cfg.lr_sweep.enabled:
        raise ConfigError(f"{off[0]} applies to a learning-rate sweep; turn one on with lr_sweep.points=N (N >= 2 "
                          "candidates around train.lr)")
    if cfg.time_limit_s < 0:
        raise ConfigError(f"time_limit_s must be >= 0 (0 = no limit), got {cfg.time_limit_s}")
    if cfg.cpu_threads < 0:
        raise ConfigError(f"cpu_threads must be >= 0 (0 = torch's default), got {cfg.cpu_threads}")
    _refuse_grid_governed(cfg, {str(o).split("=", 1)[0].strip() for o in _grid_alias(overrides)})
    grid_points(cfg)  # grid errors (unknown axis, bad value, unknown point name) before any data or compute
    for p in build_grid(cfg.model, replace(cfg.grid, only=())):
        check_model_keys(p.model)  # a variant key the grid's base carries (grid.base=preset)
    _refuse_ignored_grid_settings(cfg, keys)
    return cfg


def _refuse_ignored_grid_settings(cfg: TrainingConfig, keys: set[str]) -> None:
    """``grid.window`` / ``grid.gqa_kv_heads`` set where no point of the grid uses them (an axes grid without a
    windowed attention or a GQA base) would be accepted and ignored: refuse them, saying what uses them."""
    uses = {"grid.window": "a point whose attention needs a window (e.g. --sweep model.attention=sdpa,sliding_window, "
                           "or the default grid's modern+sliding_window)",
            "grid.gqa_kv_heads": "a point with GQA (the 'modern' base or the default grid)"}
    for key in sorted(k for k in keys if k in uses):
        name = key.split(".", 1)[1]
        other = replace(cfg.grid, **{name: getattr(cfg.grid, name) + 1})
        if [p.model for p in build_grid(cfg.model, cfg.grid)] == [p.model for p in build_grid(cfg.model, other)]:
            raise ConfigError(f"{key}={getattr(cfg.grid, name)} is used by no point of this grid; it applies to "
                              f"{uses[key]}; drop it")


def _refuse_grid_governed(cfg: TrainingConfig, keys: set[str]) -> None:
    """A ``model.*`` setting that the grid's points overwrite would be ignored: refuse it, naming what governs it."""
    if not cfg.model.causal:
        raise ConfigError("model.causal=false: a language model that sees the tokens it predicts scores a leaked "
                          "loss; the training suite trains causal models only")
    if "model.vocab_size" in keys:
        raise ConfigError("model.vocab_size cannot be set for the training suite: the vocabulary comes from the data "
                          "(data.vocab_size for a .bin file)")
    if "model.scale_embeddings" in keys:
        raise ConfigError("model.scale_embeddings is set by the grid, one treatment for every point: "
                          "grid.scale_embeddings=true|false, or a factor: --sweep model.scale_embeddings=false,true")
    axes = {a.key for a in parse_axes(cfg.grid.axes)} if cfg.grid.axes.strip() else set()
    for k in ("grid.mode", "grid.base"):
        if k in keys and not axes:
            raise ConfigError(f"{k} applies to an axes grid; give its axes with --sweep model.KEY=a,b (or --set "
                              f"grid.axes=...); the default grid is original vs modern")
    for key in sorted(k for k in keys if k.startswith("model.")):
        name = key[len("model."):]
        if name in axes:
            raise ConfigError(f"{key} is also a grid axis (grid.axes); give its values there only")
        if name in ORIGINAL and (not axes or cfg.grid.base != "preset"):
            where = "the default grid's points" if not axes else f"the grid base {cfg.grid.base!r}"
            raise ConfigError(f"{key} is set by {where} (original: {ORIGINAL[name]}, modern: {MODERN[name]}); vary "
                              f"it with --sweep {key}=a,b, or make it the base of an axes grid with --set "
                              f"grid.base=preset --sweep model.AXIS=a,b")


def grid_points(cfg: TrainingConfig) -> tuple[list[GridPoint], GridPoint]:
    """(the points to run, the reference point of the whole grid -- its first, before ``grid.only``)."""
    full = build_grid(cfg.model, replace(cfg.grid, only=()))
    return select(full, cfg.grid.only), full[0]


def point_train(cfg: TrainingConfig, point: GridPoint, seed: int) -> TrainConfig:
    """The point's TrainConfig (grid training axes applied), before the budget sets ``steps``."""
    tr = apply_overrides(cfg.train, list(point.train_overrides)) if point.train_overrides else cfg.train
    return replace(tr, seed=seed)



def _model_id(model: ModelConfig) -> dict[str, Any]:
    """The model's settings as hashed into grid_id / config_id (see :data:`ID_OMIT_AT`)."""
    return {k: v for k, v in flatten(model).items() if not (k in ID_OMIT_AT and v == ID_OMIT_AT[k])}


def _corpus_id(corpus: Any) -> dict[str, Any]:
    """The corpus's name and, for a :class:`ablate.io.corpus.Corpus`, its content hash (runs on other data never mix)."""
    out: dict[str, Any] = {"corpus": getattr(corpus, "name", corpus), "protocol": PROTOCOL}
    if getattr(corpus, "hash", None):
        out["corpus_hash"] = corpus.hash
    return out


def sweeps_lr(cfg: TrainingConfig, point: GridPoint) -> bool:
    """Whether ``point`` gets its learning rate from the sweep: the sweep is on and no ``train.lr`` axis sets it."""
    return cfg.lr_sweep.enabled and not any(o.split("=", 1)[0] in ("lr", "min_lr") for o in point.train_overrides)


def _sweep_id(cfg: TrainingConfig) -> dict[str, Any]:
    """The sweep's settings as hashed (nothing when it is off: ids from before the sweep existed stay valid)."""
    return {"lr_sweep": flatten(cfg.lr_sweep)} if cfg.lr_sweep.enabled else {}


def grid_id(cfg: TrainingConfig, corpus: Any) -> str:
    """Hash of the settings shared by the whole grid (one report section per grid_id)."""
    tr = flatten(cfg.train)
    tr.pop("seed", None)
    return row_key({"model": _model_id(cfg.model), "train": tr, "budget": flatten(cfg.budget),
                    "grid": {k: v for k, v in flatten(cfg.grid).items() if k != "only"}, "eval": flatten(cfg.eval),
                    "data": data_fields(cfg.data, corpus), **_corpus_id(corpus), **_sweep_id(cfg)})


def config_id(cfg: TrainingConfig, point: GridPoint, corpus: Any) -> str:
    """Hash of everything that shapes this point's runs (its model, training, budget, evaluation, data, and the
    learning-rate sweep where it picks the point's rate)."""
    tr = flatten(point_train(cfg, point, 0))
    tr.pop("seed", None)  # a key field of its own
    return row_key({"model": _model_id(point.model), "train": tr, "budget": flatten(cfg.budget),
                    "eval": flatten(cfg.eval), "data": data_fields(cfg.data, corpus), **_corpus_id(corpus),
                    **(_sweep_id(cfg) if sweeps_lr(cfg, point) else {})})
