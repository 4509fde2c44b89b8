"""What every measurement part shares: the run context (:class:`Ctx`: device, results writer, progress, clock,
timing settings, and :meth:`Ctx.measure`, the one way a measurement becomes a row), the time budget
(:class:`Clock`) and the row helpers."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ablate.core.config import ModelConfig, flatten
from ablate.store.env import fingerprint
from ablate.errors import AblateError
from ablate.store.results import ResultWriter, read_rows, row_key, status_from_exception
from ablate.core.timing import bench, is_cuda

from .config import LatencyConfig
from .constants import PART_BUDGETS


def _device_name(device: str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name()
    return f"{fingerprint().get('cpu') or 'cpu'} ({torch.get_num_threads()} threads)"


def classify_failure(exc: BaseException, entry_available: bool = True) -> tuple[str, str]:
    """(status, reason): a kernel that exists here but refuses these inputs is ``unsupported`` (terminal), not
    ``unavailable`` (retried on resume, meant for a missing package or device)."""
    status, reason = status_from_exception(exc)
    if status == "unavailable" and entry_available:
        status = "unsupported"
    return status, reason


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def timing_metrics(t) -> dict[str, Any]:
    """The timing columns every ok row carries; ``load_1m`` (the 1-minute load average) shows when a CPU timing was
    taken on a busy machine."""
    return {"metric": "time_ms", "value": t.median_ms, "unit": "ms", "time_ms": t.median_ms, "p20_ms": t.p20_ms,
            "p80_ms": t.p80_ms, "iqr_ms": t.iqr_ms, "mean_ms": t.mean_ms, "reps": t.reps, "samples": t.samples,
            "timing": t.method, "load_1m": _load_1m()}


def empty_metrics() -> dict[str, Any]:
    return {"metric": "time_ms", "value": None, "unit": "ms"}


class Clock:
    """Deadlines for the whole run and for each part (``budget_s`` 0 = none)."""

    def __init__(self, budget_s: float):
        self.t0 = time.perf_counter()
        self.end = self.t0 + budget_s if budget_s and budget_s > 0 else math.inf
        self.part_end = math.inf
        self.skipped: dict[str, int] = {}

    def start_part(self, budget_s: float) -> None:
        now = time.perf_counter()
        self.part_end = min(self.end, now + budget_s if budget_s and budget_s > 0 else math.inf)

    def over(self) -> bool:
        return time.perf_counter() > self.part_end

    def run_over(self) -> bool:
        """Whether the whole run's budget (not only the part's) is spent."""
        return time.perf_counter() > self.end

    def skip(self, part: str, n: int = 1) -> None:
        self.skipped[part] = self.skipped.get(part, 0) + n

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class Ctx:
    """What every part needs: device, writer, progress, clock, and the timing settings."""

    def __init__(self, cfg: LatencyConfig, device: str, writer: ResultWriter, progress: Any, preset: str,
                 clock: Clock):
        self.cfg, self.device, self.writer, self.progress, self.preset, self.clock = (cfg, device, writer, progress,
                                                                                        preset, clock)
        self.device_name = _device_name(device)
        self.task = None
        self.prior = _prior_status(writer.results)

    def base_key(self, part: str) -> dict[str, Any]:
        return {"part": part, "device": self.device, "device_name": self.device_name}

    def advance(self, n: int = 1, info: str = "") -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=n, info=info)

    def done(self, key: dict[str, Any]) -> bool:
        return self.writer.done(key)

    def same_status(self, status: str, key: dict[str, Any], reason: str) -> bool:
        """A row with this status and this exact reason is already stored: nothing changed, write nothing."""
        return self.prior.get(row_key(key)) == (status, " ".join(str(reason).split()))

    def write(self, status: str, key: dict[str, Any], metrics: dict[str, Any], config: Any = None,
              reason: str = "") -> None:
        if status in ("unavailable", "skipped") and self.same_status(status, key, reason):
            return  # still unavailable / still over budget for the same reason: a resumed run writes nothing new
        self.writer.write(status, key, metrics, config, reason=reason)

    def skip_over_budget(self, part: str, keys: Iterable[dict[str, Any]], config: Any) -> None:
        """``skipped`` rows for ``keys``: the time budget ran out before them (a resumed run measures them)."""
        keys = list(keys)
        self.clock.skip(part, len(keys))
        key = "budget_s" if self.clock.run_over() else PART_BUDGETS[part]
        what = "the run's time budget" if key == "budget_s" else f"the {part} part's time budget"
        reason = (f"budget: {what} ran out before this measurement ({key}); re-run the same command to resume, or "
                  f"raise it with --set {key}=SECONDS (0: no limit)")
        for key in keys:
            self.write("skipped", key, empty_metrics(), config, reason=reason)

    def measure(self, part: str, key: dict[str, Any], fn: Callable[[], dict[str, Any]], config: Any, *,
                info: str = "", error_config: Any = None, available: Callable[[], bool] | None = None,
                cleanup: Callable[[], None] | None = None) -> None:
        """One measurement of ``part``, one row under ``key``, the way every part takes it: nothing when the row is
        stored already (resume); a skip, left for a resumed run, once the part's time budget is spent; else the
        ``ok`` row of the metrics ``fn()`` returns, or the status row of the exception it raised (``available()``:
        whether the measured entry exists here, see :func:`classify_failure`; ``error_config``: the status row's config,
        default ``config``). ``cleanup`` runs after either."""
        if self.done(key):
            self.advance(1)
            return
        if self.clock.over():
            self.skip_over_budget(part, [key], config if error_config is None else error_config)
            self.advance(1)
            return
        self.advance(0, info)
        try:
            self.write("ok", key, fn(), config)
        except Exception as exc:
            status, reason = classify_failure(exc, True if available is None else available())
            self.write(status, key, empty_metrics(), config if error_config is None else error_config,
                       reason=reason)
        finally:
            if cleanup is not None:
                cleanup()
        self.advance(1)

    def write_failure(self, exc: BaseException, keys: Iterable[dict[str, Any]], config: Any) -> None:
        """The status row of ``exc`` for each of ``keys``: a setup they all needed (inputs, a model) failed."""
        status, reason = classify_failure(exc)
        for key in keys:
            self.write(status, key, empty_metrics(), config, reason=reason)

    def bench(self, fn: Callable[[], Any], grad_to_none=None, est_ms: float | None = None):
        """``triton.testing.do_bench``'s method with its warm-up and rep times (CUDA), ``blocked_autorange`` (CPU).
        The only change: a call slower than ``rep_ms / min_reps`` gets ``min_reps`` timed reps, where do_bench alone
        would give it ``int(rep_ms / estimate)`` (possibly 1). Faster calls are timed exactly as a bare do_bench."""
        k = self.cfg.kernels
        rep = k.rep_ms
        min_run = k.min_run_time
        if est_ms is not None and est_ms > 0:
            # + 0.5: do_bench's own estimate includes the L2 flush and its rep count is rounded down
            rep = max(rep, (k.min_reps + 0.5) * est_ms)
            # CPU: enough blocks for a spread even when one call outlasts min_run_time (capped at 2 s)
            min_run = max(min_run, min(2.0, k.min_reps * est_ms / 1e3))
        return bench(fn, self.device, grad_to_none=grad_to_none, warmup_ms=k.warmup_ms, rep_ms=rep,
                     min_run_time=min_run)


def _prior_status(path: Path) -> dict[str, tuple[str, str]]:
    try:
        rows = read_rows(path, missing_ok=True)
    except AblateError:
        return {}
    return {r["row_key"]: (r.get("status"), r.get("reason")) for r in rows if r.get("row_key")}


def set_compile_limits() -> None:
    """Per-shape recompiles of compiled kernels must not hit dynamo's recompile limit (which would silently fall
    back to eager FlexAttention and time that instead)."""
    try:
        import torch._dynamo.config as dc
    except Exception:
        return
    for name, value in (("recompile_limit", 1024), ("cache_size_limit", 1024),
                        ("accumulated_recompile_limit", 8192), ("accumulated_cache_size_limit", 8192)):
        if hasattr(dc, name):
            try:
                setattr(dc, name, max(int(getattr(dc, name)), value))
            except Exception:
                pass



def model_id(mcfg: ModelConfig) -> str:
    """Hash of every model setting (a row key field of the model parts: a changed model is a new measurement)."""
    return row_key(flatten(mcfg))
