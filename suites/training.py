"""Training ablations: what did each change from the 2017 Transformer to today's LLM block buy, at equal budget?

    ablate run --suite training                          # tiny preset on CPU (default grid, <= 10 min on 2 cores)
    ablate run --suite training --preset micro --seeds 3  # seconds (tests)
    ablate run --suite training --set "grid=norm=layernorm,rmsnorm;activation=relu,gelu,swiglu"   # factorial
    ablate run --suite training --set grid.axes=train.lr=1e-3,3e-3,1e-2 --set grid.mode=oat --set grid.base=original
    ablate run --suite training --set budget.kind=flops   # equal FLOPs (or time) instead of equal tokens
    ablate report results/training --out reports/training

The grid (:mod:`ablate.grid`): by default "original" (post-LN LayerNorm, ReLU, sinusoidal, MHA, full attention),
"modern" (pre-RMSNorm, SwiGLU, RoPE, GQA), every change applied alone to original and removed alone from modern,
plus sliding-window and linear attention on modern. Every point x seed trains one model from scratch with the shared
loop (:func:`ablate.train.train`: AdamW, warm-up + cosine, clipping, bf16 autocast on CUDA, optional compile) on the
same data order per seed, and is then scored on the same held-out tokens.

Budget (``budget.kind``): ``tokens`` (default; every point trains ``budget.tokens``, default ``train.steps x
batch x seq_len``), ``flops`` (steps = ``budget.flops`` / the point's FLOPs per step; default budget = the reference
point's FLOPs per step x ``train.steps``) or ``time`` (steps = ``budget.seconds`` x the point's measured tokens/s,
timed over ``budget.calib_steps`` throw-away steps; default seconds = the reference point's time for
``train.steps``). The reference point is the grid's first ("original" in the default grid).

Rows (results file ``<out>/training/<device>-<preset>.jsonl``): one per grid point x seed. Key fields: ``point``,
``preset``, ``config_id`` (hash of everything that shapes the run), ``seed``, ``device``, ``data``. Metrics:
``val_loss`` (nats/token on ``eval.tokens`` held-out tokens), ``val_ppl``, ``val_bpb`` (byte-level data),
``train_loss``, ``params`` (+ ``params_non_embedding``, ``matmul_params``), ``steps``, ``tokens``,
``tokens_per_s`` (steady state, first step excluded), ``step_ms``, ``train_s``, ``flops_per_step``, ``tflops``,
``mfu`` with ``mfu_peak_tflops`` / ``mfu_peak`` (the peak used; CUDA only), ``peak_mem_bytes`` /
``peak_mem_kind`` (``cuda_max_allocated`` per run; on CPU ``cpu_maxrss`` is the process high-water mark, not per
run), ``diverged_step``, the grid description (``baseline``, ``change``, ``group``, ``point_index``, ``grid_id``,
``axis.*``), the variant columns (``norm``, ``norm_placement``, ``activation``, ``position``, ``attention``,
``n_kv_heads``, ``window``) and **the curve as compact lists in the same row**: ``curve.step`` / ``curve.tokens`` /
``curve.train_loss`` (every ``train.log_every`` steps; the loss of that step) and ``curve.val_step`` /
``curve.val_loss`` (every ``train.eval_every`` steps and at the end, on ``eval.curve_tokens`` held-out tokens).
A run whose loss goes non-finite gets status ``diverged`` with ``diverged_step`` and its curve so far; the grid
goes on. Finished rows (``ok``, ``diverged``, ``unsupported``) are skipped on a re-run, so an interrupted grid
resumes where it stopped.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ablate.progress import start_progress
from ablate.config import ModelConfig, apply_overrides, flatten, unified_train_len
from ablate.data import Batches, Corpus, DataSettings, check_eval_span, corpus_for, data_fields
from ablate.errors import ConfigError
from ablate.evaluate import evaluate, span_needed
from ablate.flops import matmul_params, peak_tflops, step_flops
from ablate.grid import GridPoint, GridSpec, build_grid, select
from ablate.results import ResultWriter, done_keys, row_key, status_from_exception
from ablate.runstate import Claims
from ablate.train import TrainConfig, lm_loss, refuse_cpu_amp, train

SUITE = "training"
BUDGET_KINDS = ("tokens", "flops", "time")
# `ablate run --sweep KEY=V1,V2` (ablate.sweep): any model or training setting becomes an axis of a factorial grid
# over the model.* base (ablate.grid validates the key and values).
SWEEPS = {"model.*": "grid.axes", "train.*": "grid.axes"}
VARIANT_COLUMNS = ("norm", "norm_placement", "activation", "position", "attention", "n_kv_heads", "window")


@dataclass(frozen=True)
class BudgetSettings:
    kind: str = "tokens"  # tokens | flops | time: what every grid point gets the same amount of
    tokens: int = 0  # training tokens per run; 0 = train.steps x batch_size x seq_len
    flops: float = 0.0  # training FLOPs per run; 0 = the reference point's FLOPs per step x train.steps
    seconds: float = 0.0  # training seconds per run (evaluation excluded); 0 = the reference's time for train.steps
    calib_steps: int = 8  # throw-away steps timed to turn seconds into a step count (kind=time)


@dataclass(frozen=True)
class EvalSettings:
    tokens: int = 32768  # held-out targets scored for the final validation loss (all points: the same tokens)
    curve_tokens: int = 8192  # held-out targets scored at each curve point (every train.eval_every steps)
    batch_tokens: int = 16384  # tokens per evaluation forward


@dataclass(frozen=True)
class TrainingConfig:
    model: ModelConfig  # sizes and lengths; the grid sets the variant fields
    train: TrainConfig
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    grid: GridSpec = field(default_factory=GridSpec)
    eval: EvalSettings = field(default_factory=EvalSettings)
    data: DataSettings = field(default_factory=DataSettings)
    time_limit_s: float = 0.0  # stop starting new runs after this many seconds (0 = no limit); re-run to resume
    cpu_threads: int = 0  # CPU: torch threads (0 = torch's default); recorded in every row's config


PRESETS: dict[str, TrainingConfig] = {
    # Tests: seconds on a CPU.
    "micro": TrainingConfig(
        model=ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=64),
        train=TrainConfig(steps=12, batch_size=8, seq_len=16, lr=3e-3, min_lr=3e-4, warmup=3, log_every=4,
                          eval_every=6, amp=None),
        grid=GridSpec(gqa_kv_heads=1, window=4),
        eval=EvalSettings(tokens=512, curve_tokens=256, batch_tokens=4096),
    ),
    # CPU default: the whole default grid (14 points, 1 seed) in <= 10 minutes on 2 cores; see docs/training.md.
    "tiny": TrainingConfig(
        model=ModelConfig(d_model=128, n_layers=2, n_heads=4, train_len=64, max_len=64),
        train=TrainConfig(steps=400, batch_size=32, seq_len=64, lr=3e-3, min_lr=3e-4, warmup=40, log_every=20,
                          eval_every=50, amp=None),
        grid=GridSpec(gqa_kv_heads=2, window=16),
        eval=EvalSettings(tokens=32768, curve_tokens=4096, batch_tokens=16384),
    ),
    # CUDA default: d=512, 6 layers, 16k tokens/step, bf16; see docs/training.md for its time on one H100.
    "gpu": TrainingConfig(
        model=ModelConfig(d_model=512, n_layers=6, n_heads=8, train_len=256, max_len=256),
        train=TrainConfig(steps=1500, batch_size=64, seq_len=256, lr=1e-3, min_lr=1e-4, warmup=100, log_every=50,
                          eval_every=250, amp="bf16"),
        grid=GridSpec(gqa_kv_heads=2, window=64),
        eval=EvalSettings(tokens=262144, curve_tokens=32768, batch_tokens=65536),
        data=DataSettings(corpus="stdlib"),
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Configuration


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
    # train.seq_len and model.train_len are one setting: follow whichever the user changed (as extrapolation does).
    m, t = cfg.model, cfg.train
    train_len = unified_train_len(base.model.train_len, base.train.seq_len, m.train_len, t.seq_len)
    max_len = max(m.max_len, train_len)
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
    if cfg.time_limit_s < 0:
        raise ConfigError(f"time_limit_s must be >= 0 (0 = no limit), got {cfg.time_limit_s}")
    if cfg.cpu_threads < 0:
        raise ConfigError(f"cpu_threads must be >= 0 (0 = torch's default), got {cfg.cpu_threads}")
    _refuse_grid_governed(cfg, {str(o).split("=", 1)[0].strip() for o in _grid_alias(overrides)})
    grid_points(cfg)  # grid errors (unknown axis, bad value, unknown point name) before any data or compute
    return cfg


def _refuse_grid_governed(cfg: TrainingConfig, keys: set[str]) -> None:
    """A ``model.*`` setting that the grid's points overwrite would be ignored: refuse it, naming what governs it."""
    from ablate.grid import MODERN, ORIGINAL, parse_axes

    if not cfg.model.causal:
        raise ConfigError("model.causal=false: a language model that sees the tokens it predicts scores a leaked "
                          "loss; the training suite trains causal models only")
    if "model.vocab_size" in keys:
        raise ConfigError("model.vocab_size cannot be set for the training suite: the vocabulary comes from the data "
                          "(data.vocab_size for a .bin file)")
    if "model.scale_embeddings" in keys:
        raise ConfigError("model.scale_embeddings is set by the grid: on exactly the points whose position is "
                          "sinusoidal (Vaswani et al. sec. 3.4)")
    axes = {a.key for a in parse_axes(cfg.grid.axes)} if cfg.grid.axes.strip() else set()
    for k in ("grid.mode", "grid.base"):
        if k in keys and not axes:
            raise ConfigError(f"{k} applies to an axes grid; give its axes with --grid key=a,b (or --set "
                              f"grid.axes=...); the default grid is original vs modern")
    for key in sorted(k for k in keys if k.startswith("model.")):
        name = key[len("model."):]
        if name in axes:
            raise ConfigError(f"{key} is also a grid axis (grid.axes); give its values there only")
        if name in ORIGINAL and (not axes or cfg.grid.base != "preset"):
            where = "the default grid's points" if not axes else f"the grid base {cfg.grid.base!r}"
            raise ConfigError(f"{key} is set by {where} (original: {ORIGINAL[name]}, modern: {MODERN[name]}); vary "
                              f"it with --grid {name}=a,b, or make it the base of an axes grid with --set "
                              f"grid.base=preset --grid <axes>")


def grid_points(cfg: TrainingConfig) -> tuple[list[GridPoint], GridPoint]:
    """(the points to run, the reference point of the whole grid -- its first, before ``grid.only``)."""
    full = build_grid(cfg.model, replace(cfg.grid, only=()))
    return select(full, cfg.grid.only), full[0]


def point_train(cfg: TrainingConfig, point: GridPoint, seed: int) -> TrainConfig:
    """The point's TrainConfig (grid training axes applied), before the budget sets ``steps``."""
    tr = apply_overrides(cfg.train, list(point.train_overrides)) if point.train_overrides else cfg.train
    return replace(tr, seed=seed)


# Model fields added after results were committed, with the value that reproduces the behaviour from before they
# existed: left out of the hashes at that value, so adding a field does not change (and retrain) every config_id.
_ID_OMIT_AT: dict[str, Any] = {"scale_embeddings": False, "t5_max_distance": None}
PROTOCOL = 2  # what a row measures; v2: held-out documents + corpus hash, fairseq init for sinusoidal points


def _model_id(model: ModelConfig) -> dict[str, Any]:
    """The model's settings as hashed into grid_id / config_id (see :data:`_ID_OMIT_AT`)."""
    return {k: v for k, v in flatten(model).items() if not (k in _ID_OMIT_AT and v == _ID_OMIT_AT[k])}


def _corpus_id(corpus: Any) -> dict[str, Any]:
    """The corpus's name and, for a :class:`ablate.data.Corpus`, its content hash (runs on other data never mix)."""
    out: dict[str, Any] = {"corpus": getattr(corpus, "name", corpus), "protocol": PROTOCOL}
    if getattr(corpus, "hash", None):
        out["corpus_hash"] = corpus.hash
    return out


def grid_id(cfg: TrainingConfig, corpus: Any) -> str:
    """Hash of the settings shared by the whole grid (one report section per grid_id)."""
    tr = flatten(cfg.train)
    tr.pop("seed", None)
    return row_key({"model": _model_id(cfg.model), "train": tr, "budget": flatten(cfg.budget),
                    "grid": {k: v for k, v in flatten(cfg.grid).items() if k != "only"}, "eval": flatten(cfg.eval),
                    "data": data_fields(cfg.data, corpus), **_corpus_id(corpus)})


def config_id(cfg: TrainingConfig, point: GridPoint, corpus: Any) -> str:
    """Hash of everything that shapes this point's runs (its model, training, budget, evaluation, data)."""
    tr = flatten(point_train(cfg, point, 0))
    tr.pop("seed", None)  # a key field of its own
    return row_key({"model": _model_id(point.model), "train": tr, "budget": flatten(cfg.budget),
                    "eval": flatten(cfg.eval), "data": data_fields(cfg.data, corpus), **_corpus_id(corpus)})


def results_file(opts, device: str, preset: str) -> Path:
    """``<out>/training/<device>-<preset>.jsonl`` (e.g. ``results/training/cpu-tiny.jsonl``)."""
    return Path(opts.out) / SUITE / f"{device}-{preset}.jsonl"


# ---------------------------------------------------------------------------------------------------------------
# Budget


def flops_per_step(model, mcfg: ModelConfig, tcfg: TrainConfig) -> float:
    """Training FLOPs of one step (:func:`ablate.flops.step_flops`, the count the latency suite uses too)."""
    return step_flops(matmul_params(model), mcfg, tcfg.batch_size, tcfg.seq_len)[0]


def _calibrate(mcfg: ModelConfig, tcfg: TrainConfig, corpus: Corpus, device: str, steps: int) -> float:
    """Steady training tokens/s of ``mcfg``, timed on a throw-away model (the real run is untouched)."""
    from ablate.model import Transformer

    state = torch.random.get_rng_state()
    try:
        model = Transformer(mcfg).to(device)
        cal = replace(tcfg, steps=steps, warmup=0, log_every=steps, eval_every=0)
        res = train(model, cal, Batches(corpus.train, cal.batch_size, cal.seq_len, seed=10_000 + tcfg.seed,
                                        device=device), device=device)
    finally:
        torch.random.set_rng_state(state)
    tps = res.stats.get("steady_tokens_per_s") or res.stats.get("tokens_per_s")
    if not tps:
        raise ConfigError("could not time the model for budget.kind=time (no steady steps); raise budget.calib_steps")
    return float(tps)


class Budget:
    """Turns ``budget.*`` into a step count per point (equal tokens, FLOPs or seconds)."""

    def __init__(self, cfg: TrainingConfig, reference: GridPoint, corpus: Corpus, device: str):
        self.cfg, self.reference, self.corpus, self.device = cfg, reference, corpus, device
        self._ref_value: float | None = None

    def value(self) -> float:
        """The per-run budget in its unit (tokens, FLOPs or seconds)."""
        b, tr = self.cfg.budget, self.cfg.train
        if b.kind == "tokens":
            return float(b.tokens or tr.steps * tr.batch_size * tr.seq_len)
        if self._ref_value is None:
            from ablate.model import Transformer

            rt = point_train(self.cfg, self.reference, self.cfg.train.seed)
            if b.kind == "flops":
                self._ref_value = b.flops or flops_per_step(Transformer(self.reference.model), self.reference.model,
                                                            rt) * tr.steps
            else:
                if b.seconds:
                    self._ref_value = b.seconds
                else:
                    tps = _calibrate(self.reference.model, rt, self.corpus, self.device, b.calib_steps)
                    self._ref_value = tr.steps * rt.batch_size * rt.seq_len / tps
        return float(self._ref_value)

    def steps(self, model, mcfg: ModelConfig, tcfg: TrainConfig) -> tuple[int, dict[str, Any]]:
        kind = self.cfg.budget.kind
        per_step_tokens = tcfg.batch_size * tcfg.seq_len
        info: dict[str, Any] = {"budget_kind": kind, "budget_value": self.value()}
        if kind == "tokens":
            steps = int(self.value() // per_step_tokens)
        elif kind == "flops":
            steps = int(self.value() // flops_per_step(model, mcfg, tcfg))
        else:
            tps = _calibrate(mcfg, tcfg, self.corpus, self.device, self.cfg.budget.calib_steps)
            info["calib_tokens_per_s"] = tps
            steps = int(self.value() * tps // per_step_tokens)
        if steps < 1:
            raise ConfigError(f"budget {kind}={self.value():.4g} is less than one training step of this model")
        return steps, info


def unigram_loss(corpus: Corpus, tokens: int) -> float:
    """Loss (nats/token) of the training split's add-one-smoothed unigram distribution on the scored held-out
    targets ``val[1 .. tokens]``: what a model that ignores context reaches. A run near it learned nothing else."""
    import numpy as np

    counts = np.bincount(np.asarray(corpus.train, dtype=np.int64), minlength=corpus.vocab_size).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    tgt = np.asarray(corpus.val[1:tokens + 1], dtype=np.int64)
    return float(-np.log(p[tgt]).mean())


# ---------------------------------------------------------------------------------------------------------------
# One run


def _row_key_fields(point: GridPoint, preset: str, cid: str, seed: int, device: str, corpus: Corpus) -> dict:
    return {"point": point.name, "preset": preset, "config_id": cid, "seed": seed, "device": device,
            "data": corpus.name}


def _describe(point: GridPoint, gid: str, declared: list[dict] | None = None) -> dict[str, Any]:
    d = {k: v for k, v in point.describe().items() if k != "point"}
    d["grid_id"] = gid
    d["grid_points"] = declared or []
    for c in VARIANT_COLUMNS:
        d[c] = getattr(point.model, c)
    return d


def _curve(res) -> dict[str, list]:
    return {"step": [h["step"] + 1 for h in res.history], "tokens": [h["tokens"] for h in res.history],
            "train_loss": [h["train_loss"] for h in res.history],
            "val_step": [e["step"] for e in res.evals if "val_loss" in e],
            "val_loss": [e["val_loss"] for e in res.evals if "val_loss" in e]}


def run_point(cfg: TrainingConfig, point: GridPoint, seed: int, corpus: Corpus, device: str, budget: Budget,
              progress: Any = False, unigram: float | None = None) -> tuple[str, str, dict[str, Any], TrainConfig]:
    """Train and score one grid point with one seed: (status, reason, metrics, the TrainConfig used)."""
    from ablate.model import Transformer
    from ablate.validate import validate_model

    validate_model(point.model, device=device)
    tcfg = point_train(cfg, point, seed)
    torch.manual_seed(seed)  # same initialisation stream per seed for every point
    model = Transformer(point.model).to(device)
    steps, info = budget.steps(model, point.model, tcfg)
    tcfg = replace(tcfg, steps=steps)
    amp = tcfg.amp if device == "cuda" else None
    ev = cfg.eval
    seq = tcfg.seq_len

    def curve_eval(m) -> dict:
        r = evaluate(m, corpus.val, seq, tokens=ev.curve_tokens, batch_tokens=ev.batch_tokens,
                     byte_level=corpus.byte_level, device=device, amp=amp)
        return {"val_loss": r.loss}

    batches = Batches(corpus.train, tcfg.batch_size, seq, seed=seed, device=device)
    res = train(model, tcfg, batches, device=device, loss_fn=lm_loss, eval_fn=curve_eval, progress=progress,
                description=f"{point.name} s{seed}")
    st = res.stats
    fps = flops_per_step(model, point.model, tcfg)
    tps = st.get("steady_tokens_per_s") or st.get("tokens_per_s")
    per_step_tokens = tcfg.batch_size * seq
    tflops = fps / per_step_tokens * tps / 1e12 if tps else None
    peak = peak_tflops() if device == "cuda" else None
    metrics: dict[str, Any] = {
        **info,
        "params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
        "matmul_params": matmul_params(model),
        "steps": res.steps, "steps_planned": steps, "tokens": st.get("tokens"), "tokens_per_step": per_step_tokens,
        "train_loss": st.get("final_train_loss"), "tokens_per_s": tps,
        "step_ms": 1000.0 * per_step_tokens / tps if tps else None,
        "train_s": st.get("elapsed_s"), "first_step_s": st.get("first_step_s"),
        "flops_per_step": fps, "flops": fps * res.steps, "tflops": tflops,
        "mfu": (tflops / peak.tflops) if (peak is not None and peak.tflops and tflops) else None,
        "mfu_peak_tflops": peak.tflops if peak is not None else None,
        "mfu_peak": peak.source if peak is not None else "no peak for CPU (MFU n/a)",
        "peak_mem_bytes": st.get("peak_mem_bytes"), "peak_mem_kind": st.get("peak_mem_kind"),
        "amp": st.get("amp"), "compile": st.get("compile"),
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "diverged_step": res.diverged_step, "curve": _curve(res),
        "world_size": st.get("world_size"), "dist_backend": st.get("dist_backend"),
        "val_loss": None, "val_ppl": None, "val_bpb": None, "eval_tokens": ev.tokens, "eval_s": None,
        "unigram_loss": unigram,
    }
    if not res.ok:
        return "diverged", f"training diverged: {res.reason}", metrics, tcfg
    from ablate import distributed

    if not distributed.current().is_main:  # rank 0 scores the model and writes the row
        return "ok", "", metrics, tcfg
    final = evaluate(model, corpus.val, seq, tokens=ev.tokens, batch_tokens=ev.batch_tokens,
                     byte_level=corpus.byte_level, device=device, amp=amp)
    metrics.update(val_loss=final.loss, val_ppl=final.ppl, val_bpb=corpus.bpb(final.loss, final.tokens),
                   eval_bytes=corpus.scored_bytes(final.tokens), eval_s=final.elapsed_s)
    if not math.isfinite(final.loss):
        return "diverged", "non-finite validation loss after training", metrics, tcfg
    return "ok", "", metrics, tcfg


# ---------------------------------------------------------------------------------------------------------------
# Run


def task_id(point: GridPoint, seed: int) -> str:
    """A grid point x seed as a launcher task: ``"<point>@s<seed>"`` (e.g. ``modern@s0``)."""
    return f"{point.name}@s{seed}"


def _setup(opts):
    """Everything run() and tasks() share: (device, preset, cfg, corpus, points, reference, seeds, results file)."""
    from ablate.runner import resolve_device

    device = resolve_device(opts.device)
    preset = opts.preset or ("gpu" if device == "cuda" else "tiny")
    cfg = resolve(preset, opts.overrides)
    refuse_cpu_amp(cfg.train, opts.overrides, device)
    cfg, corpus = corpus_for(cfg, opts.data)
    seq = cfg.train.seq_len  # the data must hold the evaluation: refused before a plan is written
    check_eval_span(corpus.val, span_needed(max(cfg.eval.tokens, cfg.eval.curve_tokens), seq),
                    f"training-suite evaluation ({cfg.eval.tokens} tokens at {seq})")
    if len(corpus.train) < seq + 1:
        raise ConfigError(f"training split holds {len(corpus.train)} tokens, fewer than seq_len+1 = {seq + 1}")
    points, reference = grid_points(cfg)
    seeds = [cfg.train.seed + i for i in range(int(opts.seeds))]
    check_memory(cfg, points, device)
    return device, preset, cfg, corpus, points, reference, seeds, results_file(opts, device, preset)


def check_memory(cfg: TrainingConfig, points: list[GridPoint], device: str) -> None:
    """Refuse (one line) a grid with a point whose training step or evaluation cannot fit in the device's memory,
    by the closed-form lower bound of :func:`ablate.validate.estimate_memory_bytes`, before any point trains."""
    from ablate.validate import check_fits, estimate_memory_bytes

    half = device == "cuda" and cfg.train.amp is not None
    db = {"dtype_bytes": 2 if half else 4, "param_dtype_bytes": 4}
    for p in points:
        tcfg = point_train(cfg, p, cfg.train.seed)
        check_fits(estimate_memory_bytes(p.model, batch=tcfg.batch_size, seq_len=tcfg.seq_len, training=True, **db),
                   device, what=f"training grid point {p.name}", hint="train.batch_size or model.*")
        check_fits(estimate_memory_bytes(p.model, batch=max(1, cfg.eval.batch_tokens // tcfg.seq_len),
                                         seq_len=tcfg.seq_len, training=False, **db),
                   device, what=f"evaluating grid point {p.name}", hint="eval.batch_tokens")


def tasks(opts):
    """(results file, one :class:`ablate.runner.Task` per grid point x seed, seed-major as run() goes)."""
    from ablate.runner import Task

    device, preset, cfg, corpus, points, _, seeds, out = _setup(opts)
    return out, [Task(task_id(p, s), (row_key(_row_key_fields(p, preset, config_id(cfg, p, corpus), s, device,
                                                              corpus)),), f"{p.name} seed {s}")
                 for s in seeds for p in points]


def run(opts) -> Path:
    """Run the grid as ``opts`` (an :class:`ablate.runner.RunOptions`) asks; returns the JSONL results file.

    Under torchrun (``--nproc-per-node``) every rank calls this: rank 0 decides what to run and writes the rows,
    every grid point trains with DDP on all ranks (:mod:`ablate.distributed`)."""
    from ablate import distributed
    from ablate.runner import select_tasks

    t_start = time.perf_counter()
    device, preset, cfg, corpus, points, reference, seeds, out = _setup(opts)
    dinfo = distributed.init(device)
    if dinfo.enabled:
        distributed.check_batch(cfg.train.batch_size, dinfo.world_size)
        if cfg.budget.kind == "time":
            raise ConfigError("budget.kind=time is calibrated on one device; with --nproc-per-node use "
                              "budget.kind=tokens or flops")
    chosen = select_tasks([task_id(p, s) for s in seeds for p in points], opts.only, "training task")
    writer = ResultWriter(out, SUITE, resume=opts.resume, shard=opts.shard, enabled=dinfo.is_main)
    gid = grid_id(cfg, corpus)
    budget = Budget(cfg, reference, corpus, device)
    unigram = unigram_loss(corpus, cfg.eval.tokens)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    threads_before = torch.get_num_threads()
    if device == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)

    # The grid's declaration, stored in each row: a report can then show points another grid measured.
    declared = [{"point": p.name, "config_id": config_id(cfg, p, corpus), "baseline": p.baseline,
                 "change": p.change, "group": p.group, "point_index": p.index,
                 **{f"axis.{k}": v for k, v in p.settings.items()}} for p in points]

    def key_of(seed: int, point: GridPoint) -> dict:
        return _row_key_fields(point, preset, config_id(cfg, point, corpus), seed, device, corpus)

    # Seed-major: every point once before any point twice, so a time limit still leaves a whole grid.
    jobs = [(seed, p) for seed in seeds for p in points if task_id(p, seed) in chosen]
    # Rank 0's view of what is done decides for every rank (the others must train the same points).
    todo = distributed.broadcast([i for i, (s, p) in enumerate(jobs) if not writer.done(key_of(s, p))], dinfo)
    prog = start_progress(opts.progress and dinfo.is_main)
    overall = prog.add_task("training grid", total=len(jobs), info="") if prog else None
    if prog:
        prog.update(overall, advance=len(jobs) - len(todo))
    ran, left = 0, 0
    claims = Claims(out) if not dinfo.enabled else None  # DDP ranks are one run: rank 0 decides for all
    try:
        for n, i in enumerate(todo):
            seed, point = jobs[i]
            key = key_of(seed, point)
            stop = bool(cfg.time_limit_s and time.perf_counter() - t_start > cfg.time_limit_s)
            if distributed.broadcast(stop, dinfo):
                left = len(todo) - n
                break
            if prog:
                prog.update(overall, info=f"{point.name} seed {seed}")
            tid = task_id(point, seed)
            if claims is not None:  # two runs into one --out: each task is measured by one of them
                if not claims.claim(tid) or (opts.resume and row_key(key) in done_keys(out)):
                    if tid in claims.held:
                        claims.release(tid)
                    if prog:
                        prog.update(overall, advance=1)
                    continue
            desc = {**_describe(point, gid, declared),
                    **{k: v for k, v in corpus.describe().items() if k not in key}}
            run_cfg = {"model": point.model, "train": point_train(cfg, point, seed), "budget": cfg.budget,
                       "grid": cfg.grid, "eval": cfg.eval, "data": cfg.data}
            try:
                try:
                    status, reason, metrics, tcfg = run_point(cfg, point, seed, corpus, device, budget, prog,
                                                              unigram=unigram)
                    run_cfg["train"] = tcfg
                    writer.write(status, key, {**desc, **metrics}, config=run_cfg, reason=reason)
                except Exception as exc:  # unsupported, OOM, a kernel that fails: a row, and the grid goes on
                    if status_from_exception(exc)[0] == "oom" and device == "cuda":
                        torch.cuda.empty_cache()
                    writer.write_exception(exc, key, desc, config=run_cfg)
            finally:
                if claims is not None:
                    claims.release(tid)
            ran += 1
            if device == "cuda":
                torch.cuda.empty_cache()
            if prog:
                prog.update(overall, advance=1)
    finally:
        if claims is not None:
            claims.release_all()
        if prog:
            prog.stop()
        torch.set_num_threads(threads_before)
    if claims is not None and claims.skipped:
        sys.stderr.write(f"ablate: {len(claims.skipped)} task(s) were being run by another process into the same "
                         f"--out and were left to it: " + ", ".join(f"{t} ({who})" for t, who in
                                                                      claims.skipped.items()) + "\n")
    if dinfo.is_main:
        _print_summary(out, gid, time.perf_counter() - t_start, ran, left, cfg.time_limit_s)
    if dinfo.enabled:
        distributed.shutdown()
    return out


def _print_summary(out: Path, gid: str, elapsed: float, ran: int, left: int, limit: float) -> None:
    from rich.console import Console
    from rich.table import Table

    from ablate.results import to_frame

    console = Console(width=None if Console().is_terminal else 140)
    try:
        df = to_frame(out) if out.exists() else None
    except Exception as exc:  # the run itself succeeded; never fail on the print
        console.print(f"[yellow]could not read {out}: {exc}[/]")
        df = None
    if df is not None and "grid_id" in df.columns:
        df = grid_rows(df[df["suite"] == SUITE], gid)
        if not df.empty:
            summ = summary_table(df)
            table = Table(title="training: final validation loss (mean ± 95% CI over seeds)")
            cols = ("variant", "seeds", "val loss", "Δ vs baseline", "params", "tokens/s")
            for c in cols:
                table.add_column(c, justify="left" if c == "variant" else "right", no_wrap=c != "seeds")
            for _, r in summ.iterrows():
                table.add_row(*[_cell(r.get(c)) for c in cols])
            console.print(table)
    console.print(f"trained {ran} run(s) in {elapsed:.1f} s; results: {out}")
    if left:
        console.print(f"[yellow]time_limit_s={limit:g} reached: {left} run(s) left; re-run the same command to "
                      f"resume[/]")


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation (shared by the terminal print and the report)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _col(df, name: str) -> list:
    return df[name].tolist() if name in df.columns else [None] * len(df)


def point_stats(df) -> list[dict[str, Any]]:
    """One dict per grid point (grid order): seeds, statuses, per-seed val losses and the means of the metrics."""
    from ablate.stats import summarize

    if df.empty:
        return []
    d = df.copy()
    d["_order"] = [(_num(v) if _num(v) is not None else 1e9) for v in _col(d, "point_index")]
    out = []
    for name in sorted(d["point"].unique(), key=lambda n: (d[d["point"] == n]["_order"].min(), str(n))):
        g = d[d["point"] == name]
        ok = g[g["status"] == "ok"]
        by_seed = {int(s): _num(v) for s, v in zip(_col(ok, "seed"), _col(ok, "val_loss")) if _num(v) is not None}
        first = g.iloc[0]

        def mean(col: str, frame=ok):
            return summarize([_num(v) for v in _col(frame, col)]).mean

        div = g[g["status"] == "diverged"]
        other = g[~g["status"].isin(["ok", "diverged"])]
        params = [_num(v) for v in _col(g, "params") if _num(v) is not None]
        out.append({
            "point": name, "baseline": first.get("baseline") if isinstance(first.get("baseline"), str) else None,
            "change": first.get("change"), "group": first.get("group"), "n": len(g), "n_ok": len(ok),
            "n_diverged": len(div),
            "diverged_steps": [int(v) for v in _col(div, "diverged_step") if _num(v) is not None],
            "other_status": sorted(set(other["status"])) if len(other) else [],
            "other_reason": (other["reason"].iloc[0] if len(other) else ""),
            "val_by_seed": by_seed, "val": summarize(list(by_seed.values())),
            "bpb": mean("val_bpb"), "ppl": mean("val_ppl"), "params": params[0] if params else None,
            "tokens_per_s": mean("tokens_per_s"), "step_ms": mean("step_ms"), "mfu": mean("mfu"),
            "tokens": mean("tokens"), "steps": mean("steps"),
            "peak_mem_bytes": mean("peak_mem_bytes") if set(_col(ok, "peak_mem_kind")) == {"cuda_max_allocated"}
            else None,
            "mfu_peak": next((v for v in _col(ok, "mfu_peak") if isinstance(v, str)), None),
            "unigram": next((_num(v) for v in _col(g, "unigram_loss") if _num(v) is not None), None),
        })
    for s in out:
        s["stuck"] = _stuck(s)
    return out


STUCK_MARGIN = 0.1  # nats: a final val loss within this of the unigram loss means no context was learned


def _stuck(s: dict) -> bool:
    m, u = s["val"].mean, s["unigram"]
    return m is not None and u is not None and m > u - STUCK_MARGIN


def compare_points(base: dict, other: dict):
    """Δ = other - base as an :class:`ablate.stats.Verdict` (better / worse / equivalent within ±LOSS_MARGIN /
    inconclusive): paired over the seeds both ran when they share >= 2, else Welch over all seeds."""
    from ablate.claims import LOSS_MARGIN
    from ablate.stats import verdict

    a, b = base["val_by_seed"], other["val_by_seed"]
    common = sorted(set(a) & set(b))
    if len(common) >= 2:  # paired on the seeds both ran (same data order and init stream per seed)
        return verdict([a[s] for s in common], [b[s] for s in common], margin=LOSS_MARGIN, paired=True)
    return verdict(list(a.values()), list(b.values()), margin=LOSS_MARGIN)


def _delta_cell(v) -> str:
    """``-0.0312 better`` / ``+0.0021 equivalent (±0.02)`` / ``-0.0100 inconclusive (Δ ≥ 0.041 detectable)``."""
    if v is None or v.delta is None:
        return "—"
    if v.label == "n/a":
        return f"{v.delta:+.4f} (1 seed)"
    if v.label == "equivalent":
        return f"{v.delta:+.4f} equivalent (±{v.margin:g})"
    if v.label == "inconclusive":
        return f"{v.delta:+.4f} inconclusive (Δ ≥ {v.mde:.3f} detectable)" if v.mde is not None and \
            math.isfinite(v.mde) else f"{v.delta:+.4f} inconclusive"
    return f"{v.delta:+.4f} {v.label}" + (f" (within ±{v.margin:g})" if v.within_margin else "")


def summary_table(df):
    """The paper-style table: rows = grid points; val loss ± 95% CI, Δ vs baseline (with its verdict), cost."""
    import pandas as pd

    stats = point_stats(df)
    by_name = {s["point"]: s for s in stats}
    rows = []
    for s in stats:
        base = by_name.get(s["baseline"]) if s["baseline"] else None
        comp = compare_points(base, s) if base else None
        if s["n_ok"] == s["n"]:
            seeds = str(s["n"])
        else:
            notes = []
            if s["n_diverged"]:
                notes.append(f"{s['n_diverged']} diverged" + (f" @ step {', '.join(map(str, s['diverged_steps']))}"
                                                             if s["diverged_steps"] else ""))
            if s["other_status"]:
                notes.append("/".join(s["other_status"]))
            seeds = f"{s['n_ok']}/{s['n']} ({'; '.join(notes)})"
        rows.append({
            "variant": s["point"], "change": s["change"], "seeds": seeds, "val loss": s["val"].fmt(".4f"),
            "Δ vs baseline": _delta_cell(comp), "vs": s["baseline"] or "—",
            "bpb": s["bpb"], "params": int(s["params"]) if s["params"] is not None else None,
            "tokens/s": s["tokens_per_s"],
            "peak mem (MiB)": s["peak_mem_bytes"] / 2 ** 20 if s["peak_mem_bytes"] is not None else None,
            "MFU (%)": 100.0 * s["mfu"] if s["mfu"] is not None else None,
            "note": f"≈ unigram ({s['unigram']:.3f}): no context learned" if s["stuck"] else "",
        })
    df = pd.DataFrame(rows)
    if not df.empty and not df["note"].astype(bool).any():
        df = df.drop(columns=["note"])
    return df


@dataclass(frozen=True)
class Finding:
    """A published finding about one model field: points whose value is ``new`` vs points whose value is ``old``,
    everything else equal. ``kind``: "better" (new reaches a lower loss), "same" (on par within ±LOSS_MARGIN) or
    "not_worse" (better, or on par)."""

    claim: str
    field: str
    new: Any  # the values it is about (a tuple), or a predicate (value, row) -> bool
    old: Any

    @staticmethod
    def matches(which: Any, value: Any, row: Any) -> bool:
        return which(value, row) if callable(which) else value in which
    kind: str
    reference: str
    published: str = ""  # the published numbers


def _is_glu(v: Any, row: Any = None) -> bool:
    from ablate.registry import ACTIVATION, load_all

    load_all()
    return isinstance(v, str) and v in ACTIVATION and ACTIVATION[v].supports_("glu")


def _kv(row: Any) -> tuple[Any, Any]:
    kv = row.get("config.model.n_kv_heads", row.get("n_kv_heads"))
    return (None if _num(kv) is None else int(_num(kv))), _num(row.get("config.model.n_heads"))


FINDINGS: tuple[Finding, ...] = (
    Finding("GLU FFN beats a non-GLU FFN at equal parameters and steps", "activation",
            lambda v, r: _is_glu(v), lambda v, r: isinstance(v, str) and not _is_glu(v), "better",
            "Shazeer 2020 Table 1; Narang et al. 2021",
            "log-ppl ReLU 1.997, GELU 1.983 → SwiGLU 1.944, GEGLU 1.942 (Δ ≈ −0.05); Narang: 1.838 → 1.789"),
    Finding("RMSNorm ≈ LayerNorm quality (slightly better), at lower cost", "norm", ("rmsnorm",), ("layernorm",),
            "not_worse",
            "Narang et al. 2021", "final loss vanilla 1.838 → RMSNorm 1.821"),
    Finding("pre-norm trains at least as well as post-norm (post-norm is fragile)", "norm_placement", ("pre",),
            ("post",), "not_worse",
            "Xiong et al. 2020; Nguyen & Salazar 2019", "no loss table in shared/"),
    Finding("RoPE at least matches sinusoidal positions in-distribution", "position", ("rope",), ("sinusoidal",),
            "not_worse",
            "Su et al. 2021 (RoFormer); ALiBi paper appendix at L=512", "ppl sinusoidal 20.05 vs rotary 20.07"),
    Finding("GQA ≈ MHA quality with a smaller KV cache", "n_kv_heads",
            lambda v, r: _kv(r)[0] is not None and _kv(r)[0] != _kv(r)[1],
            lambda v, r: _kv(r)[0] is None or _kv(r)[0] == _kv(r)[1], "same",
            "Ainslie et al. 2023 Table 1", "MHA 47.2, GQA-8 47.1 (T5-XXL average score)"),
)
# Named comparisons that differ in more than one field: (claim, old point, new point, kind, reference, published).
NAMED_FINDINGS = (
    ("the modern block beats the 2017 block", "original", "modern", "better",
     "Narang et al. 2021 (the changes that transfer)", "vanilla 1.838 → RMSNorm 1.821, SwiGLU 1.789"),
)
_SIGNATURE_SKIP = ("config.train.seed", "config.train.steps", "config.model.vocab_size")


def _signature(row: Any, field_name: str) -> tuple:
    """Everything that defines a point's model and training, except ``field_name`` (and seed/steps)."""
    skip = set(_SIGNATURE_SKIP) | {f"config.model.{field_name}"}
    if field_name == "attention":
        skip.add("config.model.window")
    if field_name == "position":  # grids scale embeddings exactly where positions are sinusoidal: part of the change
        skip.add("config.model.scale_embeddings")
    items = []
    for k in sorted(row.index):
        if (k.startswith("config.model.") or k.startswith("config.train.")) and k not in skip:
            v = row[k]
            v = None if v is None or (isinstance(v, float) and math.isnan(v)) else (tuple(v) if isinstance(v, list)
                                                                                    else v)
            if v is None and k[len("config.model."):] in _ID_OMIT_AT:  # a row from before the field existed
                v = _ID_OMIT_AT[k[len("config.model."):]]
            items.append((k, v))
    return tuple(items)


def _claim_verdict(kind: str, base: dict, other: dict) -> tuple[str, str, str]:
    """(verdict, ours, detail) of a finding on two points' per-seed val losses (paired over common seeds)."""
    from ablate.claims import INCONCLUSIVE, LOSS_MARGIN, better_claim, parity_claim

    a, b = base["val_by_seed"], other["val_by_seed"]
    if not a or not b:
        why = "diverged" if other["n_diverged"] or base["n_diverged"] else "no finished runs"
        return INCONCLUSIVE, "—", why
    if kind == "better":
        return better_claim(b, a, log_scale=False, margin=LOSS_MARGIN)
    return parity_claim(a, b, log_scale=False, margin=LOSS_MARGIN, not_worse=kind == "not_worse")


def finding_pairs(df) -> list[tuple[str, str, str, str, str, str]]:
    """(claim, old point, new point, kind, reference, published) for every pair of points that differ only in a
    finding's field (model and training settings otherwise equal), plus the named comparisons present."""
    firsts = {}
    for name in df["point"].unique():
        g = df[df["point"] == name]
        ok = g[g["status"].isin(["ok", "diverged"])]
        firsts[name] = (ok if len(ok) else g).iloc[0]
    out = []
    for f in FINDINGS:
        for old_name, old_row in firsts.items():
            if not Finding.matches(f.old, old_row.get(f.field), old_row):
                continue
            sig = _signature(old_row, f.field)
            for new_name, new_row in firsts.items():
                if new_name != old_name and Finding.matches(f.new, new_row.get(f.field), new_row) and \
                        _signature(new_row, f.field) == sig:
                    out.append((f.claim, old_name, new_name, f.kind, f.reference, f.published))
    for claim, old_name, new_name, kind, ref, published in NAMED_FINDINGS:
        if old_name in firsts and new_name in firsts:
            out.append((claim, old_name, new_name, kind, ref, published))
    return out


_TESTS = {"better": "lower val loss (paired 95% CI < 0)", "same": "equivalent within ±{m} nats",
          "not_worse": "lower, or equivalent within ±{m} nats"}


def findings_table(df):
    """The published findings, each checked on every pair of points of this grid that isolates its change, with
    a verdict (reproduced / not reproduced / inconclusive) from paired 95% intervals over seeds."""
    import pandas as pd

    from ablate.claims import LOSS_MARGIN

    by_name = {s["point"]: s for s in point_stats(df)}
    rows = []
    for claim, base_name, other_name, kind, ref, published in finding_pairs(df):
        base, other = by_name[base_name], by_name[other_name]
        verdict, ours, detail = _claim_verdict(kind, base, other)
        stuck = [n for n, p in ((base_name, base), (other_name, other)) if p["stuck"]]
        if len(stuck) == 2:
            verdict, detail = "inconclusive", f"both ≈ unigram loss {base['unigram']:.3f}: nothing learned"
        elif stuck:
            detail += f"; {stuck[0]} ≈ unigram"
        rows.append({"published claim": claim, "published": published, "source": ref,
                     "comparison": f"{other_name} vs {base_name}", "ours: Δ val loss (95% CI)": ours,
                     "test": _TESTS[kind].format(m=LOSS_MARGIN), "verdict": verdict, "detail": detail})
    return pd.DataFrame(rows, columns=["published claim", "published", "source", "comparison",
                                       "ours: Δ val loss (95% CI)", "test", "verdict", "detail"])


# ---------------------------------------------------------------------------------------------------------------
# Report


def _mean_curve(g, xcol: str, ycol: str):
    """Mean and 95% t-interval half-width of list-valued curve columns across seeds, on the x values all seeds
    share (half-width 0 with one seed)."""
    import numpy as np

    series = []
    for xs, ys in zip(_col(g, xcol), _col(g, ycol)):
        if isinstance(xs, (list, tuple)) and isinstance(ys, (list, tuple)) and len(xs) == len(ys) and xs:
            series.append({int(x): _num(y) for x, y in zip(xs, ys)})
    if not series:
        return None
    common = sorted(set.intersection(*[set(s) for s in series]))
    if not common:
        return None
    arr = np.array([[s[x] if s[x] is not None else np.nan for x in common] for s in series], dtype=float)
    mean = np.nanmean(arr, axis=0)
    if len(series) > 1:
        from ablate.stats import t_ppf

        half = t_ppf(0.975, len(series) - 1) * np.nanstd(arr, axis=0, ddof=1) / np.sqrt(len(series))
    else:
        half = np.zeros_like(mean)
    return np.array(common), mean, half, len(series)


DESCRIPTIVE = ("baseline", "change", "group", "point_index")


def grid_rows(df, gid: str):
    """The rows of grid ``gid``: its own rows plus rows of the same (point, config_id, device) written by another
    grid (a resumed run skips a point another grid already measured); those take this grid's description."""
    import pandas as pd

    if "grid_id" not in df.columns or "config_id" not in df.columns:
        return df.iloc[0:0]
    own = df[df["grid_id"] == gid]
    if own.empty:
        return own
    declared: dict[str, dict] = {}
    for decl in _col(own, "grid_points"):
        if isinstance(decl, list):
            for d in decl:
                if isinstance(d, dict) and d.get("point") is not None:
                    declared.setdefault(d["point"], d)
    for _, r in own.drop_duplicates("point").iterrows():  # rows written before grid_points existed
        declared.setdefault(r["point"], {"point": r["point"], "config_id": r["config_id"],
                                         **{c: r.get(c) for c in DESCRIPTIVE}})
    ident = pd.DataFrame([{"point": d["point"], "config_id": d.get("config_id")} for d in declared.values()])
    devices = set(own["device"]) if "device" in own.columns else set()
    rest = df[(df["grid_id"] != gid) & (df["device"].isin(devices) if devices else True)]
    other = rest.merge(ident, on=["point", "config_id"], how="inner")
    if other.empty:
        return own
    other = other.copy()
    for c in DESCRIPTIVE:
        if c in own.columns:
            other[c] = other["point"].map(lambda n, c=c: declared[n].get(c))
    for c in sorted({k for d in declared.values() for k in d if k.startswith("axis.")} |
                    {c for c in other.columns if c.startswith("axis.")}):
        other[c] = other["point"].map(lambda n, c=c: declared[n].get(c))
    other["grid_id"] = gid
    return pd.concat([own, other], ignore_index=True)


def _group_dirs(df) -> list[tuple[str, Any]]:
    """(folder name, rows) per (device, preset, grid_id): ``<device>-<preset>``; when one device-preset holds
    several grids, one keeps the plain name -- the default grid (no ``grid.axes``), then the one with most rows, then
    the newest -- and the others get ``-<grid_id[:6]>``."""
    for c in ("device", "preset", "grid_id", "timestamp", "config.grid.axes"):
        if c not in df.columns:
            df = df.assign(**{c: ""})
    groups = [(k, grid_rows(df, k[2])) for k, _ in df.groupby(["device", "preset", "grid_id"], sort=True,
                                                              dropna=False)]
    best: dict[tuple, tuple] = {}
    for (dev, pre, gid), g in groups:
        axes = g["config.grid.axes"].iloc[0]
        rank = (not (isinstance(axes, str) and axes.strip()), len(g), str(g["timestamp"].max()), str(gid))
        if (dev, pre) not in best or rank > best[(dev, pre)]:
            best[(dev, pre)] = rank
    out = []
    for (dev, pre, gid), g in groups:
        name = f"{dev}-{pre}" if (dev or pre) else SUITE
        if str(gid) != best[(dev, pre)][-1]:
            name += f"-{str(gid)[:6]}"
        out.append((name, g))
    return out


def _setup_lines(g) -> list[str]:
    first = g.iloc[0]

    def get(c, default="?"):
        v = first.get(c, default)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    seeds = sorted({int(s) for s in _col(g, "seed") if _num(s) is not None})
    hw = get("env.gpu", None) if get("device") == "cuda" else f"{get('env.cpu')} ({get('env.cpu_count')} CPUs)"
    lines = [
        f"- device: **{get('device')}** — {hw}; torch {get('env.torch')}; git {str(get('env.git_commit'))[:10]}"
        f"{' (dirty)' if get('env.git_dirty', False) is True else ''}",
        f"- preset **{get('preset')}**: d_model {get('config.model.d_model')}, {get('config.model.n_layers')} layers, "
        f"{get('config.model.n_heads')} heads, context {get('config.train.seq_len')}, batch "
        f"{get('config.train.batch_size')}, AdamW lr {get('config.train.lr')} (warm-up {get('config.train.warmup')},"
        f" cosine to {get('config.train.min_lr')}), clip {get('config.train.grad_clip')}, amp "
        f"{get('config.train.amp', None) or 'none (fp32)'}",
        f"- budget: equal **{get('budget_kind')}** per run = {float(get('budget_value', float('nan'))):.4g}"
        f" ({'tokens' if get('budget_kind') == 'tokens' else 'FLOPs' if get('budget_kind') == 'flops' else 's'})",
        f"- data: `{get('data')}` (byte-level vocab {get('config.model.vocab_size')}); validation loss on "
        f"{get('eval_tokens')} held-out tokens, the same for every run",
        f"- seeds: {', '.join(map(str, seeds))} ({len(seeds)}); rows: {len(g)}; grid_id `{get('grid_id')}`",
    ]
    uni = next((_num(v) for v in _col(g, "unigram_loss") if _num(v) is not None), None)
    if uni is not None:
        lines.append(f"- reference: the training split's unigram distribution scores {uni:.4f} nats/token on the "
                     f"same held-out tokens (a run within {STUCK_MARGIN} of it learned no context)")
    return lines


def _si(x: float, _pos: Any = None) -> str:
    """Tick label with an SI suffix: 250000 → 250k, 1.5e7 → 15M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


def report(df, out_dir: Path) -> list[Path]:
    """Per (device, preset, grid): ``training_table`` (.md/.tex), ``training_findings`` (.md/.tex),
    ``training_curves`` and ``training_pareto`` (.png/.svg) and ``index.md`` in ``out_dir/<device>-<preset>/``."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    from ablate.stats import pareto_front
    from ablate.tables import plot_style, savefig, to_markdown, write_table

    out_dir = Path(out_dir)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    if df.empty or "point" not in df.columns:
        return written
    for name, g in _group_dirs(df):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        stats = point_stats(g)
        table = summary_table(g)
        device = str(g["device"].iloc[0]) if "device" in g.columns else "?"
        if device != "cuda":
            table = table.drop(columns=[c for c in ("peak mem (MiB)", "MFU (%)") if c in table.columns])
        md, tex = write_table(table, folder / "training_table",
                              caption="Final validation loss (nats/token; mean ± 95% t-interval over seeds), Δ vs "
                                      "the baseline named in 'vs' with its verdict (better / worse / equivalent "
                                      "within ±0.02 / inconclusive), bits per byte, parameters, training tokens/s.",
                              floatfmt={"bpb": ".4f", "tokens/s": ",.0f", "peak mem (MiB)": ".1f", "MFU (%)": ".1f"})
        written += [md, tex]
        findings = findings_table(g)
        if not findings.empty:
            fmd, ftex = write_table(findings, folder / "training_findings",
                                    caption="Published claims checked on this grid (Δ = val loss difference, "
                                            "negative = the change helps; paired 95% interval in brackets; verdict "
                                            "from that interval and a ±0.02-nat equivalence margin).")
            written += [fmd, ftex]

        names = [s["point"] for s in stats]
        pal = dict(zip(names, sns.color_palette("tab20" if len(names) > 10 else "tab10", n_colors=max(3, len(names)))))
        # Figure 1: validation-loss curves, one panel per baseline family.
        families: list[tuple[str, list[str]]] = []
        baselines = list(dict.fromkeys(s["baseline"] for s in stats if s["baseline"]))
        for b in baselines:
            members = [b] + [s["point"] for s in stats if s["baseline"] == b]
            families.append((b, [m for m in members if m in names]))
        if not families:
            families = [("grid", names)]
        curves_ok = False
        with plot_style():
            fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 3.9), squeeze=False,
                                     sharey=True)
            finals: list[float] = []
            tops: list[float] = []
            for ax, (fam, members) in zip(axes[0], families):
                for m in members:
                    sub = g[(g["point"] == m) & (g["status"].isin(["ok", "diverged"]))]
                    c = _mean_curve(sub, "curve.val_step", "curve.val_loss")
                    if c is None:
                        continue
                    x, mean, std, n = c
                    tps = _num(sub["tokens_per_step"].iloc[0]) if "tokens_per_step" in sub.columns else None
                    xv = x * tps if tps else x
                    lw = 2.2 if m == fam else 1.3
                    ax.plot(xv, mean, color=pal[m], lw=lw, label=m + (f" (n={n})" if n > 1 else ""),
                            ls="-" if m == fam else "-")
                    if n > 1:
                        ax.fill_between(xv, mean - std, mean + std, color=pal[m], alpha=0.18, lw=0)
                    finals.append(float(mean[-1]))
                    tops.append(float(np.nanmax(mean + std)))
                    curves_ok = True
                ax.set_title(f"vs {fam}" if len(families) > 1 else "validation loss", fontsize=10)
                ax.set_xlabel("training tokens")
                ax.xaxis.set_major_formatter(FuncFormatter(_si))
                ax.legend(fontsize=6.5, frameon=False)
            axes[0][0].set_ylabel("validation loss (nats/token)")
            if finals:
                lo, hi = min(finals), max(finals)
                span = max(hi - lo, 0.05)
                axes[0][0].set_ylim(max(0.0, lo - 0.3 * span), min(max(tops) + 0.05, hi + 2.5 * span))
            fig.suptitle("Validation loss during training (mean over seeds; band: 95% CI)", fontsize=10)
            if curves_ok:
                written += list(savefig(fig, folder / "training_curves"))
            else:
                plt.close(fig)

        # Figure 2: quality vs cost, Pareto front (higher tokens/s and lower loss are better).
        pts = [s for s in stats if s["val"].mean is not None and s["tokens_per_s"]]
        if pts:
            xs = [s["tokens_per_s"] for s in pts]
            ys = [s["val"].mean for s in pts]
            front = pareto_front(xs, ys, x_better="high", y_better="low")
            with plot_style():
                fig, ax = plt.subplots(figsize=(6.6, 4.6))
                for s, x, y, f in zip(pts, xs, ys, front):
                    err = s["val"].std
                    ax.errorbar([x], [y], yerr=[[err], [err]] if err else None, fmt="o" if f else "o",
                                ms=7 if f else 5, color=pal[s["point"]], mec="black" if f else "none",
                                mew=1.2 if f else 0, capsize=2, lw=1)
                    ax.annotate(s["point"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6.5)
                fx = sorted((x, y) for x, y, f in zip(xs, ys, front) if f)
                if len(fx) > 1:
                    ax.plot([p[0] for p in fx], [p[1] for p in fx], color="black", lw=1, ls="--",
                            label="Pareto front")
                    ax.legend(fontsize=7, frameon=False)
                ax.set_xlabel("training throughput (tokens/s, higher is better)")
                ax.xaxis.set_major_formatter(FuncFormatter(_si))
                ax.set_ylabel("final validation loss (lower is better)")
                ax.set_title("Quality vs cost (outlined: Pareto-optimal; bars: ±1 std over seeds)", fontsize=10)
                written += list(savefig(fig, folder / "training_pareto"))
            front_names = [s["point"] for s, f in zip(pts, front) if f]
        else:
            front_names = []

        index = ["<!-- ablate:training -->", f"# Training ablations: {name}", "",
                 "Each grid point trains the same small byte-level LM from scratch under the same budget and data "
                 "order per seed, then is scored on the same held-out tokens. Rows compare against the point named "
                 "in *vs*: `original+X` adds one modern change to the 2017 block, `modern-X→Y` removes one from "
                 "today's block.", "", "## Setup", "", *_setup_lines(g), "",
                 "## Results", "", md.read_text(encoding="utf-8"), ""]
        if device != "cuda":
            index += ["Peak memory and MFU are reported on CUDA only (on CPU the process RSS high-water mark is not "
                      "per run, and there is no meaningful peak FLOP/s).", ""]
        else:
            peak = next((s["mfu_peak"] for s in stats if s["mfu_peak"]), None)
            index += [f"MFU uses the peak: {peak}.", ""]
        stuck_base = [s["point"] for s in stats if s["stuck"] and any(o["baseline"] == s["point"] for o in stats)]
        if stuck_base:
            index += [f"**Caution:** the baseline(s) {', '.join(f'`{n}`' for n in stuck_base)} learned no context "
                      "(final loss ≈ the unigram loss): a Δ against it says whether the change lets the model train "
                      "at all under this budget, not how much the change improves a model that trains.", ""]
        from ablate.claims import LOSS_MARGIN

        index += [f"Δ vs baseline: *better* / *worse* when its 95% t-interval (paired over seeds when both ran the "
                  f"same seeds, else Welch) excludes 0; *equivalent* when the two one-sided tests put it inside "
                  f"±{LOSS_MARGIN:g} nats (90% interval); otherwise *inconclusive*, with the smallest Δ these seeds "
                  f"could detect (two-sided 5%, power 80%). With one seed no test is made.", ""]
        if curves_ok:
            index += ["## Loss curves", "", "![validation loss curves](training_curves.png)", ""]
        if pts:
            index += ["## Quality vs cost", "", f"Pareto-optimal (throughput vs loss): {', '.join(front_names)}.", "",
                      "![quality vs cost](training_pareto.png)", ""]
        if not findings.empty:
            counts = findings["verdict"].value_counts()
            tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "not reproduced",
                                                                         "inconclusive"))
            index += ["## Published claims vs this run", "", f"{tally} (of {len(findings)} comparisons).", "",
                      to_markdown(findings), ""]
        index += ["## Files", "", "`training_table.md` / `.tex`, `training_findings.md` / `.tex`, "
                  "`training_curves.png` / `.svg`, `training_pareto.png` / `.svg`; the rows are in the results JSONL "
                  "(curves as lists in `curve.*`).", ""]
        idx = folder / "index.md"
        tmp = idx.with_name(f".{idx.name}.tmp")
        tmp.write_text("\n".join(index).rstrip() + "\n", encoding="utf-8")
        tmp.replace(idx)
        written.append(idx)
    return written


__all__ = ["SUITE", "BUDGET_KINDS", "BudgetSettings", "EvalSettings", "DataSettings", "TrainingConfig", "PRESETS",
           "resolve", "grid_points", "grid_id", "config_id", "results_file", "flops_per_step", "Budget", "run_point",
           "run", "report", "point_stats", "compare_points", "summary_table", "findings_table", "finding_pairs",
           "FINDINGS", "grid_rows", "unigram_loss"]
