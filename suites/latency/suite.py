"""The latency suite's part of the run loop (:mod:`ablate.plan.suitekit`): the plan (one task per attention key's
kernel sweep and per other part), the measurement (the parts in order, under their time budgets) and the summary."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.plan.progress import start_progress
from ablate.registry.keys import POSITION
from ablate.plan.runner import resolve_device, results_path, select_tasks
from ablate.plan.suitekit import Plan, Run, Suite, SuiteTask
from ablate.core.timing import is_cuda
from ablate.core.validate import check_fits, estimate_memory_bytes
from ablate.variants.positions import build_position

from .config import (DTYPES, LatencyConfig, compiles_per_shape, train_model_config, compiled_keys, default_preset, kernel_keys,
                     kernel_passes, plan_kernels, resolve)
from .constants import PART_BUDGETS, PARTS, SUITE
from .decode import decode_model_config, run_decode, run_prefill
from .harness import Clock, Ctx, set_compile_limits
from .kernels import run_kernels
from .model_parts import position_hooks, run_positions, run_train
from .stream import run_stream, stream_model_config


def _count(cfg: LatencyConfig, device: str) -> dict[str, int]:
    n = {p: 0 for p in PARTS}
    for shape, keys in plan_kernels(cfg, device):
        n["kernel"] += sum(len(kernel_passes(cfg, shape, key)) for key in keys)
    ps = cfg.positions
    for key in (list(ps.keys) or POSITION.keys()):
        try:
            hooks = position_hooks(build_position(key, ModelConfig(d_model=ps.n_heads * ps.head_dim, n_heads=ps.n_heads,
                                                           max_len=16, train_len=16, position=key)))
        except Exception:
            hooks = []
        n["position"] += (len(hooks) + 1) * len(ps.seq_lens)
    n["train"] = len(cfg.train.choices) * len(cfg.train.modes)
    n["decode"] = len(cfg.decode.layouts) * len(cfg.decode.contexts) * len(cfg.decode.modes)
    n["prefill"] = len(cfg.decode.layouts) * len(cfg.decode.prompt_lens)
    n["stream"] = len(cfg.stream.layouts) * len(cfg.stream.tokens) * len(cfg.stream.modes)
    return n


RUNNERS = {"kernel": run_kernels, "position": run_positions, "train": run_train, "decode": run_decode,
           "prefill": run_prefill, "stream": run_stream}


def _part_budget(cfg: LatencyConfig, part: str) -> float:
    section, name = PART_BUDGETS[part].split(".")
    return getattr(getattr(cfg, section), name)


def results_file(opts, preset: str, device: str | None = None) -> Path:
    """The results file of a latency run: :func:`ablate.plan.runner.results_path`, ``<out>/latency/<device>-<preset>.jsonl``
    (``device``: ``opts.device`` unless given)."""
    return results_path(opts, device, preset)


def _setup(opts) -> tuple[str, str, LatencyConfig, Path]:
    device = resolve_device(opts.device)
    preset = opts.preset or default_preset(device)
    cfg = resolve(preset, opts.overrides)
    set_keys = {str(o).split("=", 1)[0].strip() for o in opts.overrides}
    if not is_cuda(device):
        for k in ("decode.dtype", "train.amp"):
            if k in set_keys:
                raise ConfigError(f"{k} applies on CUDA only; on {device} the model parts run in float32")
        if "kernels.compiled_seq_lens" in set_keys and not any(compiles_per_shape(k, device) for k in compiled_keys()):
            raise ConfigError(f"kernels.compiled_seq_lens applies to kernels compiled per shape ("
                              f"{', '.join(compiled_keys())} on CUDA); on {device} they run eagerly at every length")
    _check_memory(cfg, device)
    if device == "cpu" and preset == "gpu":
        raise ConfigError("the gpu latency preset needs CUDA; use --preset tiny (the CPU default) or micro")
    return device, preset, cfg, results_file(opts, preset, device)


def _check_memory(cfg: LatencyConfig, device: str) -> None:
    """Refuse (one line) model parts that cannot fit in the device's memory (closed-form lower bound); the kernel
    and position parts are guarded by kernels.check_mb / caps and write oom rows."""
    cuda = is_cuda(device)
    if "train" in cfg.parts:
        db = {"dtype_bytes": 2 if cuda and cfg.train.amp else 4, "param_dtype_bytes": 4}
        for c in cfg.train.choices:
            m = train_model_config(cfg.train, c)
            check_fits(estimate_memory_bytes(m, batch=cfg.train.batch, seq_len=cfg.train.seq_len, training=True,
                                             **db), device, what=f"the train part's {c!r} step",
                       hint="train.batch or model.*")
    d = cfg.decode
    el = DTYPES[d.dtype].itemsize if cuda else 4
    for layout in d.layouts:
        m = decode_model_config(d, layout)
        if "decode" in cfg.parts:
            check_fits(estimate_memory_bytes(m, batch=d.batch, seq_len=1, kv_cache_len=max(d.contexts),
                                             training=False, dtype_bytes=el), device,
                       what=f"decoding ({layout}) at context {max(d.contexts)}", hint="decode.batch or decode.contexts")
        if "prefill" in cfg.parts:
            check_fits(estimate_memory_bytes(m, batch=d.prefill_batch, seq_len=max(d.prompt_lens),
                                             kv_cache_len=max(d.prompt_lens), training=False, dtype_bytes=el), device,
                       what=f"prefill ({layout}) of {max(d.prompt_lens)} tokens", hint="decode.prompt_lens")
    s = cfg.stream
    if "stream" in cfg.parts and "dense" in s.modes:
        for layout in s.layouts:
            check_fits(estimate_memory_bytes(stream_model_config(cfg, layout), batch=d.batch, seq_len=1,
                                             kv_cache_len=max(s.tokens), training=False, dtype_bytes=el), device,
                       what=f"streaming ({layout}, dense) {max(s.tokens)} tokens",
                       hint="stream.tokens or stream.modes")


def _task_ids(cfg: LatencyConfig) -> list[str]:
    """``kernel-<key>`` per attention key of the kernel part, then one task per other part."""
    ids = []
    for part in PARTS:
        if part in cfg.parts:
            ids += [f"kernel-{k}" for k in kernel_keys(cfg)] if part == "kernel" else [part]
    return ids


class Latency(Suite[LatencyConfig]):
    """The parts in order, under their time budgets; every task (an attention key's kernel sweep, a part) is claimed
    at the start, then the claimed ones are measured together (the kernel part shape-major across keys, sharing
    inputs and references); resume and failure rows are per measurement (:meth:`Ctx.measure`)."""

    name = SUITE
    tf32 = None  # set in measure_claimed: matmuls only
    torchrun = ("the latency suite measures one process per GPU; spread it with --launcher gpus or slurm instead of "
                "--nproc-per-node")
    whole_run_claims = True

    def plan(self, opts) -> Plan[LatencyConfig]:
        device, preset, cfg, out = _setup(opts)
        tasks = [SuiteTask(t, t.replace("-", " ", 1)) for t in _task_ids(cfg)]
        return Plan(device, preset, cfg, out, tasks, cpu_threads=cfg.cpu_threads)

    def measure_claimed(self, run: Run[LatencyConfig], tasks: list[SuiteTask]) -> None:
        device, cfg = run.device, _only(run.cfg, run.opts.only)
        if len(tasks) < len(_task_ids(cfg)):
            cfg = _only(cfg, tuple(t.id for t in tasks))
        clock = Clock(cfg.budget_s)
        if is_cuda(device) or any(compiles_per_shape(k, device) for k in compiled_keys()):
            set_compile_limits()
        if is_cuda(device):
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 stays fp32 (bf16/fp16 are what the GPU preset times)
        counts = _count(cfg, device)
        prog = start_progress(run.opts.progress)
        ctx = Ctx(cfg, device, run.writer, prog, run.plan.preset, clock)
        run.state.update(clock=clock, device_name=ctx.device_name)
        try:
            for part in PARTS:
                if part not in cfg.parts:
                    continue
                if prog is not None:
                    ctx.task = prog.add_task(f"latency {part}", total=counts[part], info="")
                clock.start_part(_part_budget(cfg, part))
                RUNNERS[part](ctx)
                if prog is not None:
                    prog.update(ctx.task, completed=counts[part], info="done")
        finally:
            if prog is not None:
                prog.stop()

    def summary(self, run: Run[LatencyConfig]) -> None:
        clock = run.state.get("clock")
        if clock is None:  # nothing was measured here
            return
        msg = (f"latency ({run.plan.preset}, {run.device}: {run.state['device_name']}): {clock.elapsed():.0f} s; "
               f"results in {run.plan.results}")
        if clock.skipped:
            left = ", ".join(f"{n} {p}" for p, n in clock.skipped.items())
            keys = ", ".join(dict.fromkeys(["budget_s"] + [PART_BUDGETS[p] for p in clock.skipped]))
            msg += (f"\nlatency: time budget reached, {left} measurement(s) left for later: re-run the same command "
                    f"to resume (or raise the budgets with --set: {keys}; 0 = no limit)")
        sys.stderr.write(msg + "\n")


def _only(cfg: LatencyConfig, only: tuple[str, ...]) -> LatencyConfig:
    """The config restricted to the chosen tasks (parts, and attention keys of the kernel part)."""
    if not only:
        return cfg
    chosen = select_tasks(_task_ids(cfg), only, "latency task")
    keys = tuple(k for k in kernel_keys(cfg) if f"kernel-{k}" in chosen)
    parts = tuple(p for p in cfg.parts if p in chosen or (p == "kernel" and keys))
    return replace(cfg, parts=parts, kernels=replace(cfg.kernels, keys=keys) if keys else cfg.kernels)


SUITE_KIT = Latency()


def tasks(opts):
    """(results file, tasks): each attention key's kernel sweep, and each other part, is one task. A launcher gives
    every task a device of its own (one process per GPU), so no two measurements ever share a GPU."""
    return SUITE_KIT.tasks(opts)


def run(opts) -> Path:
    """Run the latency suite as ``opts`` (an :class:`ablate.plan.runner.RunOptions`) asks; returns the JSONL file."""
    return SUITE_KIT.run(opts)
