"""What a planned run costs before it runs: its FLOPs (counted as the suites count them, :func:`ablate.core.flops.step_flops`)
and its time at a *measured* throughput -- the FLOP/s that earlier rows of the same device achieved (training rows'
``flops / train_s``, the latency suite's training-step ``tflops``), never a data-sheet peak.

    ablate run --suite extrapolation --preset small --dry-run     # prints the estimate under the plan
    python -m ablate.plan.estimate extrapolation paper --device cuda --gpu "H100"   # GPU-hours of the paper rung

A suite lists what it trains as :class:`TrainJob` (its ``train_jobs(cfg, seeds)``); evaluation forward passes are
added as :class:`EvalWork` where the suite scores long windows (extrapolation).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ablate.core.config import ModelConfig
from ablate.core.attention_cost import attention_fwd_flops
from ablate.core.flops import matmul_params, step_flops
from ablate.core.model import Transformer

__all__ = ["TrainJob", "EvalWork", "SWEEP_LABEL", "FINETUNE_LABEL", "Rate", "model_matmul_params", "planned_vocab", "job_flops", "eval_flops", "measured_rate",
           "measured_where", "ok_rows",
           "estimate_lines", "format_duration"]


@dataclass(frozen=True)
class TrainJob:
    """One model trained: ``steps`` steps of ``batch`` × ``seq_len`` tokens."""

    model: ModelConfig
    batch: int
    seq_len: int
    steps: int
    label: str = ""


SWEEP_LABEL = "lr_sweep:"  # TrainJob labels of a learning-rate sweep's runs (ablate.core.lr_sweep), counted apart
FINETUNE_LABEL = "ft-"  # TrainJob labels of fine-tuning runs (the extrapolation suite's RoPE-scaling stage)


@dataclass(frozen=True)
class EvalWork:
    """Forward passes scoring ``tokens`` tokens in windows of ``seq_len`` with ``model``."""

    model: ModelConfig
    seq_len: int
    tokens: int


@dataclass(frozen=True)
class Rate:
    """A measured throughput: FLOP/s and where it was measured."""

    flops_per_s: float
    source: str


_PARAMS: dict[tuple, int] = {}


def model_matmul_params(model: ModelConfig) -> int:
    """:func:`ablate.core.flops.matmul_params` of ``model``, built on the meta device (no memory, any size)."""
    key = tuple(sorted(vars(model).items()))
    if key not in _PARAMS:
        with torch.device("meta"):
            _PARAMS[key] = matmul_params(Transformer(model))
    return _PARAMS[key]


def planned_vocab(model: ModelConfig, tokenizer: str | None) -> ModelConfig:
    """``model`` with the vocabulary a ``bpe:N`` tokenizer will give it (the corpus is not loaded to plan; a
    tokenizer.json file or bytes leave the preset's size)."""
    from ablate.io.tokenize import parse

    kind, n = parse(tokenizer)
    return replace(model, vocab_size=int(n)) if kind == "bpe" else model


def job_flops(job: TrainJob) -> float:
    """Training FLOPs of the whole job (forward + backward, the suites' count)."""
    return step_flops(model_matmul_params(job.model), job.model, job.batch, job.seq_len)[0] * job.steps


def eval_flops(work: EvalWork) -> float:
    """Forward FLOPs of scoring ``work.tokens`` tokens in windows of ``work.seq_len``: ``2·N`` per token plus
    softmax attention (FlashAttention convention) per window."""
    m = work.model
    windows = max(1, math.ceil(work.tokens / work.seq_len))
    attn = attention_fwd_flops(1, m.n_heads, work.seq_len, work.seq_len, m.head_dim, causal=m.causal,
                               window=m.window) * m.n_layers
    return 2.0 * model_matmul_params(m) * work.tokens + attn * windows


def ok_rows(paths: Iterable[Path], pattern: str = "*.jsonl") -> Iterable[dict[str, Any]]:
    """The ``ok`` rows of the results files under ``paths`` (folders searched for ``pattern``), leniently: a line
    or file that cannot be read is passed over (an estimate, not a check)."""
    for p in paths:
        files = sorted(p.rglob(pattern)) if p.is_dir() else [p] if p.is_file() else []
        for f in files:
            try:
                with open(f, encoding="utf-8") as fh:
                    for line in fh:
                        try:
                            r = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(r, dict) and r.get("status") == "ok":
                            yield r
            except OSError:
                continue


def measured_where(out: str | Path) -> list[Path]:
    """Where a dry run looks for earlier rows of this machine: ``results/`` of the checkout, and ``--out``."""
    from ablate.store.env import source_root

    return [p for p in ((source_root() or Path(".")) / "results", Path(out)) if p.exists()]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def measured_rate(device: str, *, where: Sequence[Path] = (Path("results"),), gpu: str | None = None,
                  cpu: str | None = None) -> Rate | None:
    """The median training FLOP/s that ok rows under ``where`` measured on this kind of machine: on ``cuda`` the
    rows whose ``env.gpu`` contains ``gpu`` (training rows' ``flops / train_s``, extrapolation rows'
    ``train_flops / train_s``, latency training-step rows' ``tflops``); on ``cpu`` training and extrapolation rows
    whose ``env.cpu`` equals ``cpu``. None when nothing matches."""
    rates: list[float] = []
    files: set[str] = set()
    threads_seen: set[Any] = set()
    for r in ok_rows(where):
        if str(r.get("device", "")).split(":")[0] != device:
            continue
        if device == "cuda":
            if not gpu or gpu.lower() not in str(r.get("env.gpu", "")).lower():
                continue
        elif cpu and r.get("env.cpu") != cpu:
            continue
        flops, secs, tf = _num(r.get("flops")), _num(r.get("train_s")), _num(r.get("tflops"))
        if r.get("suite") == "training" and flops and secs:
            rates.append(flops / secs)
        elif r.get("suite") == "extrapolation" and _num(r.get("train_flops")) and secs:
            rates.append(_num(r.get("train_flops")) / secs)  # one value per trained model's row, as it was run
        elif r.get("suite") == "latency" and r.get("choice") is not None and tf:
            rates.append(tf * 1e12)
        else:
            continue
        files.add(str(r.get("suite")))
        threads_seen.add(r.get("threads") or r.get("env.threads"))
    if not rates:
        return None
    where_s = ", ".join(str(w) for w in where)
    threads = sorted(str(t) for t in threads_seen if t)
    at = f", at {'/'.join(threads)} torch thread(s)" if device == "cpu" and threads else ""
    return Rate(statistics.median(rates), f"median of {len(rates)} measured {'/'.join(sorted(files))} rows "
                                          f"under {where_s}{at}")


def _count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f}"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_lines(jobs: Sequence[TrainJob], evals: Sequence[EvalWork] = (), rate: Rate | None = None,
                   *, device: str = "cpu") -> list[str]:
    """What a dry run prints: models, tokens, FLOPs and, at a measured rate, the time (GPU-hours on cuda)."""
    if not jobs:
        return ["estimate: nothing to train"]
    train = sum(job_flops(j) for j in jobs)
    ev = sum(eval_flops(w) for w in evals)
    tokens = sum(j.batch * j.seq_len * j.steps for j in jobs)
    params = sorted({model_matmul_params(j.model) for j in jobs})
    p = (f"{params[0] / 1e6:.2f} M" if len(params) == 1 else f"{params[0] / 1e6:.2f}-{params[-1] / 1e6:.2f} M")
    runs = [j for j in jobs if not j.label.startswith((SWEEP_LABEL, FINETUNE_LABEL))]
    sweep = [j for j in jobs if j.label.startswith(SWEEP_LABEL)]
    tuned = [j for j in jobs if j.label.startswith(FINETUNE_LABEL)]
    per_run = sum(j.batch * j.seq_len * j.steps for j in runs) / max(1, len(runs))
    lines = [f"estimate: {len(runs)} model(s) of {p} matmul parameters, {_count(per_run)} training "
             f"tokens each ({per_run / params[-1]:.2g} tokens per parameter); "
             f"{train:.3g} training FLOPs" + (f" + {ev:.3g} evaluation FLOPs (forward)" if ev else "")]
    if sweep:
        sf = sum(job_flops(j) for j in sweep)
        lines.append(f"estimate: of which the learning-rate sweep: {len(sweep)} short run(s), {sf:.3g} training "
                     f"FLOPs ({100 * sf / train:.0f}% of training)")
    if tuned:
        tf = sum(job_flops(j) for j in tuned)
        lines.append(f"estimate: of which fine-tuning: {len(tuned)} run(s) of {_count(tuned[0].steps)} steps x "
                     f"{tuned[0].batch} x {tuned[0].seq_len} tokens, {tf:.3g} training FLOPs "
                     f"({100 * tf / train:.0f}% of training)")
    if rate is None:
        lines.append(f"estimate: no measured throughput for this {device} under results/ -- time unknown "
                     "(run a preset once; its rows give the rate)")
        return lines
    secs = (train + ev) / rate.flops_per_s
    what = f"{secs / 3600:.3g} GPU-hours" if device == "cuda" and secs >= 360 else format_duration(secs)
    lines.append(f"estimate: {what} at {rate.flops_per_s / 1e12:.3g} TFLOP/s ({rate.source})"
                 if rate.flops_per_s >= 1e12 else
                 f"estimate: {what} at {rate.flops_per_s / 1e9:.3g} GFLOP/s ({rate.source})")
    return lines


def _main(argv: Sequence[str]) -> int:

    from ablate.store.env import fingerprint
    from ablate.errors import AblateError

    ap = argparse.ArgumentParser(prog="python -m ablate.plan.estimate", description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", choices=("extrapolation", "training"))
    ap.add_argument("preset")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--gpu", default=None, help="GPU name to take measured rows of (substring of env.gpu)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--results", action="append", default=None, help="where measured rows are (default results/)")
    a = ap.parse_args(argv)
    try:
        mod = importlib.import_module(f"ablate.suites.{a.suite}")
        cfg = mod.resolve(a.preset, a.overrides)
        jobs, evals = mod.train_jobs(cfg, list(range(a.seeds)))
        rate = measured_rate(a.device, where=[Path(p) for p in (a.results or ["results"])], gpu=a.gpu,
                             cpu=fingerprint().get("cpu") if a.device == "cpu" else None)
    except AblateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in estimate_lines(jobs, evals, rate, device=a.device):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
