#!/usr/bin/env python
"""GPU evidence in one command: on a CUDA machine, run the GPU measurements in priority order under one time budget,
and leave everything measured under ``results/`` and ``reports/``, ready to commit (docs/gpu.md).

    python scripts/gpu_evidence.py --dry-run                  # CPU: the plan, its time estimate, what it writes
    env $(python scripts/stamp_commit.py) python scripts/gpu_evidence.py               # on the GPU, 10 min
    python scripts/gpu_evidence.py --budget 25m --no-reports --export "$OUT"          # a lent machine

Steps, most important first (``--steps`` picks some):

1. ``latency``: ``ablate run --suite latency --preset gpu`` with its provenance (commit, clean tree);
2. ``overhead``: each key's harness figure vs a bare ``do_bench`` of the package's own call (FA4, SDPA under each
   forced backend, flex), hd128, n = 2k and 16k, fwd and bwd (``scripts/bench_overhead.py``'s two figures);
3. ``train``: the d=1024, 8-layer, T=2048 bf16 step, eager and compiled, with MFU (the latency suite's train part);
4. ``decode``: 1k-32k on the static cache, eager and CUDA graphs, achieved GB/s vs peak (the decode part);
5. ``repeat``: the preset again in another process, ``ablate calibrate`` of the two with a planted 5% slowdown;
6. ``rung-<suite>``: the ``gpu`` preset of extrapolation, training and recall (when present), estimate first.

Every step is a list of commands (``--dry-run`` prints them). Its estimate comes from earlier rows of the same GPU
in ``results/latency/*.jsonl`` (per-part wall time of the latest run, timing settings adjusted, capped by the preset's
budgets) and, for the rungs, from ``ablate.plan.estimate``. A step that does not fit the time left is skipped with
the reason; a latency run that partly fits runs under ``--set budget_s`` (the suite writes ``skipped`` rows for
the rest). Work happens in ``runs/gpu-evidence/<machine>/`` (its ``ledger.json`` records each step); a step
whose outputs are complete is not run again, so an interrupted run resumes (the suites resume by row key too).
Published: the latency rows to ``results/latency/gpu-<machine>.jsonl`` (a file of their own), the nightly baseline and its noise calibration to ``results/baselines/<machine>/``, the overhead
rows and the repeat to ``results/gpu-evidence/<machine>/``, the rungs to ``results/<suite>/cuda-gpu.jsonl``, the
reports regenerated, and the summary of every figure to ``reports/gpu-evidence/<machine>/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/gpu_evidence.py"
PY = "python"  # shown in plans; the running interpreter when executed
ABLATE = [PY, "-m", "ablate.cli"]

DEFAULT_BUDGET_S = 600.0
# Allowances (seconds) where no earlier row says: a process's start (interpreter, torch, CUDA context) before its
# first row, publishing rows (CPU), the final summary, regenerating the touched reports (CPU, figures).
START_S = 25.0
PUBLISH_S = 5.0
SUMMARY_S = 10.0
REPORT_S = 60.0
CALIBRATE_S = 15.0
COMPILE_TRAIN_S = 90.0  # torch.compile of the d=1024 8-layer step (forward and backward), when no row measured it
PARTIAL_MIN_S = 120.0  # a latency run is started under a cut budget only with at least this long
GAP_MAX_S = 300.0  # a gap between rows of one run longer than this is a pause (a resume), not measuring
COMBO_FALLBACK_S = 10.0  # one overhead round of a key and shape without an earlier row
GRACE_S = 20.0  # a command stopped at the budget: SIGINT, SIGTERM, SIGKILL, this far apart

OVERHEAD_KEYS = ("flash_attn", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "flex")
OVERHEAD_SEQ_LENS = (2048, 16384)
OVERHEAD_PASSES = ("fwd", "bwd")
OVERHEAD_HEAD_DIM, OVERHEAD_HIDDEN, OVERHEAD_TOKENS = 128, 2048, 16384
OVERHEAD_TOLERANCE = 0.03
CALIBRATE_FAIL_IF = "time_ms:3%"  # below the planted 5%, so the plant can be caught
PLANT_PERCENT = 5.0
RUNG_SUITES = ("extrapolation", "training", "recall")
STEP_NAMES = ("latency", "overhead", "train", "decode", "repeat", *(f"rung-{s}" for s in RUNG_SUITES))


class UserError(Exception):
    """A bad option or a machine that cannot run: one line, exit 2."""


# ---------------------------------------------------------------------------------------------------------------
# Steps and the plan


@dataclass
class Command:
    argv: list[str]
    ok_rcs: tuple[int, ...] = (0,)  # ablate run exits 1 when a row is `error`: measured, and said in the rows
    budgeted: bool = False  # a latency run: gets --set budget_s=<slot> when the step runs partly

    def with_slot(self, slot: float | None) -> list[str]:
        return self.argv + (["--set", f"budget_s={int(slot)}"] if self.budgeted and slot is not None else [])


@dataclass
class Step:
    name: str
    title: str
    commands: list[Command]
    outputs: list[str]  # relative to the root; all must exist for the step to count as complete
    estimate_s: float | None
    source: str  # where the estimate comes from
    needs: tuple[str, ...] = ()
    partial_ok: bool = False
    # (step, seconds): this step resumes into that step's results, whose part budget already covers that much of
    # this step's ``work_s``; when that step runs (or ran) in full, only the rest is left
    covered: tuple[str, float] | None = None
    work_s: float = 0.0


@dataclass
class Decision:
    step: Step
    kind: str  # run | partial | done | skip
    estimate_s: float | None
    slot_s: float | None = None  # the budget_s a partial latency run gets
    reason: str = ""


@dataclass
class Context:
    root: Path
    gpu: str
    slug: str
    budget_s: float = DEFAULT_BUDGET_S
    reports: bool = True
    rounds: int = 3
    rows: list[dict[str, Any]] = field(default_factory=list)  # earlier latency rows of this GPU
    steps: tuple[str, ...] = STEP_NAMES
    device: str = "cuda"  # cpu and preset micro: a rehearsal of the glue (--rehearse)
    preset: str = "gpu"
    overhead_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The results file name every suite writes for this device and preset."""
        return f"{self.device}-{self.preset}.jsonl"

    @property
    def script(self) -> str:
        return SCRIPT if self.root.resolve() == ROOT else str(ROOT / SCRIPT)

    @property
    def tag(self) -> list[str]:
        """What the sub-commands need to find this machine's files."""
        return ["--gpu", self.gpu] + (["--device", self.device, "--preset", self.preset]
                                      if (self.device, self.preset) != ("cuda", "gpu") else [])

    def run_argv(self, suite: str = "latency") -> list[str]:
        return [*ABLATE, "run", "--suite", suite, "--preset", self.preset, "--device", self.device, "--no-summary",
                "--no-progress"]

    @property
    def work(self) -> str:
        return f"runs/gpu-evidence/{self.slug}"

    @property
    def latency_target(self) -> str:
        """Where this machine's latency rows are published: a file of their own, never appended to an earlier run of
        another host (the reports keep the newest row per measurement *and* machine, hostname included, so two
        hosts' runs in one file would show every measurement twice); its report is ``reports/latency/<name>/``."""
        return f"results/latency/gpu-{self.slug}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict):
                    out.append(r)
    except OSError:
        pass
    return out


def _ts(r: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(r["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return math.nan


def machine_slug(gpu: str, device: str = "cuda") -> str:
    """The folder name ``results/baselines/`` gives the machine (``gpu``: its CPU name on cpu)."""
    from ablate.regress.nightly import machine_slug as slug

    return slug([{"device": "cuda", "env.gpu": gpu} if device == "cuda" else {"device": "cpu", "env.cpu": gpu}])


def earlier_rows(root: Path, gpu: str) -> list[dict[str, Any]]:
    """Committed latency rows measured on ``gpu`` (``env.gpu`` equal), the source of every estimate."""
    rows = []
    for f in sorted((root / "results/latency").glob("*.jsonl")):
        rows += [r for r in _read_jsonl(f) if r.get("device") == "cuda" and r.get("env.gpu") == gpu]
    return rows


def committed_gpu(root: Path) -> str | None:
    """The GPU of the newest CUDA row under results/latency (the default for a dry run on CPU)."""
    rows = [r for f in sorted((root / "results/latency").glob("*.jsonl")) for r in _read_jsonl(f)
            if r.get("device") == "cuda" and r.get("env.gpu")]
    return max(rows, key=_ts)["env.gpu"] if rows else None


def row_gaps(rows: list[dict[str, Any]]) -> dict[int, float]:
    """``id(row) -> seconds since the previous row of its run`` (the time it took, its set-up included)."""
    gaps: dict[int, float] = {}
    runs: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        runs.setdefault(r.get("run_id"), []).append(r)
    for rs in runs.values():
        rs = sorted((r for r in rs if not math.isnan(_ts(r))), key=_ts)
        for a, b in zip(rs, rs[1:]):
            g = _ts(b) - _ts(a)
            if 0 <= g <= GAP_MAX_S:
                gaps[id(b)] = g
    return gaps


def _mode(r: dict[str, Any]) -> str:
    return str(r.get("train_mode") or r.get("decode_mode") or "eager")


def _train_sequence(prs: list[dict[str, Any]], gaps: dict[int, float], cfg: Any) -> list[float]:
    """Seconds of each planned training measurement, in the suite's order (choice, then mode): an earlier row's
    time, or for a compiled step without one the eager step plus the compile allowance."""
    seen = {(r.get("choice"), _mode(r)): gaps.get(id(r), 0.0) for r in prs if id(r) in gaps}
    eager = [v for (_, m), v in seen.items() if m == "eager"]
    typical = sorted(eager)[len(eager) // 2] if eager else START_S
    out = []
    for choice in cfg.train.choices:
        e = seen.get((choice, "eager"), typical)
        for mode in cfg.train.modes:
            out.append(seen.get((choice, mode), e if mode == "eager" else e + COMPILE_TRAIN_S))
    return out


def part_estimates(rows: list[dict[str, Any]], cfg: Any) -> dict[str, tuple[float, str, float]]:
    """Per latency part: (seconds without a budget, how it was estimated, seconds under the part's budget) from
    the newest run of each part. Kernel rows timed with shorter do_bench settings than the preset's get the
    difference added; decode modes no earlier row measured scale the part; the training part is walked measurement
    by measurement (a compiled step without an earlier row: its eager step plus a compile allowance). A part's
    budget stops new measurements, not the one running: under a budget a part takes the budget plus its longest
    measurement (training: until the first measurement that starts past the budget)."""
    gaps = row_gaps(rows)
    out: dict[str, tuple[float, str, float]] = {}
    for part in cfg.parts:
        prs = [r for r in rows if r.get("part") == part]
        if not prs:
            continue
        newest = max(prs, key=_ts).get("run_id")
        prs = [r for r in prs if r.get("run_id") == newest]
        secs = sum(gaps.get(id(r), 0.0) for r in prs)
        longest = max((gaps.get(id(r), 0.0) for r in prs), default=0.0)
        how = f"{len(prs)} rows of run {newest}"
        if part == "kernel":
            want = cfg.kernels.warmup_ms + cfg.kernels.rep_ms
            extra = sum(max(0.0, want - float(r.get("config.kernels.warmup_ms") or want)
                            - float(r.get("config.kernels.rep_ms") or 0.0)) for r in prs if r.get("status") == "ok")
            secs += extra / 1e3
        if part == "train":
            seq = _train_sequence(prs, gaps, cfg)
            t = 0.0
            for d in seq:
                if t >= _budget(cfg, part):
                    break
                t += d
            out[part] = (sum(seq), how, t)
            continue
        if part == "decode":
            seen = {_mode(r) for r in prs}
            if set(cfg.decode.modes) - seen:
                secs *= len(cfg.decode.modes) / max(1, len(seen & set(cfg.decode.modes)))
        out[part] = (secs, how, min(secs, _budget(cfg, part) + longest))
    return out


def _budget(cfg: Any, part: str) -> float:
    from ablate.suites.latency.constants import PART_BUDGETS  # lazy: --help without the package

    section, name = PART_BUDGETS[part].split(".")
    b = getattr(getattr(cfg, section), name)
    return float(b) if b and b > 0 else math.inf


def latency_estimate(ctx: Context, cfg: Any) -> tuple[float, str, dict[str, float]]:
    """(seconds, source, per-part seconds under the preset's budgets) of one run of the latency preset."""
    parts = part_estimates(ctx.rows, cfg)
    per: dict[str, float] = {}
    for part in cfg.parts:
        per[part] = parts[part][2] if part in parts else _budget(cfg, part)
        if math.isinf(per[part]):
            return math.inf, f"{part}: no earlier row and no budget", per
    total = sum(per.values())
    if cfg.budget_s > 0:
        total = min(total, cfg.budget_s + max(g for g in [0.0, *row_gaps(ctx.rows).values()]))
    notes = ", ".join(f"{p} {v:.0f} s" for p, v in per.items())
    return START_S + total + PUBLISH_S, f"{len(ctx.rows)} earlier rows of {ctx.gpu}, under the preset's budgets: " \
                                        f"{notes} (the run's budget {cfg.budget_s:g} s)", per


def overhead_combos(cfg: Any, keys: Sequence[str] = OVERHEAD_KEYS, seq_lens: Sequence[int] = OVERHEAD_SEQ_LENS,
                    passes: Sequence[str] = OVERHEAD_PASSES) -> list[tuple[str, int, str, bool]]:
    """(key, n, pass, capped) in run order; capped: the preset's ``kernels.caps`` leave it out of the suite."""
    from ablate.suites.latency.config import Shape, kernel_passes

    h = OVERHEAD_HIDDEN // OVERHEAD_HEAD_DIM
    out = []
    for n in seq_lens:
        shape = Shape("main", n, max(1, OVERHEAD_TOKENS // n), h, h, OVERHEAD_HEAD_DIM, False, "bfloat16", "none",
                      None, tuple(passes))
        for key in keys:
            allowed = kernel_passes(cfg, shape, key)
            out += [(key, n, p, p not in allowed) for p in passes]
    return out


def overhead_estimate(ctx: Context, cfg: Any) -> tuple[float, str]:
    gaps = row_gaps(ctx.rows)
    bench = (cfg.kernels.warmup_ms + cfg.kernels.rep_ms) / 1e3
    total, found, n = START_S + PUBLISH_S, 0, 0
    for key, seq, pas, capped in overhead_combos(cfg):
        if capped:
            continue
        n += 1
        match = [r for r in ctx.rows if r.get("part") == "kernel" and r.get("status") == "ok"
                 and r.get("attention") == key and r.get("seq_len") == seq and r.get("pass") == pas
                 and r.get("head_dim") == OVERHEAD_HEAD_DIM and r.get("causal") is False and r.get("group") == "main"]
        if match:
            r = max(match, key=_ts)
            call = float(r.get("time_ms") or 0.0) / 1e3
            per_round = 1.0 + gaps.get(id(r), bench) + 2 * (bench + 5 * call)  # suite run + bare + registered
            found += 1
        else:
            per_round = COMBO_FALLBACK_S
        total += ctx.rounds * per_round
    return total, f"{ctx.rounds} alternating rounds x {n} key/shape/pass ({found} timed before on this GPU)"


def rung_estimate(ctx: Context, suite: str) -> tuple[float | None, str]:
    """Seconds of ``suite``'s gpu preset at the FLOP/s measured on this GPU (ablate.plan.estimate)."""
    import importlib

    from ablate.plan.estimate import eval_flops, job_flops, measured_rate, estimate_lines

    try:
        mod = importlib.import_module(f"ablate.suites.{suite}")
        cfg = mod.resolve(ctx.preset, [])
        jobs, evals = mod.train_jobs(cfg, [0])
    except Exception as exc:  # a suite without a gpu preset or a train_jobs: no estimate, said
        return None, f"no estimate ({type(exc).__name__}: {str(exc)[:120]})"
    cuda = ctx.device == "cuda"
    rate = measured_rate(ctx.device, where=[ctx.root / "results"], gpu=ctx.gpu if cuda else None,
                         cpu=None if cuda else ctx.gpu)
    if rate is None:
        return None, "no FLOP/s measured on this machine under results/"
    flops = sum(job_flops(j) for j in jobs) + sum(eval_flops(w) for w in evals)
    line = estimate_lines(jobs, evals, rate, device=ctx.device)[-1]
    return START_S + flops / rate.flops_per_s + PUBLISH_S, line.removeprefix("estimate: ")


def build_steps(ctx: Context) -> list[Step]:
    """The steps in priority order (those ``ctx.steps`` names)."""
    from ablate.plan.runner import SUITES, suite_presets
    from ablate.suites.latency.config import resolve

    cfg = resolve(ctx.preset)
    w, run = ctx.work, ctx.run_argv()
    a, b = f"{w}/a/latency/{ctx.name}", f"{w}/b/latency/{ctx.name}"
    publish = Command([PY, ctx.script, "publish", *ctx.tag])
    baseline = f"results/baselines/{ctx.slug}/latency-{ctx.preset}.jsonl"
    lat_s, lat_src, _ = latency_estimate(ctx, cfg)
    parts = part_estimates(ctx.rows, cfg)
    steps = [Step("latency", "the GPU latency preset, with provenance",
                  [Command([*run, "--out", f"{w}/a"], (0, 1), budgeted=True), publish],
                  [a, ctx.latency_target, baseline], lat_s, lat_src, partial_ok=True)]
    ov_s, ov_src = overhead_estimate(ctx, cfg)
    steps.append(Step("overhead", "harness figure vs a bare do_bench of the package's own call",
                      [Command([PY, ctx.script, "overhead", "--out", f"{w}/overhead.jsonl", "--rounds",
                                str(ctx.rounds), *ctx.overhead_args]),
                       publish], [f"{w}/overhead.jsonl", f"results/gpu-evidence/{ctx.slug}/overhead.json"],
                      ov_s, ov_src))
    # train/decode resume into run A: what A's part budget already measured is not measured again
    gaps = row_gaps(ctx.rows)
    base = [r for r in ctx.rows if r.get("part") == "train" and r.get("choice") == "base"]
    eager_s = sum(gaps.get(id(r), 0.0) for r in base if _mode(r) == "eager") or START_S
    compiled = [r for r in base if _mode(r) == "compiled"]
    compile_s = (sum(gaps.get(id(r), 0.0) for r in compiled) if compiled else COMPILE_TRAIN_S) \
        if "compiled" in cfg.train.modes else 0.0
    base_s = eager_s + compile_s
    dec_s = parts.get("decode", (cfg.decode.budget_s or 60.0, ""))[0]
    steps.append(Step("train", "training step eager vs compiled, MFU",
                      [Command([*run, "--out", f"{w}/a", "--set", "parts=train", "--set", "train.choices=base",
                                "--set", "train.budget_s=0"], (0, 1)), publish], [a, ctx.latency_target],
                      START_S + PUBLISH_S + base_s, f"the base step, eager {eager_s:.0f} s from earlier rows"
                      + (f" + compiled {compile_s:.0f} s ({'earlier rows' if compiled else 'allowance'})"
                         if compile_s else ""),
                      covered=("latency", parts.get("train", (0, "", 0.0))[2]), work_s=base_s))
    steps.append(Step("decode", "decode 1k-32k, static cache + CUDA graphs, GB/s vs peak",
                      [Command([*run, "--out", f"{w}/a", "--set", "parts=decode", "--set", "decode.budget_s=0"],
                               (0, 1)), publish], [a, ctx.latency_target],
                      START_S + PUBLISH_S + dec_s, f"decode part from earlier rows ({dec_s:.0f} s)",
                      covered=("latency", parts.get("decode", (0, "", 0.0))[2]), work_s=dec_s))
    noise = f"results/baselines/{ctx.slug}/latency-{ctx.preset}.noise.json"
    steps.append(Step("repeat", "second latency run in a separate process, ablate calibrate, planted 5% slowdown",
                      [Command([*run, "--out", f"{w}/b"], (0, 1), budgeted=True),
                       Command([*ABLATE, "calibrate", a, b, "--fail-if", CALIBRATE_FAIL_IF, "--plant",
                                f"{PLANT_PERCENT:g}", "--out", noise], (0, 1)), publish],
                      [b, noise, f"results/gpu-evidence/{ctx.slug}/latency-repeat.jsonl"],
                      lat_s + CALIBRATE_S, f"as the latency step + calibrate {CALIBRATE_S:.0f} s",
                      needs=("latency",), partial_ok=True))
    for suite in RUNG_SUITES:
        if f"rung-{suite}" not in ctx.steps or suite not in SUITES or ctx.preset not in suite_presets(suite):
            continue
        est, src = rung_estimate(ctx, suite)
        steps.append(Step(f"rung-{suite}", f"the gpu rung of {suite} (estimate first)",
                          [Command([PY, ctx.script, "estimate", suite, *ctx.tag]),
                           Command([*ctx.run_argv(suite), "--out", f"{w}/rungs"], (0, 1)), publish],
                          [f"{w}/rungs/{suite}/{ctx.name}", f"results/{suite}/{ctx.name}"], est, src))
    return [s for s in steps if s.name in ctx.steps]


def finish_commands(ctx: Context, results_files: Sequence[str]) -> list[Command]:
    """Regenerate the report folders of the touched results files (every file of a suite reported as one folder),
    then the summary page."""
    from ablate.reporting.report import FOLDER_SUITES

    files: set[str] = set()
    for f in results_files:
        parts = f.split("/")
        if len(parts) == 3 and parts[0] == "results" and parts[1] not in ("baselines", "gpu-evidence"):
            files |= ({p.relative_to(ctx.root).as_posix() for p in (ctx.root / "results" / parts[1]).glob("*.jsonl")}
                      if parts[1] in FOLDER_SUITES else set()) | {f}
    cmds = [Command(["bash", "scripts/regenerate_reports.sh", *sorted(files)])] if ctx.reports and files else []
    return cmds + [Command([PY, ctx.script, "summary", *ctx.tag])]


# ---------------------------------------------------------------------------------------------------------------
# The ledger (resume)


class Ledger:
    def __init__(self, root: Path, work: str):
        self.path = root / work / "ledger.json"
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("version", 1)
        self.data.setdefault("steps", {})
        self.data.setdefault("invocations", [])

    def step(self, name: str) -> dict[str, Any]:
        return self.data["steps"].get(name, {})

    def save(self) -> None:
        from ablate.store.atomic import write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


def is_complete(step: Step, ledger: Ledger, root: Path) -> bool:
    """The ledger says its commands finished (a latency run under its full budget) and its outputs exist."""
    return bool(ledger.step(step.name).get("complete")) and all((root / o).exists() for o in step.outputs)


def decide(step: Step, left: float, ledger: Ledger, root: Path, settled: dict[str, str]) -> Decision:
    """Run, run partly, done already, or skip (and why), for ``left`` seconds."""
    if is_complete(step, ledger, root):
        return Decision(step, "done", step.estimate_s, reason="complete: outputs present (resume)")
    blocked = [n for n in step.needs if settled.get(n) not in ("done", "run") and not (
        n not in settled and ledger.step(n).get("complete"))]  # a step not asked for this time: its ledger entry
    if blocked:
        return Decision(step, "skip", step.estimate_s, reason=f"needs {', '.join(blocked)} complete first")
    est, note = step.estimate_s, ""
    if step.covered and settled.get(step.covered[0]) in ("done", "run"):
        est = START_S + PUBLISH_S + max(0.0, step.work_s - step.covered[1])
        note = (f"resumes {step.covered[0]}'s rows; its part budget covers ~{min(step.work_s, step.covered[1]):.0f}"
                f" of ~{step.work_s:.0f} s")
    if est is None or math.isinf(est):
        return Decision(step, "skip", est, reason=f"no time estimate: {step.source}")
    if est <= left:
        return Decision(step, "run", est, reason=note)
    if step.partial_ok and left >= PARTIAL_MIN_S:
        slot = left - START_S - PUBLISH_S - (CALIBRATE_S if step.name == "repeat" else 0.0)
        return Decision(step, "partial", left, slot_s=max(1.0, slot),
                        reason=f"budget: ~{est:.0f} s needed, {left:.0f} s left; runs under budget_s={int(slot)} "
                               "(the rest as skipped rows; a re-run resumes)")
    return Decision(step, "skip", est, reason=f"budget: ~{est:.0f} s needed, {max(0.0, left):.0f} s left")


def reserve_s(ctx: Context) -> float:
    return SUMMARY_S + (REPORT_S if ctx.reports else 0.0)


def plan(ctx: Context, steps: Sequence[Step], ledger: Ledger) -> list[Decision]:
    """What a run would do now, in priority order, spending the estimates against the budget."""
    left = ctx.budget_s - reserve_s(ctx)
    out, settled = [], {}
    for step in steps:
        d = decide(step, left, ledger, ctx.root, settled)
        settled[step.name] = d.kind
        if d.kind in ("run", "partial"):
            left -= d.estimate_s or 0.0
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Running the steps

Runner = Callable[[list[str], "float | None", "dict[str, str]", Path, Path], "int | None"]


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the command's process group (a suite stops between rows; each row is one atomic line), then SIGTERM
    and SIGKILL, GRACE_S apart."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=GRACE_S)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(argv: list[str], timeout: float | None, env: dict[str, str], cwd: Path, log: Path) -> int | None:
    """Run ``argv`` in ``cwd``, its output to the terminal and to ``log``; the exit status, or None when it was
    stopped at ``timeout``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                fh.write(line)
                fh.flush()
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            reader.join(5)
            return None
        except KeyboardInterrupt:
            _stop(proc)
            raise
        reader.join(5)
        return rc


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolved(argv: list[str]) -> list[str]:
    return [sys.executable if a == PY else a for a in argv]


def _results_files(steps: Sequence[Step]) -> list[str]:
    return sorted({o for s in steps for o in s.outputs if o.startswith("results/") and o.endswith(".jsonl")})


def export_paths(ctx: Context, results: Sequence[str]) -> list[str]:
    """What a lent machine must hand back: the work folder (to resume), what was published, the touched reports."""
    from ablate.reporting.report import report_units

    reports = [out for _, out in report_units(results)]
    return sorted({ctx.work, f"results/gpu-evidence/{ctx.slug}", f"results/baselines/{ctx.slug}",
                   f"reports/gpu-evidence/{ctx.slug}", "reports/index.html", *results, *reports})


def export_to(ctx: Context, dest: Path, paths: Sequence[str]) -> None:
    for rel in paths:
        src = ctx.root / rel
        if src.is_dir():  # training checkpoints stay behind: too large to hand back (a rung retrains them)
            shutil.copytree(src, dest / rel, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.ckpt"))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def execute(ctx: Context, steps: Sequence[Step], *, runner: Runner = run_command,
            clock: Callable[[], float] = time.monotonic, env: dict[str, str] | None = None,
            export: Path | None = None, say: Callable[[str], None] = print) -> int:
    """Run the steps in priority order until the budget; the summary (and reports) last. Exit status: 0, or 1 when
    a command failed (its step stays incomplete; later steps still run)."""
    env = dict(os.environ if env is None else env)
    ledger = Ledger(ctx.root, ctx.work)
    t0 = clock()
    deadline = t0 + ctx.budget_s - reserve_s(ctx)
    inv: dict[str, Any] = {"started": _now(), "budget_s": ctx.budget_s, "gpu": ctx.gpu, "reports": ctx.reports,
                           "git_commit": env.get("ABLATE_GIT_COMMIT"), "git_dirty": env.get("ABLATE_GIT_DIRTY"),
                           "steps": {}}
    ledger.data["invocations"].append(inv)
    ledger.data.update(gpu=ctx.gpu, slug=ctx.slug)
    ledger.save()
    settled: dict[str, str] = {}
    stopped, status, ran = False, 0, []
    for step in steps:
        d = decide(step, deadline - clock(), ledger, ctx.root, settled)
        if stopped and d.kind in ("run", "partial"):
            d = Decision(step, "skip", step.estimate_s, reason="budget: the run stopped at its time budget")
        settled[step.name] = d.kind
        inv["steps"][step.name] = {"decision": d.kind, "estimate_s": d.estimate_s, "reason": d.reason}
        say(f"gpu_evidence: {step.name}: {d.kind}" + (f" (~{d.estimate_s:.0f} s)" if d.estimate_s else "")
            + (f": {d.reason}" if d.reason else ""))
        ledger.save()
        if d.kind not in ("run", "partial"):
            continue
        rec: dict[str, Any] = {"started": _now(), "partial": d.kind == "partial", "slot_s": d.slot_s,
                               "estimate_s": d.estimate_s, "commands": [], "complete": False}
        ledger.data["steps"][step.name] = rec
        ledger.save()
        ran.append(step)
        t_step, ok = clock(), True
        for i, cmd in enumerate(step.commands, 1):
            timeout = deadline - clock()
            argv = cmd.with_slot(d.slot_s)
            if timeout <= 0:
                stopped, ok = True, False
                break
            say("$ " + shlex.join(argv))
            t = clock()
            log = ctx.root / ctx.work / "logs" / f"{step.name}-{i}.log"
            rc = runner(_resolved(argv), timeout, env, ctx.root, log)
            rec["commands"].append({"argv": shlex.join(argv), "rc": rc, "wall_s": round(clock() - t, 3),
                                    "log": log.relative_to(ctx.root).as_posix()})
            ledger.save()
            if rc is None:
                say(f"gpu_evidence: {step.name}: stopped at the time budget (a re-run resumes it)")
                stopped, ok = True, False
                break
            if rc not in cmd.ok_rcs:
                say(f"gpu_evidence: {step.name}: command failed (exit {rc}); log {log}")
                status, ok = 1, False
                break
        rec["wall_s"] = round(clock() - t_step, 3)
        rec["finished"] = _now()
        rec["complete"] = ok and d.kind == "run" and all((ctx.root / o).exists() for o in step.outputs)
        settled[step.name] = "run" if rec["complete"] else "incomplete"
        ledger.save()
        if export is not None:
            export_to(ctx, export, export_paths(ctx, _results_files(ran)))
    inv["measure_wall_s"] = round(clock() - t0, 3)
    ledger.save()
    for i, cmd in enumerate(finish_commands(ctx, _results_files(ran)), 1):
        say("$ " + shlex.join(cmd.argv))
        rc = runner(_resolved(cmd.argv), None, env, ctx.root, ctx.root / ctx.work / "logs" / f"finish-{i}.log")
        if rc not in cmd.ok_rcs:
            say(f"gpu_evidence: finishing command failed (exit {rc}): {shlex.join(cmd.argv)}")
            status = 1
    inv["wall_s"] = round(clock() - t0, 3)
    ledger.save()
    if export is not None:
        export_to(ctx, export, export_paths(ctx, _results_files(ran)))
    return status


# ---------------------------------------------------------------------------------------------------------------
# Sub-commands the steps run (each also usable alone)


def _identity(line: str) -> Any:
    try:
        r = json.loads(line)
        return (r["run_id"], r["row_key"], r["timestamp"])
    except (ValueError, KeyError, TypeError):
        return line.strip()


def append_new_lines(src: Path, dst: Path) -> int:
    """Append the rows of ``src`` that ``dst`` does not hold yet (same run, row key and timestamp): results stay
    append-only, and publishing twice adds nothing. Returns how many were appended."""
    have = set()
    if dst.exists():
        have = {_identity(line) for line in dst.read_text(encoding="utf-8").splitlines() if line.strip()}
    new = [line for line in src.read_text(encoding="utf-8").splitlines()
           if line.strip() and _identity(line) not in have]
    if new:
        dst.parent.mkdir(parents=True, exist_ok=True)
        lead = "\n" if dst.exists() and dst.stat().st_size and not dst.read_bytes().endswith(b"\n") else ""
        with open(dst, "a", encoding="utf-8") as fh:
            fh.write(lead + "\n".join(new) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return len(new)


def _context(root: Path, gpu: str, device: str = "cuda", preset: str = "gpu") -> Context:
    return Context(root, gpu, machine_slug(gpu, device), device=device, preset=preset)


def publish(root: Path, gpu: str, device: str = "cuda", preset: str = "gpu",
            say: Callable[[str], None] = print) -> None:
    """Copy what the work folder holds to where it is committed (idempotent)."""
    from ablate.regress.nightly import write_baseline
    from ablate.store.atomic import write_text

    ctx = _context(root, gpu, device, preset)
    w = root / ctx.work
    a = w / "a/latency" / ctx.name
    if a.exists():
        n = append_new_lines(a, root / ctx.latency_target)
        for p in write_baseline({"latency": (a, preset)}, root / "results/baselines"):
            say(f"publish: baseline {p.relative_to(root)}")
        say(f"publish: {n} new latency row(s) -> {ctx.latency_target}")
    evidence = root / "results/gpu-evidence" / ctx.slug
    ov, b = w / "overhead.jsonl", w / "b/latency" / ctx.name
    if ov.exists():  # JSON, not JSONL: these are no results rows, so nothing reading results/**.jsonl meets them
        write_text(evidence / "overhead.json", json.dumps(_read_jsonl(ov), indent=1, sort_keys=True) + "\n")
        say(f"publish: {ov.relative_to(root)} -> {(evidence / 'overhead.json').relative_to(root)}")
    if b.exists():  # results rows of the same machine: a report of results/ shows them as a second run
        write_text(evidence / "latency-repeat.jsonl", b.read_text(encoding="utf-8"))
        say(f"publish: {b.relative_to(root)} -> {(evidence / 'latency-repeat.jsonl').relative_to(root)}")
    for f in sorted((w / "rungs").glob(f"*/{ctx.name}")):
        dst = root / "results" / f.parent.name / ctx.name
        say(f"publish: {append_new_lines(f, dst)} new {f.parent.name} row(s) -> {dst.relative_to(root)}")


def _bench_overhead():
    spec = importlib.util.spec_from_file_location("_bench_overhead", ROOT / "scripts" / "bench_overhead.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def overhead(out: Path, *, device: str = "cuda", keys: Sequence[str] = OVERHEAD_KEYS,
             seq_lens: Sequence[int] = OVERHEAD_SEQ_LENS, passes: Sequence[str] = OVERHEAD_PASSES,
             head_dim: int = OVERHEAD_HEAD_DIM, hidden: int = OVERHEAD_HIDDEN, tokens: int = OVERHEAD_TOKENS,
             dtype: str = "bfloat16", rounds: int = 3, tolerance: float = OVERHEAD_TOLERANCE,
             say: Callable[[str], None] = print) -> int:
    """One row per key, length and pass: the suite's figure and a bare call of the package's own function,
    ``rounds`` times alternating (``scripts/bench_overhead.py``'s two figures); appended to ``out``, resumable.
    Returns how many measured pairs lie more than ``tolerance`` apart."""
    import statistics
    import tempfile

    import torch

    from ablate.store.env import provenance
    from ablate.suites.latency.config import resolve

    bo = _bench_overhead()
    cfg = resolve("gpu" if device == "cuda" else "tiny")
    done = {(r.get("key"), r.get("seq_len"), r.get("pass")) for r in _read_jsonl(out)
            if r.get("status") in ("ok", "skipped")}  # unavailable and error: asked again (a package installed)
    prov = provenance()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    bad = 0
    h = hidden // head_dim
    for n in seq_lens:
        for key, _, pas, capped in overhead_combos(cfg, keys, (n,), passes):
            if (key, n, pas) in done:
                continue
            args = argparse.Namespace(device=device, key=key, pass_=pas, seq_len=n, head_dim=head_dim, heads=h,
                                      tokens=tokens, dtype=dtype, causal=False, rounds=rounds, tolerance=tolerance)
            row: dict[str, Any] = {"key": key, "seq_len": n, "pass": pas, "head_dim": head_dim, "n_heads": h,
                                   "batch": max(1, tokens // n), "causal": False, "dtype": dtype, "device": device,
                                   "gpu": gpu, "torch": torch.__version__, "git_commit": prov.get("git_commit"),
                                   "git_dirty": prov.get("git_dirty"), "rounds": rounds, "tolerance": tolerance}
            if capped:
                row.update(status="skipped", reason=f"the {'gpu' if device == 'cuda' else 'tiny'} preset's "
                                                    "kernels.caps leave it out: the harness does not time it")
            else:
                try:
                    suite, bare, reg, srow = [], [], [], {}
                    with tempfile.TemporaryDirectory() as tmp:
                        for i in range(rounds):
                            srow = bo.suite_figure(args, Path(tmp) / f"r{i}")
                            suite.append(float(srow["time_ms"]))
                            reg.append(bo.bare_figure(args, registered=True))
                            b = bo.bare_figure(args)
                            bare.append(reg[-1] if b is None else b)
                    s, b = statistics.median(suite), statistics.median(bare)
                    row.update(status="ok", reason="", harness_ms=s, bare_ms=b, registered_ms=statistics.median(reg),
                               ratio=s / b, within=abs(s / b - 1) <= tolerance, harness_rounds=suite,
                               bare_rounds=bare, registered_rounds=reg, backend=srow.get("backend"),
                               timed_call=srow.get("timed_call"), input_layout=srow.get("input_layout"),
                               layout_ms=srow.get("layout_ms"), harness_timing=srow.get("timing"),
                               harness_reps=srow.get("reps"), tflops_harness=srow.get("tflops"),
                               bare_call="package" if b is not None else "registered (no separate package call)")
                    bad += not row["within"]
                except SystemExit as exc:  # bench_overhead: the suite did not measure it (status and reason)
                    text = str(exc)
                    row.update(status="unavailable" if "unavailable" in text else "error", reason=text[:300])
                except Exception as exc:  # a kernel that cannot run here: a row saying why, the sweep goes on
                    row.update(status="error", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
            row["timestamp"] = _now()
            say(f"overhead: {key} n={n} {pas}: " + (f"harness {row['harness_ms']:.4f} ms, bare {row['bare_ms']:.4f}"
                                                    f" ms, ratio {row['ratio']:.4f}" if row["status"] == "ok"
                                                    else f"{row['status']}: {row['reason']}"))
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    return bad


def estimate(root: Path, suite: str, gpu: str, device: str = "cuda", preset: str = "gpu") -> list[str]:
    """``ablate.plan.estimate``'s lines for ``suite``'s preset at the FLOP/s measured on this machine."""
    import importlib

    from ablate.plan.estimate import estimate_lines, measured_rate

    mod = importlib.import_module(f"ablate.suites.{suite}")
    jobs, evals = mod.train_jobs(mod.resolve(preset, []), [0])
    cuda = device == "cuda"
    rate = measured_rate(device, where=[root / "results"], gpu=gpu if cuda else None, cpu=None if cuda else gpu)
    return [f"{suite} {preset}: {line}" for line in estimate_lines(jobs, evals, rate, device=device)]


def _newest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[Any, dict[str, Any]] = {}
    for r in sorted(rows, key=_ts):
        by[r.get("row_key")] = r
    return list(by.values())


def _f(v: Any, fmt: str = ".3g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def summary(root: Path, gpu: str, device: str = "cuda", preset: str = "gpu") -> Path:
    """``reports/gpu-evidence/<machine>/README.md`` (and ``evidence.json``): every figure the issue asks for, from
    the work folder's rows, the ledger and the calibration file."""
    from ablate.store.atomic import write_text

    ctx = _context(root, gpu, device, preset)
    w = root / ctx.work
    led = Ledger(root, ctx.work).data
    a = _newest(_read_jsonl(w / "a/latency" / ctx.name))
    out = [f"# GPU evidence: {gpu}", "",
           "Made by `python scripts/gpu_evidence.py` (docs/gpu.md) from the rows in "
           f"`{ctx.work}/`; regenerate with `python {SCRIPT} summary {shlex.join(ctx.tag)}`.", ""]
    commits = sorted({f"{r.get('env.git_commit')} (dirty: {r.get('env.git_dirty')})" for r in a})
    if a:
        out += [f"Rows' commit: {', '.join(commits)}; torch {a[0].get('env.torch')}, CUDA {a[0].get('env.cuda')}, "
                f"driver {a[0].get('env.driver')}.", ""]
    steps = []
    for name in STEP_NAMES:
        s = led.get("steps", {}).get(name)
        if s:
            steps.append([name, "complete" if s.get("complete") else "partial" if s.get("partial") else "incomplete",
                          _f(s.get("wall_s"), ".0f"), _f(s.get("estimate_s"), ".0f"),
                          ", ".join(str(c.get("rc")) for c in s.get("commands", []))])
    inv = led.get("invocations", [])
    out += ["## Steps", "", *_table(["step", "state", "wall s", "estimate s", "exit codes"], steps), "",
            f"{len(inv)} invocation(s); wall time of the steps " + ", ".join(
                _f(i.get("measure_wall_s"), ".0f") + f" s of {_f(i.get('budget_s'), '.0f')} s" for i in inv)
            + "; skipped steps and why: " + ("; ".join(
                f"{k}: {v['reason']}" for k, v in (inv[-1].get("steps", {}) if inv else {}).items()
                if v.get("decision") == "skip") or "none"), ""]
    if a:
        counts: dict[tuple[str, str], int] = {}
        for r in a:
            counts[(str(r.get("part")), str(r.get("status")))] = counts.get((str(r.get("part")), str(r.get("status"))),
                                                                           0) + 1
        stats = sorted({s for _, s in counts})
        parts = sorted({p for p, _ in counts})
        runs: dict[Any, list[float]] = {}
        for r in a:
            runs.setdefault(r.get("run_id"), []).append(_ts(r))
        out += [f"## 1. Latency preset (`ablate run --suite latency --preset {preset}`)", "",
                *_table(["part", *stats], [[p, *(counts.get((p, s), 0) for s in stats)] for p in parts]), "",
                f"{len(a)} rows; first to last row per run: " + ", ".join(
                    f"{k} {max(v) - min(v):.0f} s" for k, v in runs.items()), ""]
    ov = _newest([{**r, "row_key": (r.get("key"), r.get("seq_len"), r.get("pass"))}
                  for r in _read_jsonl(w / "overhead.jsonl")])
    if ov:
        shapes = sorted({f"hd {r.get('head_dim')}, {r.get('n_heads')} heads, {(r.get('batch') or 0) * r['seq_len']} "
                         f"tokens per batch, {r.get('dtype')}" for r in ov})
        out += ["## 2. Overhead: the harness figure vs a bare `do_bench` of the package's own call", "",
                f"{'; '.join(shapes)}; non-causal; medians of {ov[0].get('rounds')} alternating rounds "
                "(`scripts/bench_overhead.py`'s two figures; the bare call is the package's own function in its "
                "layout).", "",
                *_table(["key", "n", "pass", "harness ms", "bare ms", "ratio", f"within {OVERHEAD_TOLERANCE:.0%}",
                         "backend / status"],
                        [[r["key"], r["seq_len"], r["pass"], _f(r.get("harness_ms"), ".4f"), _f(r.get("bare_ms"), ".4f"),
                          _f(r.get("ratio"), ".4f"), {True: "yes", False: "**no**"}.get(r.get("within"), "-"),
                          r.get("backend") if r.get("status") == "ok" else f"{r.get('status')}: {r.get('reason')}"]
                         for r in ov]), ""]
    tr = sorted((r for r in a if r.get("part") == "train" and r.get("choice") == "base"), key=_mode)
    if tr:
        r0 = tr[0]
        out += [f"## 3. Training step: d={r0.get('d_model')}, {r0.get('n_layers')} layers, T={r0.get('seq_len')}, "
                f"batch {r0.get('batch')}, {r0.get('amp')}", "",
                *_table(["mode", "status", "step ms", "tokens/s", "TFLOP/s", "MFU", "MFU (PaLM count)", "compile s"],
                        [[_mode(r), r.get("status"), _f(r.get("time_ms"), ".1f"), _f(r.get("tokens_per_s"), ".4g"),
                          _f(r.get("tflops"), ".1f"), _f(r.get("mfu"), ".1%"), _f(r.get("mfu_palm"), ".1%"),
                          _f(r.get("compile_s"), ".1f")] for r in tr]), "",
                "MFU = model FLOPs / step time / peak; model FLOPs = 6 N tokens + 3 layers attention_fwd, N every "
                "matmul weight (tied head included), attention_fwd = 4 b h T^2 d / 2 for the causal model "
                "(FlashAttention convention); `MFU (PaLM count)` counts attention unhalved as PaLM's appendix B. "
                f"Peak: {r0.get('peak_tflops')} TFLOP/s ({r0.get('peak_source')}). docs/latency.md.", ""]
    de = sorted((r for r in a if r.get("part") == "decode"),
                key=lambda r: (str(r.get("layout")), _mode(r), r.get("context") or 0))
    if de:
        out += ["## 4. Decode (static KV cache; `graph` = one captured CUDA graph replayed per step)", "",
                *_table(["layout", "kv heads", "mode", "context", "status", "ms/step", "GB/s", "of peak"],
                        [[r.get("layout"), r.get("n_kv_heads"), _mode(r), r.get("context"), r.get("status"),
                          _f(r.get("time_ms"), ".3f"), _f(r.get("achieved_gbps"), ".4g"), _f(r.get("bw_util"), ".1%")]
                         for r in de]), ""]
    cal_path = root / "results/baselines" / ctx.slug / f"latency-{preset}.noise.json"
    if cal_path.exists():
        cal = json.loads(cal_path.read_text(encoding="utf-8"))
        p = cal.get("planted", {})
        out += ["## 5. Two runs, `ablate calibrate`", "",
                f"- false alarms: {cal.get('false_alarms')} of {cal.get('matched_rows')} matched rows "
                f"(rules {', '.join(cal.get('fail_if', []))})",
                f"- noisy rows (repeat spread past the threshold): {len(cal.get('noisy', []))}",
                f"- repeat spread: " + "; ".join(f"{m}: p50 {q['p50']:.2f}%, p90 {q['p90']:.2f}%, max {q['max']:.2f}%"
                                                 for m, q in sorted(cal.get("spread_quantiles", {}).items())),
                f"- planted {p.get('percent')}% slowdown of {p.get('config')}: "
                + ("caught" if p.get("caught") else "noisy row, reported" if p.get("noisy") else "MISSED"),
                f"- baseline: `results/baselines/{ctx.slug}/latency-{preset}.jsonl`", ""]
    for suite in RUNG_SUITES:
        rows = _newest(_read_jsonl(w / "rungs" / suite / ctx.name))
        log = w / "logs" / f"rung-{suite}-1.log"
        if rows or log.exists():
            st: dict[str, int] = {}
            for r in rows:
                st[str(r.get("status"))] = st.get(str(r.get("status")), 0) + 1
            est = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.exists() else []
            out += [f"## 6. The {preset} rung of {suite}", "", *(f"    {line}" for line in est), "",
                    f"rows: {', '.join(f'{v} {k}' for k, v in sorted(st.items())) or 'none'}", ""]
    dest = root / "reports/gpu-evidence" / ctx.slug
    write_text(dest / "README.md", "\n".join(out).rstrip() + "\n")
    write_text(dest / "evidence.json", json.dumps(led, indent=2, sort_keys=True) + "\n")
    return dest / "README.md"


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_budget(text: str) -> float:
    """``600``, ``600s``, ``10m``, ``1.5h`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--budget {text!r}: give a positive time such as 600, 600s, 10m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_steps(text: str | None) -> tuple[str, ...]:
    if not text:
        return STEP_NAMES
    names = tuple(s.strip() for s in text.split(","))
    bad = [s for s in names if s not in STEP_NAMES]
    if bad or not names:
        raise UserError(f"unknown step {bad[0] if bad else text!r}; valid: {', '.join(STEP_NAMES)}")
    return names


def print_plan(ctx: Context, decisions: Sequence[Decision], say: Callable[[str], None] = print) -> None:
    say(f"gpu_evidence: plan for {ctx.gpu} (machine {ctx.slug}), budget {ctx.budget_s:.0f} s; estimates from "
        f"{len(ctx.rows)} earlier rows of that GPU in results/latency/*.jsonl; kept for the end: summary "
        f"{SUMMARY_S:.0f} s" + (f" + reports {REPORT_S:.0f} s" if ctx.reports else " (--no-reports)"))
    cum = 0.0
    for i, d in enumerate(decisions, 1):
        s = d.step
        if d.kind in ("run", "partial"):
            cum += d.estimate_s or 0.0
        est = f"~{d.estimate_s:.0f} s" if d.estimate_s is not None and math.isfinite(d.estimate_s) else "? s"
        say(f"{i}. {s.name} [{d.kind}] {est}" + (f" (cumulative {cum:.0f} s)" if d.kind in ("run", "partial") else "")
            + f": {s.title}")
        say(f"   estimate: {s.source}" + (f"; {d.reason}" if d.reason else ""))
        for c in s.commands:
            say("   $ " + shlex.join(c.with_slot(d.slot_s)))
        say("   writes: " + ", ".join(s.outputs))
    ran = [d.step for d in decisions if d.kind in ("run", "partial")]
    say("finally, always:")
    for c in finish_commands(ctx, _results_files(ran)):
        say("   $ " + shlex.join(c.argv))
    say(f"   writes: reports/gpu-evidence/{ctx.slug}/README.md, evidence.json"
        + (" and the report folders of the results above" if ctx.reports else ""))
    skipped = [d for d in decisions if d.kind == "skip"]
    say(f"plan: {len(ran)} of {len(decisions)} step(s) run, ~{cum:.0f} s of the {ctx.budget_s - reserve_s(ctx):.0f} s "
        f"left after the reserve; {sum(d.kind == 'done' for d in decisions)} complete already; {len(skipped)} "
        "skipped" + (": " + "; ".join(f"{d.step.name} ({d.reason})" for d in skipped) if skipped else "")
        + ". A re-run skips complete steps and resumes the rest.")


def _sub(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog=f"python {SCRIPT} {argv[0]}")
    ap.add_argument("--root", default=".", help=argparse.SUPPRESS)
    if argv[0] == "overhead":
        ap.add_argument("--out", required=True)
        ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
        ap.add_argument("--keys", default=",".join(OVERHEAD_KEYS))
        ap.add_argument("--seq-lens", default=",".join(map(str, OVERHEAD_SEQ_LENS)))
        ap.add_argument("--passes", default=",".join(OVERHEAD_PASSES))
        ap.add_argument("--head-dim", type=int, default=OVERHEAD_HEAD_DIM)
        ap.add_argument("--hidden", type=int, default=OVERHEAD_HIDDEN)
        ap.add_argument("--tokens", type=int, default=OVERHEAD_TOKENS)
        ap.add_argument("--dtype", default="bfloat16")
        ap.add_argument("--rounds", type=int, default=3)
    else:
        if argv[0] == "estimate":
            ap.add_argument("suite", choices=RUNG_SUITES)
        ap.add_argument("--gpu", required=True, help="the GPU's name (with --device cpu: the CPU's)")
        ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
        ap.add_argument("--preset", default="gpu")
    a = ap.parse_args(argv[1:])
    root = Path(a.root)
    if argv[0] == "overhead":
        from ablate.registry.keys import ATTENTION

        keys = [k for k in a.keys.split(",") if k]
        for k in keys:
            ATTENTION.get(k)  # unknown key: one line naming the valid ones
        bad = overhead(root / a.out, device=a.device, keys=keys, seq_lens=[int(x) for x in a.seq_lens.split(",")],
                       passes=a.passes.split(","), head_dim=a.head_dim, hidden=a.hidden, tokens=a.tokens,
                       dtype=a.dtype, rounds=a.rounds)
        print(f"overhead: {bad} key/shape/pass pair(s) more than {OVERHEAD_TOLERANCE:.0%} apart")
        return 0
    if argv[0] == "publish":
        publish(root, a.gpu, a.device, a.preset)
    elif argv[0] == "estimate":
        print("\n".join(estimate(root, a.suite, a.gpu, a.device, a.preset)))
    else:
        print(f"summary: {summary(root, a.gpu, a.device, a.preset)}")
    return 0


SUBCOMMANDS = ("overhead", "publish", "estimate", "summary")
REHEARSAL_OVERHEAD = ("--device", "cpu", "--keys", "sdpa_math", "--seq-lens", "64", "--passes", "fwd", "--head-dim",
                      "16", "--hidden", "64", "--tokens", "128", "--dtype", "float32")
REHEARSAL_S = 60.0  # a step's allowance in a rehearsal (no earlier rows of the micro presets)


def _rehearse(root: Path, budget: float, steps: tuple[str, ...], rounds: int) -> int:
    """Every step on this CPU at the micro presets, into ``root``: the same commands, publishing and summary."""
    from ablate.store.env import fingerprint, provenance_env

    root = root.resolve()
    if root == ROOT or ROOT in root.parents and root.relative_to(ROOT).parts[0] in ("results", "reports"):
        raise UserError(f"--rehearse {root}: give a scratch folder, not the checkout's results or reports")
    root.mkdir(parents=True, exist_ok=True)
    cpu = str(fingerprint().get("cpu") or "cpu")
    ctx = Context(root, cpu, machine_slug(cpu, "cpu"), budget, reports=False, rounds=rounds, steps=steps,
                  device="cpu", preset="micro", overhead_args=REHEARSAL_OVERHEAD)
    built = build_steps(ctx)
    for s in built:
        if s.estimate_s is None or not math.isfinite(s.estimate_s):
            s.estimate_s, s.source = REHEARSAL_S, f"rehearsal allowance {REHEARSAL_S:.0f} s"
    print_plan(ctx, plan(ctx, built, Ledger(root, ctx.work)))
    return execute(ctx, built, env={**os.environ, **provenance_env(ROOT), "PYTHONUNBUFFERED": "1"})


def main(argv: Sequence[str] | None = None) -> int:
    from ablate.errors import AblateError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _sub(argv)
        ap = argparse.ArgumentParser(prog=f"python {SCRIPT}", description=__doc__.split("\n\n")[0],
                                     epilog=f"sub-commands (what the steps run): {', '.join(SUBCOMMANDS)}")
        ap.add_argument("--dry-run", action="store_true", help="print the plan (runs on CPU) and exit")
        ap.add_argument("--budget", default="10m", help="time budget, e.g. 600, 10m, 1.5h (default 10m)")
        ap.add_argument("--steps", default=None, help=f"comma-separated, from {', '.join(STEP_NAMES)} (default all)")
        ap.add_argument("--gpu", default=None, help="GPU name for --dry-run (default: that of the newest CUDA "
                                                    "rows under results/latency)")
        ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per overhead pair (default 3)")
        ap.add_argument("--reports", action=argparse.BooleanOptionalAction, default=True,
                        help="regenerate the touched report folders at the end (--no-reports: do it on a CPU later)")
        ap.add_argument("--export", type=Path, default=None, help="copy everything written (and the work folder, "
                                                                  "to resume elsewhere) under this folder")
        ap.add_argument("--allow-dirty", action="store_true", help="measure from a tree with uncommitted changes "
                                                                   "(the rows say git_dirty: true)")
        ap.add_argument("--rehearse", type=Path, default=None, metavar="DIR",
                        help="run every step on this CPU at the micro presets, writing under DIR (a scratch folder, "
                             "not the checkout): checks the glue before GPU time is spent")
        a = ap.parse_args(argv)
        budget, steps = parse_budget(a.budget), parse_steps(a.steps)
        if a.rounds < 1:
            raise UserError("--rounds must be >= 1")
        prov: dict[str, str] = {}
        if not a.dry_run:  # Ctrl-C / SIGINT stops cleanly, also when started in the background (SIGINT ignored)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if a.rehearse is not None:
            return _rehearse(a.rehearse, budget, steps, a.rounds)
        if a.dry_run:
            gpu = a.gpu or committed_gpu(ROOT)
            if not gpu:
                raise UserError("no CUDA rows under results/latency to estimate from; name the GPU with --gpu")
        else:
            import torch

            from ablate.store.env import provenance_env

            if not torch.cuda.is_available():
                raise UserError("no CUDA GPU is visible; --dry-run prints the plan on any machine")
            gpu = torch.cuda.get_device_name(0)
            prov = provenance_env(ROOT)
            if not prov:
                raise UserError("no commit known for this tree: run it in a git checkout, or as "
                                "env $(python scripts/stamp_commit.py) python scripts/gpu_evidence.py (stamped where "
                                "the checkout is)")
            if prov.get("ABLATE_GIT_DIRTY") != "false" and not a.allow_dirty:
                raise UserError(f"the tree at {prov['ABLATE_GIT_COMMIT'][:12]} has uncommitted changes (or none "
                                "known): commit first, or pass --allow-dirty (the rows then say git_dirty: true)")
        ctx = Context(ROOT, gpu, machine_slug(gpu), budget, reports=a.reports, rounds=a.rounds,
                      rows=earlier_rows(ROOT, gpu), steps=steps)
        built = build_steps(ctx)
        if a.dry_run:
            print_plan(ctx, plan(ctx, built, Ledger(ROOT, ctx.work)))
            return 0
        return execute(ctx, built, env={**os.environ, **prov, "PYTHONUNBUFFERED": "1"}, export=a.export)
    except (UserError, AblateError) as exc:
        print(f"gpu_evidence: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpu_evidence: interrupted; the ledger keeps what completed: a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
