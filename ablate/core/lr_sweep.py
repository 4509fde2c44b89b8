"""A learning rate chosen per variant: a short sweep of log-spaced candidates, scored on held-out *tune* documents.

One shared learning rate favours whichever variant it happens to suit; a variant compared at a rate far from its own
optimum loses for a reason that is not the variant. :func:`sweep` trains the model once per candidate rate for a
fraction of the run's steps (the same warm-up + cosine schedule compressed to that length, the same seed and data
order), scores each on the **tune** documents of :mod:`ablate.core.evalset` (``role="tune"``: never a document the test
set scores, so the choice is not fitted to the reported loss) and returns the rate with the lowest tune loss::

    from ablate.core.lr_sweep import SweepSettings, sweep, sweep_jobs, tune_set

    s = SweepSettings(points=3, spacing=2.0, fraction=0.25, tokens=16384)
    s.candidates(3e-3)                 # (1.5e-3, 3e-3, 6e-3): train.lr x spacing^k, centred on it
    res = sweep(model_cfg, train_cfg, corpus, s, test_tokens=eval_tokens, device="cpu", cache=path)
    res.lr, res.min_lr                 # the chosen rate (min_lr scaled with it: min_lr / lr kept)
    res.losses                         # {candidate: tune loss in nats/token, None where it diverged}
    res.as_row()                       # {"lr": ..., "lrs": [...], "losses": [...], "steps": ..., ...} for a row
    sweep_jobs(model_cfg, train_cfg, s)   # the sweep's training runs as ablate.plan.estimate.TrainJob (--dry-run)

* **Candidates** (:meth:`SweepSettings.candidates`): ``points`` rates, ``spacing`` apart on a log scale, centred on
  the configured ``train.lr``. ``points=0`` turns the sweep off.
* **Budget**: each candidate trains ``max(1, round(fraction * steps))`` steps, warm-up scaled by the same fraction.
  Short runs favour larger rates a little (they have less time to profit from a small one); the report shows every
  candidate's loss and flags a choice at the edge of the candidates (``at_edge``: the optimum may lie outside).
* **Choice**: the lowest finite tune loss; a candidate whose loss goes non-finite is out. When every candidate
  diverges the configured rate is kept (``chosen_by="fallback"``).
* **Cache** (``cache=``, a JSON file; the suites keep it beside the results file): keyed by everything that shapes
  the sweep (model, training settings except the rate, candidates, budget, tune set, device type), so a resumed run
  or a second seed reuses the choice instead of sweeping again.
* **Tune set**: :func:`tune_set` draws ``tokens`` targets with ``role="tune"`` and ``reserve=test_tokens``, so the
  split must hold both sets without sharing a document (a one-line error otherwise).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ablate.store.atomic import write_text
from ablate.core.config import ModelConfig, flatten
from ablate.core.ranges import NONNEG, ONE_PLUS, between, gt
from ablate.io.data import Batches
from ablate.errors import ConfigError
from ablate.plan.estimate import SWEEP_LABEL, EvalWork, TrainJob
from ablate.core.evalset import EvalSet, draw
from ablate.store.results import row_key
from ablate.core.train import TrainConfig, lm_loss, train

__all__ = ["SweepSettings", "SweepResult", "sweep", "sweep_jobs", "sweep_steps", "tune_set", "cache_key"]


@dataclass(frozen=True)
class SweepSettings:
    """The ``lr_sweep.*`` settings of a suite."""

    points: int = field(default=0, metadata={"range": NONNEG})  # candidate rates; 0 = no sweep, else >= 2
    spacing: float = field(default=2.0, metadata={"range": gt(1)})  # ratio between neighbouring candidates
    fraction: float = field(default=0.25, metadata={"range": between(0, 1, lo_open=True)})  # of the run's steps
    tokens: int = field(default=16384, metadata={"range": ONE_PLUS})  # tune targets scored per candidate

    @property
    def enabled(self) -> bool:
        return self.points > 0

    def check(self) -> None:
        """One-line errors for settings that cannot sweep."""
        if self.points < 0 or self.points == 1:
            raise ConfigError(f"lr_sweep.points must be 0 (no sweep) or >= 2 candidates, got {self.points}")
        if not self.spacing > 1.0 or not math.isfinite(self.spacing):
            raise ConfigError(f"lr_sweep.spacing is the ratio between neighbouring rates and must be > 1, got "
                              f"{self.spacing}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"lr_sweep.fraction must be in (0, 1], got {self.fraction}")
        if self.tokens < 1:
            raise ConfigError(f"lr_sweep.tokens must be >= 1, got {self.tokens}")

    def candidates(self, lr: float) -> tuple[float, ...]:
        """``points`` rates ``lr * spacing ** (k - (points - 1) / 2)``, ascending (rounded to 4 significant
        digits, so they print and hash as written)."""
        mid = (self.points - 1) / 2.0
        return tuple(float(f"{lr * self.spacing ** (k - mid):.4g}") for k in range(self.points))


@dataclass(frozen=True)
class SweepResult:
    lr: float  # the chosen rate
    min_lr: float  # the floor of its cosine schedule (the configured min_lr / lr ratio kept)
    losses: dict[float, float | None]  # candidate -> tune loss (nats/token); None: diverged
    steps: int  # steps each candidate trained
    tune_set: str  # hash of the tune documents (ablate.core.evalset)
    tune_tokens: int
    chosen_by: str  # "tune loss" | "fallback" (every candidate diverged)
    at_edge: bool  # the chosen rate is the smallest or largest candidate
    seconds: float = 0.0  # wall time of the sweep (0 when it came from the cache)
    cached: bool = False

    def as_row(self) -> dict[str, Any]:
        """The sweep as one nested row field (``lr_sweep.lr``, ``lr_sweep.lrs``, ``lr_sweep.losses``, ...)."""
        return {"lr": self.lr, "min_lr": self.min_lr, "lrs": list(self.losses),
                "losses": [None if v is None else round(v, 5) for v in self.losses.values()], "steps": self.steps,
                "tune_set": self.tune_set, "tune_tokens": self.tune_tokens, "chosen_by": self.chosen_by,
                "at_edge": self.at_edge, "seconds": round(self.seconds, 2), "cached": self.cached}


def sweep_steps(steps: int, settings: SweepSettings) -> int:
    """Steps each candidate trains: ``fraction`` of the run's."""
    return max(1, int(round(settings.fraction * steps)))


def _short(tcfg: TrainConfig, settings: SweepSettings, lr: float) -> TrainConfig:
    """The run's schedule compressed to the sweep's length, at rate ``lr`` (min_lr / lr kept)."""
    steps = sweep_steps(tcfg.steps, settings)
    warmup = min(steps - 1, int(round(tcfg.warmup * settings.fraction))) if tcfg.warmup else 0
    return replace(tcfg, steps=steps, warmup=max(0, warmup), lr=lr, min_lr=tcfg.min_lr * lr / tcfg.lr,
                   eval_every=0, log_every=max(1, min(tcfg.log_every or steps, steps)))


def tune_set(corpus, settings: SweepSettings, *, test_tokens: int, seed: int = 0,
             max_doc_tokens: int | None = None) -> EvalSet:
    """The tune documents (:func:`ablate.core.evalset.draw`, ``role="tune"``), disjoint from a test set of
    ``test_tokens`` targets drawn with the same ``seed``."""
    return draw(corpus, settings.tokens, role="tune", reserve=test_tokens, seed=seed, max_doc_tokens=max_doc_tokens)


def cache_key(model: ModelConfig, tcfg: TrainConfig, settings: SweepSettings, tune: EvalSet, corpus,
              device: str) -> str:
    """What a sweep's result depends on, hashed (the rate itself excluded: the sweep chooses it)."""
    tr = {k: v for k, v in flatten(tcfg).items() if k not in ("lr", "min_lr", "log_every", "eval_every")}
    return row_key({"model": flatten(model), "train": tr, "min_lr_ratio": tcfg.min_lr / tcfg.lr,
                    "candidates": list(settings.candidates(tcfg.lr)), "sweep": asdict(settings),
                    "tune_set": tune.hash, "corpus": getattr(corpus, "hash", None) or getattr(corpus, "name", ""),
                    "device": str(device).split(":")[0]})


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _from_cache(entry: dict[str, Any]) -> SweepResult:
    losses = {float(a): (None if b is None else float(b)) for a, b in zip(entry["lrs"], entry["losses"])}
    return SweepResult(float(entry["lr"]), float(entry["min_lr"]), losses, int(entry["steps"]), entry["tune_set"],
                       int(entry["tune_tokens"]), entry["chosen_by"], bool(entry["at_edge"]), 0.0, True)


def sweep(model: ModelConfig, tcfg: TrainConfig, corpus, settings: SweepSettings, *, test_tokens: int,
          device: str = "cpu", cache: str | Path | None = None, tune: EvalSet | None = None,
          batch_tokens: int = 16384, progress: Any = False, label: str = "") -> SweepResult:
    """Train ``model`` (a fresh one per candidate, initialised by ``torch.manual_seed(tcfg.seed)``, batches
    ``Batches(corpus.train, ..., seed=tcfg.seed)``) at each of ``settings.candidates(tcfg.lr)`` for
    :func:`sweep_steps` steps, score it on ``tune`` (default :func:`tune_set` with ``test_tokens`` reserved for the
    test role) at ``tcfg.seq_len``, and return the choice (see the module docstring). ``cache``: a JSON file read
    before and updated after sweeping."""
    from ablate.core.evaluate import evaluate
    from ablate.core.model import Transformer

    settings.check()
    if not settings.enabled:
        raise ConfigError("lr_sweep.points=0: no sweep to run")
    tune = tune if tune is not None else tune_set(corpus, settings, test_tokens=test_tokens)
    key = cache_key(model, tcfg, settings, tune, corpus, device)
    store = _read_cache(Path(cache) if cache else None)
    if key in store:
        return _from_cache(store[key])
    amp = tcfg.amp if str(device).startswith("cuda") else None
    losses: dict[float, float | None] = {}
    state = torch.random.get_rng_state()
    seconds = 0.0
    try:
        for lr in settings.candidates(tcfg.lr):
            short = _short(tcfg, settings, lr)
            torch.manual_seed(tcfg.seed)
            m = Transformer(model).to(device)
            res = train(m, short, Batches(corpus.train, short.batch_size, short.seq_len, seed=tcfg.seed,
                                          device=device), device=device, loss_fn=lm_loss, progress=progress,
                        description=f"{label} lr {lr:g}".strip())
            seconds += float(res.stats.get("elapsed_s") or 0.0)
            loss = None
            if res.ok:
                ev = evaluate(m, tune.stream, short.seq_len, tokens=tune.tokens, batch_tokens=batch_tokens,
                              byte_level=corpus.byte_level, device=device, amp=amp)
                seconds += ev.elapsed_s
                loss = ev.loss if math.isfinite(ev.loss) else None
            losses[lr] = loss
            del m
    finally:
        torch.random.set_rng_state(state)
    finite = {lr: v for lr, v in losses.items() if v is not None}
    if finite:
        lr, chosen_by = min(finite, key=lambda a: (finite[a], a)), "tune loss"
    else:
        lr, chosen_by = tcfg.lr, "fallback"
    cands = list(losses)
    min_lr = float(f"{tcfg.min_lr * lr / tcfg.lr:.4g}")
    at_edge = chosen_by == "tune loss" and lr in (cands[0], cands[-1])
    result = SweepResult(lr, min_lr, losses, sweep_steps(tcfg.steps, settings), tune.hash, tune.tokens, chosen_by,
                         at_edge, seconds)
    if cache:
        store = _read_cache(Path(cache))  # re-read: another process may have added its own sweeps meanwhile
        store[key] = result.as_row()
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        write_text(Path(cache), json.dumps(store, indent=1, sort_keys=True) + "\n")
    return result


def sweep_jobs(model: ModelConfig, tcfg: TrainConfig, settings: SweepSettings,
               label: str = "") -> tuple[list[TrainJob], list[EvalWork]]:
    """The sweep's training runs and tune-set forwards, for :func:`ablate.plan.estimate.estimate_lines` (empty when the
    sweep is off). ``tcfg.steps``: the run's steps (the sweep trains a fraction of them per candidate)."""
    if not settings.enabled:
        return [], []
    steps = sweep_steps(tcfg.steps, settings)
    jobs = [TrainJob(model, tcfg.batch_size, tcfg.seq_len, steps, f"{SWEEP_LABEL}{label}:{lr:g}")
            for lr in settings.candidates(tcfg.lr)]
    return jobs, [EvalWork(model, tcfg.seq_len, settings.tokens) for _ in jobs]
