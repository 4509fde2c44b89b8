"""A small, reusable language-model training loop (used by the extrapolation and training suites).

    cfg = TrainConfig(steps=1000, batch_size=32, seq_len=64, lr=3e-3)
    result = train(model, cfg, Batches(corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed))
    result.status        # "ok" or "diverged" (result.diverged_step: the first step with a NaN/inf loss)
    result.history       # [{"step", "train_loss", "lr", "tokens", "elapsed"}, ...] every log_every steps
    train(..., on_log=print)  # each log point as it happens: {"step", "train_loss", "lr", "tokens", ...}
    result.stats         # tokens_per_s, peak_mem_bytes, elapsed_s, final_train_loss, ...

AdamW (decoupled weight decay on matrices only; none on vectors or on a matrix a module exempts in its
``no_weight_decay`` attribute, such as T5's relative-bias table: :func:`param_groups`) with linear warm-up and
cosine decay to ``min_lr``; gradient-norm clipping; bf16 autocast on CUDA (``amp="bf16"``; ignored on CPU);
optional ``torch.compile``. Inside a ``torchrun`` process group (:mod:`ablate.launchers.distributed`) the model is wrapped in
DistributedDataParallel and each rank trains on its slice of the same global batch, so the run is the single-device
run up to float rounding. Non-finite losses are detected without a host sync per step: the step losses stay on the
device and are checked every ``log_every`` steps, and the exact first bad step is reported. Timings synchronise
CUDA before reading the clock.
"""

from __future__ import annotations

import math
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]
BatchFn = Callable[[int], Batch]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0
    eval_every: int = 0  # 0: no periodic evaluation (only if an eval_fn is given)
    log_every: int = 50
    compile: bool = False
    amp: str | None = "bf16"  # "bf16" autocast on CUDA; None: full precision. Ignored on CPU.

    def __post_init__(self):
        from ablate.core.config import check_fields

        check_fields(self, "train.")  # one range table for every number (ablate.core.config.RANGES): nan, negative, ...
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise ConfigError(f"train: steps, batch_size and seq_len must be >= 1 (got {self.steps}, "
                              f"{self.batch_size}, {self.seq_len})")
        if self.amp not in (None, "bf16", "fp16"):
            raise ConfigError(f"train.amp must be bf16, fp16 or none, got {self.amp!r}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError(f"train: lr must be > 0 and min_lr >= 0 (got {self.lr}, {self.min_lr})")


def refuse_cpu_amp(cfg: TrainConfig, overrides, device: str) -> None:
    """``--set train.amp=bf16`` on the CPU would be ignored (autocast is CUDA-only here): refuse it in one line."""
    if cfg.amp is not None and device != "cuda" and any(str(o).split("=", 1)[0].strip() == "train.amp"
                                                         for o in overrides):
        raise ConfigError(f"train.amp={cfg.amp} is mixed precision on CUDA only; on {device} training runs in "
                          "float32 (drop the setting, or run with --device cuda)")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``min_lr`` at the last step."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup - 1)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged"
    reason: str = ""
    steps: int = 0  # steps completed
    diverged_step: int | None = None
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token), computed in float32."""
    logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


NO_DECAY_ATTR = "no_weight_decay"


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the matrices trained without weight decay: those a module lists in its ``no_weight_decay`` attribute
    (a tuple of its own parameter names; a class attribute, so copies of the module keep it). The T5 relative-bias
    table (:class:`ablate.variants.positions.T5Bias`) lists its table: T5 trains every parameter with Adafactor and
    no weight decay, and the ALiBi paper's fairseq baselines use fairseq's default ``--weight-decay 0``."""
    out: set[str] = set()
    for mod_name, mod in model.named_modules():
        for p_name in getattr(mod, NO_DECAY_ATTR, ()) or ():
            out.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``decay`` (matrices: linear weights, the token embedding / tied head, a learned position
    table) with ``weight_decay``; ``no_decay`` (vectors: norm gains, biases; and the matrices of
    :func:`no_decay_names`) with 0. Every group shares the one learning rate (T5 uses one rate for all parameters
    too). Each group carries ``names`` (for tests and logs); empty groups are dropped."""
    skip = no_decay_names(model)
    decay, no_decay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        dst = no_decay if p.dim() < 2 or name in skip else decay
        dst[0].append(p)
        dst[1].append(name)
    groups = [{"params": decay[0], "names": decay[1], "weight_decay": weight_decay, "group": "decay"},
              {"params": no_decay[0], "names": no_decay[1], "weight_decay": 0.0, "group": "no_decay"}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (decoupled weight decay on matrices; none on vectors or on the matrices a
    module exempts, such as T5's bias table)."""
    kw: dict[str, Any] = {"lr": cfg.lr, "betas": tuple(cfg.betas)}
    if device.type == "cuda":
        kw["fused"] = True
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kw)


def autocast_for(device: torch.device, amp: str | None):
    """bf16/fp16 autocast on CUDA; a no-op elsewhere (CPU autocast is slower than fp32 for these sizes)."""
    if device.type != "cuda" or amp is None:
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_maxrss"


def _progress_task(progress: Any, description: str, total: int):
    """(progress, task, owned): a rich progress bar task; ``progress`` may be True, False or a rich Progress."""
    if progress is None or progress is False:
        return None, None, False
    owned = False
    if progress is True:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            transient=True)
        progress.start()
        owned = True
    task = progress.add_task(description, total=total, info="")
    return progress, task, owned


def log_entry(h: dict) -> dict:
    """What ``on_log`` receives for a :attr:`TrainResult.history` entry: ``step`` as steps completed (the training
    suite's ``curve.step``), ``train_loss``, ``lr``, ``tokens``, ``elapsed`` (training seconds) and
    ``tokens_per_s`` (tokens / elapsed; None before any time has passed)."""
    elapsed = h.get("elapsed") or 0.0
    return {"step": int(h["step"]) + 1, "train_loss": h["train_loss"], "lr": h["lr"], "tokens": h["tokens"],
            "elapsed": h.get("elapsed"), "tokens_per_s": h["tokens"] / elapsed if elapsed > 0 else None}


def train(model: nn.Module, cfg: TrainConfig, batches: BatchFn, *, device: str | torch.device | None = None,
          loss_fn: LossFn = lm_loss, eval_fn: Callable[[nn.Module], dict] | None = None,
          progress: Any = False, description: str = "train",
          on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps on ``batches(step) -> (x, y)``; returns a :class:`TrainResult`.

    ``eval_fn(model) -> dict`` runs (under ``no_grad``, in eval mode) every ``cfg.eval_every`` steps and at the end.
    ``progress``: False, True (own rich bar) or a running ``rich.progress.Progress`` to add a task to.
    ``on_log(entry)``: called at each log point with :func:`log_entry` of the new history entry, and after each
    evaluation with ``{"step": steps completed, **eval_fn(model)}`` (live logging, :mod:`ablate.store.livelog`); on the
    main rank only. It sees the numbers the result keeps and changes nothing the training does.
    """
    from ablate.launchers import distributed

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    model.train()
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg, device)
    dinfo = distributed.current()
    fwd: nn.Module = model
    if dinfo.enabled:
        from torch.nn.parallel import DistributedDataParallel

        distributed.check_batch(cfg.batch_size, dinfo.world_size)
        # DDP broadcasts rank 0's initial weights, then averages gradients over the ranks every backward.
        fwd = DistributedDataParallel(model, device_ids=[device.index if device.index is not None
                                                         else torch.cuda.current_device()]
                                      if device.type == "cuda" else None)
        if not dinfo.is_main:  # rank 0 evaluates, shows progress and logs; the others only train
            eval_fn, progress, on_log = None, False, None
    fwd = torch.compile(fwd) if cfg.compile else fwd
    amp = cfg.amp if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    params = [p for p in model.parameters() if p.requires_grad]

    result = TrainResult(status="ok")
    prog, task, owned = _progress_task(progress, description, cfg.steps)
    pending: list[tuple[int, torch.Tensor]] = []  # (step, loss on device) since the last check
    tokens = 0
    train_time = 0.0  # seconds spent in training steps (evaluation excluded)
    first_step_s = None
    sync(device)
    t_mark = time.perf_counter()

    def run_eval(step: int) -> None:
        nonlocal t_mark, train_time
        sync(device)
        train_time += time.perf_counter() - t_mark
        model.eval()
        with torch.no_grad(), autocast_for(device, amp):
            out = dict(eval_fn(model))
        model.train()
        out["step"] = step
        result.evals.append(out)
        if on_log is not None:
            on_log(dict(out))
        sync(device)
        t_mark = time.perf_counter()

    def check(step: int) -> bool:
        """Flush the pending losses; log; False when one was not finite."""
        nonlocal t_mark, train_time, first_step_s
        if not pending:
            return True
        # one host sync for the whole interval; the global batch's loss = the mean of the ranks' (equal-size) losses
        values = distributed.mean_across(torch.stack([l for _, l in pending]), dinfo).tolist()
        sync(device)
        now = time.perf_counter()
        elapsed = train_time + (now - t_mark)
        for (s, _), v in zip(pending, values):
            if not math.isfinite(v):
                result.status, result.diverged_step = "diverged", s
                result.steps = s  # steps completed with a finite loss
                result.reason = f"loss {v} at step {s}"
                pending.clear()
                return False
        s_last, v_last = pending[-1][0], values[-1]
        result.history.append({"step": s_last, "train_loss": v_last, "lr": lr_at(s_last, cfg), "tokens": tokens,
                               "elapsed": elapsed})
        if on_log is not None:
            on_log(log_entry(result.history[-1]))
        if prog is not None:
            prog.update(task, completed=s_last + 1, info=f"loss {v_last:.3f}")
        pending.clear()
        return True

    try:
        for step in range(cfg.steps):
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = batches(step)
            x, y = distributed.shard_batch(x, dinfo), distributed.shard_batch(y, dinfo)
            with autocast_for(device, amp):
                loss = loss_fn(fwd, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip and cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            tokens += x.numel() * dinfo.world_size
            pending.append((step, loss.detach()))
            if step == 0:
                sync(device)
                first_step_s = time.perf_counter() - t_mark  # includes compilation / warm-up
            last = step == cfg.steps - 1
            if (cfg.log_every and (step + 1) % cfg.log_every == 0) or last or step == 0:
                if not check(step):
                    break
            result.steps = step + 1
            if eval_fn is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and not last:
                run_eval(step + 1)
        if result.ok and eval_fn is not None:
            run_eval(result.steps)
    finally:
        if prog is not None:
            if owned:
                prog.stop()
            else:
                prog.remove_task(task)

    sync(device)
    train_time += time.perf_counter() - t_mark
    peak, peak_kind = _peak_mem(device)
    steady_tokens = tokens - (cfg.batch_size * cfg.seq_len if first_step_s is not None else 0)
    steady_time = train_time - (first_step_s or 0.0)
    result.stats = {
        "steps": result.steps,
        "tokens": tokens,
        "elapsed_s": train_time,
        "first_step_s": first_step_s,
        "tokens_per_s": tokens / train_time if train_time > 0 else None,
        "steady_tokens_per_s": steady_tokens / steady_time if steady_time > 0 and steady_tokens > 0 else None,
        "peak_mem_bytes": peak,
        "peak_mem_kind": peak_kind,
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        "amp": amp,
        "compile": bool(cfg.compile),
        "device": str(device),
        "world_size": dinfo.world_size,
        "dist_backend": dinfo.backend,
    }
    return result


__all__ = ["TrainConfig", "TrainResult", "train", "log_entry", "lr_at", "lm_loss", "make_optimizer", "param_groups",
           "no_decay_names", "autocast_for", "sync"]
