"""Settings of the recall suite: the config dataclasses, presets, ``resolve`` (``--set`` / ``--sweep`` checked),
the grid points (attention x window x KV heads x d_model x (length, pairs) x learning rate) and ``config_id``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ablate.core.config import ModelConfig, apply_overrides, check_model_keys, flatten
from ablate.core.train import TrainConfig
from ablate.errors import ConfigError
from ablate.store.results import row_key

from .constants import PROTOCOL
from .data import check_shape


@dataclass(frozen=True)
class TaskSettings:
    """MQAR (``suites/recall/data.py``): one task per (seq_len, kv_pairs) pair; ``kv_pairs`` holds one value per
    length (or one value for all)."""

    vocab_size: int = 8192
    seq_lens: tuple[int, ...] = (64, 128, 256, 512)
    kv_pairs: tuple[int, ...] = (4, 8, 16, 64)
    batch_sizes: tuple[int, ...] = ()  # per length (or one for all); () = train.batch_size
    power_a: float = 0.01
    random_non_queries: bool = False  # the Figure 2 configs turn the random fill off
    val_examples: int = 500  # the learning-rate choice and the convergence curve (never the test set)
    test_examples: int = 3000
    seed: int = 123  # seed of the validation and test sets (the same for every point and model seed)


@dataclass(frozen=True)
class TrainSettings:
    examples: int = 6_400_000  # training examples each model sees (fresh ones every step; 64 epochs x 100k)
    batch_size: int = 512
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.0  # cosine decay to lr x this (the reference: CosineAnnealingLR to 0)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    evals: int = 10  # validation points along the run (the convergence flag reads them)
    amp: str | None = "bf16"  # CUDA only
    compile: bool = False


@dataclass(frozen=True)
class GridSettings:
    attentions: tuple[str, ...] = ("sdpa", "sliding_window", "linear")
    d_models: tuple[int, ...] = (64, 128, 256, 512)
    windows: tuple[int, ...] = (32,)  # for attentions that need a window (each window is a point)
    kv_heads: tuple[int, ...] = (0,)  # n_kv_heads per point; 0 = n_heads (multi-head attention)
    lrs: tuple[float, ...] = (1e-4, 4.6e-4, 2.2e-3, 1e-2)  # np.logspace(-4, -2, 4), best per point on validation


@dataclass(frozen=True)
class RecallConfig:
    model: ModelConfig  # the base: layers, heads, position, FFN; the grid sets the rest
    data: TaskSettings = field(default_factory=TaskSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    grid: GridSettings = field(default_factory=GridSettings)
    el_bytes: int = 2  # bytes per element of the decode state (bf16/fp16 caches)
    time_limit_s: float = 0.0  # stop starting new runs after this many seconds (0 = no limit); re-run to resume
    cpu_threads: int = 0  # CPU: torch threads (0 = torch's default); the CPU presets use 1: these narrow models gain
    # nothing from a second thread, and a second thread on a core another job holds stalls every step


# Two layers and one head, as the reference's Figure 2 models; RoPE for every mixer (one position treatment) and a
# narrow FFN (the reference has none: its state mixer is the identity; ablate's block always has one).
_BASE = ModelConfig(vocab_size=8192, d_model=64, n_layers=2, n_heads=1, ffn_mult=1.0, position="rope",
                    norm="layernorm", activation="gelu", max_len=512, train_len=64)
_CPU = TrainSettings(batch_size=32, warmup_frac=0.1, evals=8, amp=None)
# The CPU rungs' attentions: softmax, sliding window, linear attention (elu+1, stays on the recall plateau there) and
# Based (feature dimension 16 after a short convolution; solves the tiny task: 1.000 at d_model 32 and 64, seed 0).
RECALL_ATTENTIONS = ("sdpa", "sliding_window", "linear", "based")

PRESETS: dict[str, RecallConfig] = {
    # Tests: seconds on a CPU.
    "micro": RecallConfig(
        model=replace(_BASE, vocab_size=64),
        data=TaskSettings(vocab_size=64, seq_lens=(32,), kv_pairs=(4,), val_examples=32, test_examples=64),
        train=replace(_CPU, examples=16 * 12, batch_size=16, evals=3),
        grid=GridSettings(d_models=(16,), windows=(4,), lrs=(3e-3,)), cpu_threads=1),
    # CPU default (<= 10 min on 2 idle cores, one torch thread): one length (32, 4 pairs), two widths, vocabulary 64,
    # one learning rate, RMSNorm/SwiGLU blocks. Softmax attention at d_model 32 leaves the recall plateau between
    # steps 300 and 600 and is solved by step 1200 of this schedule (at 800 steps it was still at 0.39).
    "tiny": RecallConfig(
        model=replace(_BASE, vocab_size=64, norm="rmsnorm", activation="swiglu", ffn_mult=2.0),
        data=TaskSettings(vocab_size=64, seq_lens=(32,), kv_pairs=(4,), val_examples=250, test_examples=1000),
        train=replace(_CPU, examples=64 * 2400, batch_size=64, min_lr_frac=0.1),
        grid=GridSettings(attentions=RECALL_ATTENTIONS, d_models=(32, 64), windows=(8,), lrs=(3e-3,)), cpu_threads=1),
    # CPU, >= 3 seeds (<= 60 min on 2 idle cores as two processes into one --out): the tiny task (vocabulary 64,
    # length 32, 4 pairs) at more breadth -- three windows (4, 8, 16: accuracy against window / query gap), the best
    # of two learning rates per point. Longer tasks do not leave the plateau in a CPU budget: at 2,400 steps x 64,
    # softmax attention at (64, 8) reached 0.14 (V=128, d=32) and at (64, 4) 0.25 (V=256, d=32) -- the gpu rung's.
    "small": RecallConfig(
        model=replace(_BASE, vocab_size=64, norm="rmsnorm", activation="swiglu", ffn_mult=2.0),
        data=TaskSettings(vocab_size=64, seq_lens=(32,), kv_pairs=(4,), val_examples=250, test_examples=1000),
        train=replace(_CPU, examples=64 * 2400, batch_size=64, min_lr_frac=0.1),
        grid=GridSettings(attentions=RECALL_ATTENTIONS, d_models=(32, 64), windows=(4, 8, 16), lrs=(1e-3, 3e-3)),
        cpu_threads=1),
    # One H100: the Figure 2 grid (vocabulary 8192; (64, 4), (128, 8), (256, 16), (512, 64); d_model 64-512; four
    # learning rates; batch 512/512/256/128; 64 epochs of 100k examples' worth of fresh examples).
    "gpu": RecallConfig(
        model=_BASE,
        data=TaskSettings(batch_sizes=(512, 512, 256, 128), val_examples=1000),
        train=TrainSettings(),
        grid=GridSettings(windows=(16, 64))),
}


@dataclass(frozen=True)
class RecallPoint:
    """One model to train (per seed): its settings and the MQAR task it learns."""

    name: str
    model: ModelConfig
    seq_len: int
    kv_pairs: int
    batch_size: int
    lr: float

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"point": self.name, "attention": m.attention, "position": m.position, "d_model": m.d_model,
                "n_heads": m.n_heads, "n_kv_heads": m.kv_heads, "head_dim": m.head_dim, "window": m.window,
                "n_layers": m.n_layers, "vocab_size": m.vocab_size, "seq_len": self.seq_len,
                "kv_pairs": self.kv_pairs, "lr": self.lr, "batch_size": self.batch_size}


def _needs_window(attention: str) -> bool:
    from ablate.variants.attention import layer_spec  # lazy: the attention package imports torch

    return "window" in layer_spec(attention).kernel_spec.requires


def lengths(cfg: RecallConfig) -> list[tuple[int, int, int]]:
    """The (seq_len, kv_pairs, batch_size) tasks of the grid."""
    d, t = cfg.data, cfg.train

    def per(values: tuple[int, ...], name: str, default: int) -> list[int]:
        if not values:
            return [default] * len(d.seq_lens)
        if len(values) == 1:
            return list(values) * len(d.seq_lens)
        if len(values) != len(d.seq_lens):
            raise ConfigError(f"data.{name} holds {len(values)} values for {len(d.seq_lens)} data.seq_lens; give "
                              f"one per length (or one for all)")
        return list(values)

    return list(zip(d.seq_lens, per(d.kv_pairs, "kv_pairs", 0), per(d.batch_sizes, "batch_sizes", t.batch_size)))


def points(cfg: RecallConfig) -> list[RecallPoint]:
    """Every point of the grid, in run order: length, then d_model, attention, window, KV heads, learning rate."""
    out = []
    g, base = cfg.grid, cfg.model
    for seq_len, kv, batch in lengths(cfg):
        for d in g.d_models:
            for att in g.attentions:
                for w in (g.windows if _needs_window(att) else (None,)):
                    for h in g.kv_heads:
                        for lr in g.lrs:
                            m = replace(base, attention=att, d_model=d, window=w, n_kv_heads=h or None,
                                        vocab_size=cfg.data.vocab_size, train_len=seq_len,
                                        max_len=max(base.max_len, seq_len))
                            name = (f"{att}" + (f"-w{w}" if w else "") + (f"-kv{h}" if h else "")
                                    + f"-d{d}-T{seq_len}x{kv}-lr{lr:g}")
                            out.append(RecallPoint(name, m, seq_len, kv, batch, float(lr)))
    return out


def steps_of(cfg: RecallConfig, point: RecallPoint) -> int:
    return max(1, math.ceil(cfg.train.examples / point.batch_size))


def train_config(cfg: RecallConfig, point: RecallPoint, seed: int) -> TrainConfig:
    """The point's :class:`ablate.core.train.TrainConfig`: AdamW, warm-up then cosine to ``lr x min_lr_frac``."""
    t = cfg.train
    steps = steps_of(cfg, point)
    return TrainConfig(steps=steps, batch_size=point.batch_size, seq_len=point.seq_len, lr=point.lr,
                       min_lr=point.lr * t.min_lr_frac, warmup=int(t.warmup_frac * steps),
                       weight_decay=t.weight_decay, grad_clip=t.grad_clip, seed=seed,
                       eval_every=max(1, steps // max(1, t.evals)), log_every=max(1, steps // 20), amp=t.amp,
                       compile=t.compile)


def resolve(preset: str, overrides: tuple[str, ...] | list[str] = ()) -> RecallConfig:
    """The preset with ``--set`` overrides applied and checked (one-line ConfigError / UnknownKeyError)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown recall preset {preset!r}; valid: {', '.join(PRESETS)}")
    cfg = apply_overrides(PRESETS[preset], list(overrides))
    keys = {str(o).split("=", 1)[0].strip() for o in overrides}
    for k in ("model.attention", "model.d_model", "model.window", "model.n_kv_heads", "model.vocab_size",
              "model.train_len"):
        if k in keys:
            where = {"model.vocab_size": "data.vocab_size", "model.train_len": "data.seq_lens"}.get(k)
            raise ConfigError(f"{k} is set per grid point; use {where}" if where else
                              f"{k} is set per grid point; vary it with --sweep {k}=a,b")
    if not cfg.model.causal:
        raise ConfigError("model.causal=false: a model that sees the answer it predicts learns nothing about recall; "
                          "the recall suite trains causal models only")
    d, t, g = cfg.data, cfg.train, cfg.grid
    for name, values in (("data.seq_lens", d.seq_lens), ("grid.attentions", g.attentions),
                         ("grid.d_models", g.d_models), ("grid.lrs", g.lrs), ("grid.kv_heads", g.kv_heads)):
        if not values:
            raise ConfigError(f"{name} is empty; give at least one value")
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} repeats a value: {', '.join(map(str, values))}")
    if any(x < 1 for x in (*d.seq_lens, *d.kv_pairs, *d.batch_sizes, *g.d_models, *g.windows)) or \
            any(x < 0 for x in g.kv_heads) or any(not x > 0 for x in g.lrs):
        raise ConfigError("data.seq_lens, data.kv_pairs, data.batch_sizes, grid.d_models and grid.windows must be "
                          ">= 1, grid.kv_heads >= 0 (0 = multi-head), grid.lrs > 0")
    if d.val_examples < 1 or d.test_examples < 1 or t.examples < 1 or t.batch_size < 1 or t.evals < 1:
        raise ConfigError(f"data.val_examples, data.test_examples, train.examples, train.batch_size and train.evals "
                          f"must be >= 1 (got {d.val_examples}, {d.test_examples}, {t.examples}, {t.batch_size}, "
                          f"{t.evals})")
    if not (0 <= t.warmup_frac < 1 and 0 <= t.min_lr_frac <= 1):
        raise ConfigError(f"train.warmup_frac must be in [0, 1) and train.min_lr_frac in [0, 1] (got "
                          f"{t.warmup_frac}, {t.min_lr_frac})")
    if cfg.el_bytes < 1 or cfg.time_limit_s < 0 or cfg.cpu_threads < 0:
        raise ConfigError("el_bytes must be >= 1, time_limit_s and cpu_threads >= 0")
    for seq_len, kv, _ in lengths(cfg):
        check_shape(d.vocab_size, seq_len, kv)
    pts = points(cfg)
    if not any(p.model.window for p in pts) and "grid.windows" in keys:
        raise ConfigError("grid.windows is used by no point: no attention of grid.attentions needs a window "
                          "(e.g. --sweep model.attention=sdpa,sliding_window)")
    for p in pts:
        check_model_keys(p.model, prefix="model.")
        if p.model.d_model % p.model.n_heads or p.model.n_heads % p.model.kv_heads:
            raise ConfigError(f"point {p.name}: d_model {p.model.d_model} must divide into model.n_heads="
                              f"{p.model.n_heads} heads and the heads into {p.model.kv_heads} KV heads")
    return cfg


def config_id(cfg: RecallConfig, point: RecallPoint) -> str:
    """Hash of everything that shapes this point's runs (model, task, training, protocol)."""
    return row_key({"model": flatten(point.model), "seq_len": point.seq_len, "kv_pairs": point.kv_pairs,
                    "batch_size": point.batch_size, "lr": point.lr,
                    "data": {k: v for k, v in flatten(cfg.data).items() if k not in _PER_POINT},
                    "train": {k: v for k, v in flatten(cfg.train).items() if k != "batch_size"}, "protocol": PROTOCOL})


_PER_POINT = ("seq_lens", "kv_pairs", "batch_sizes")  # data settings a point carries as its own values
