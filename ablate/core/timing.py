"""Honest timing of a callable on CUDA or CPU.

CUDA (the ``triton.testing.do_bench`` method; triton's own function when triton imports):

1. one call, synchronise (compilation and autotuning happen here, outside the timed reps);
2. estimate the time of one call from 5 calls (each after an L2 flush), to size warm-up and repetitions;
3. warm-up: ``max(1, int(warmup_ms / estimate))`` calls; then ``max(1, int(rep_ms / estimate))`` repetitions, each
   one: clear ``grad_to_none``, flush L2 by zeroing a 256 MiB int32 buffer (triton's
   ``get_empty_cache_for_benchmark`` / ``clear_cache``), record a CUDA start event, call, record a CUDA end event
   (the flush and the grad reset are outside the events);
4. one synchronise at the end; per-rep times from the event pairs; median with the 20th and 80th percentiles.

``warmup_ms`` / ``rep_ms`` default to do_bench's own defaults (25 ms / 100 ms, :data:`DO_BENCH_WARMUP_MS`,
:data:`DO_BENCH_REP_MS`). Shorter settings are not a cheaper version of the same measurement: on an H100 a 1.8 ms
``sdpa`` forward timed through do_bench with 5 ms / 30 ms (2 warm-up calls, ~16 reps) came out 7% *faster* than a
bare ``do_bench`` of the same call, and unrepeatable (three rounds 1.60 / 1.67 / 1.78 ms against 1.798 ms ± 0.05%):
flush and procedure were identical, only the warm-up and rep time differed, so those reps ran before the GPU had
settled at the clock it sustains under load. The latency suite therefore uses the defaults
(``scripts/bench_overhead.py`` checks the agreement).

Host wall clocks are never put around asynchronous work: the only ``perf_counter`` use is :func:`first_call`,
which synchronises the device before reading the clock (it measures compile time, in seconds).

CPU: ``torch.utils.benchmark.Timer.blocked_autorange`` (median, IQR; p20/p80 of its blocks) with the process's
thread count (``Timer`` defaults to one thread, which would understate a multi-core CPU).

Peak memory (CUDA): ``torch.cuda.reset_peak_memory_stats`` then ``max_memory_allocated()`` minus the memory already
allocated before the call, i.e. what the call itself needs on top of its inputs (outputs and workspace included).
CPU: not measured (no allocator statistics), reported as ``None``.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 (H100: 50 MB), as in triton
DO_BENCH_WARMUP_MS = 25.0  # triton.testing.do_bench's defaults
DO_BENCH_REP_MS = 100.0


@dataclass
class Timing:
    """One timing result, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    mean_ms: float
    iqr_ms: float  # p75 - p25
    reps: int
    method: str  # "triton.do_bench" | "cuda_events" | "torch.utils.benchmark"
    samples: int = 0  # timed samples the quantiles come from (blocks of blocked_autorange, calls otherwise)

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy."""
    s = sorted(xs)
    if not s:
        raise ValueError("no samples")
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times_ms: Sequence[float], method: str, reps: int | None = None) -> Timing:
    times = [float(t) for t in times_ms]
    return Timing(median_ms=_quantile(times, 0.5), p20_ms=_quantile(times, 0.2), p80_ms=_quantile(times, 0.8),
                  mean_ms=statistics.fmean(times), iqr_ms=_quantile(times, 0.75) - _quantile(times, 0.25),
                  reps=len(times) if reps is None else reps, method=method, samples=len(times))


def triton_available() -> bool:
    try:
        import triton.testing  # noqa: F401
    except Exception:
        return False
    return True


def is_cuda(device: str | torch.device | None) -> bool:
    return torch.device(device).type == "cuda" if device is not None else False


def sync(device: str | torch.device | None) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def _clear_grads(grad_to_none: Sequence[torch.Tensor] | None) -> None:
    if grad_to_none is not None:
        for x in grad_to_none:
            x.grad = None


# -- CUDA -------------------------------------------------------------------------------------------------------

def bench_cuda(fn: Callable[[], Any], *, warmup_ms: float = DO_BENCH_WARMUP_MS, rep_ms: float = DO_BENCH_REP_MS,
               grad_to_none: Sequence[torch.Tensor] | None = None, use_triton: bool | None = None) -> Timing:
    """Time ``fn`` on the current CUDA device: median and p20/p80 over reps with an L2 flush before each.

    With triton: ``triton.testing.do_bench(fn, warmup, rep, grad_to_none, return_mode="all")`` (every per-rep time,
    statistics computed here). A triton too old for ``return_mode="all"`` (< 3.2) or no triton: the same procedure
    written out with CUDA events (:func:`_event_times`), one run either way."""
    if use_triton is None:
        use_triton = triton_available()
    if use_triton:
        import triton.testing

        try:  # triton >= 3.2: every per-rep time
            times = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                            return_mode="all")
        except (AssertionError, ValueError, TypeError):
            times = None  # older triton refuses return_mode="all" before running anything
        if isinstance(times, (list, tuple)) and times:
            return summarize(times, "triton.do_bench")
    return summarize(_event_times(fn, warmup_ms=warmup_ms, rep_ms=rep_ms, grad_to_none=grad_to_none), "cuda_events")


def _event_times(fn: Callable[[], Any], *, warmup_ms: float, rep_ms: float,
                 grad_to_none: Sequence[torch.Tensor] | None) -> list[float]:
    """triton.testing.do_bench's procedure with CUDA events, for machines without triton."""
    fn()
    torch.cuda.synchronize()
    cache = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        cache.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end) / 5, 1e-6)
    n_warmup = max(1, int(warmup_ms / estimate_ms))
    n_repeat = max(1, int(rep_ms / estimate_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    for _ in range(n_warmup):
        fn()
    for i in range(n_repeat):
        _clear_grads(grad_to_none)
        cache.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def bench_cuda_events(fn: Callable[[], Any], *, n: int, flush_l2: bool = True,
                      before: Callable[[], Any] | None = None) -> Timing:
    """Time exactly ``n`` calls with a CUDA event pair each (``before`` runs outside the events, e.g. to reset a
    KV cache to the context being measured). For state-changing calls where do_bench's free rep count won't do."""
    cache = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda") if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        if before is not None:
            before()
        if cache is not None:
            cache.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return summarize([s.elapsed_time(e) for s, e in zip(starts, ends)], "cuda_events")


# -- CPU --------------------------------------------------------------------------------------------------------

def bench_cpu(fn: Callable[[], Any], *, min_run_time: float = 0.2,
              grad_to_none: Sequence[torch.Tensor] | None = None, num_threads: int | None = None) -> Timing:
    """``torch.utils.benchmark.Timer(...).blocked_autorange``: median and IQR of its blocks (ms)."""
    from torch.utils.benchmark import Timer

    if grad_to_none:
        def stmt_fn() -> None:
            _clear_grads(grad_to_none)
            fn()
    else:
        stmt_fn = fn
    timer = Timer(stmt="stmt_fn()", globals={"stmt_fn": stmt_fn},
                  num_threads=num_threads or torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times_ms = [t * 1e3 for t in m.times]
    t = summarize(times_ms, "torch.utils.benchmark", reps=len(m.times) * m.number_per_run)
    t.median_ms, t.iqr_ms = m.median * 1e3, m.iqr * 1e3
    return t


def bench_cpu_calls(fn: Callable[[], Any], *, n: int, before: Callable[[], Any] | None = None) -> Timing:
    """Time exactly ``n`` calls on CPU (synchronous work), one clock pair per call; ``before`` runs untimed."""
    times = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times, "perf_counter (cpu, synchronous)")


# -- front door -------------------------------------------------------------------------------------------------

def bench(fn: Callable[[], Any], device: str | torch.device, *, grad_to_none: Sequence[torch.Tensor] | None = None,
          warmup_ms: float = DO_BENCH_WARMUP_MS, rep_ms: float = DO_BENCH_REP_MS, min_run_time: float = 0.2) -> Timing:
    """Time ``fn`` the right way for ``device`` (CUDA: do_bench method; CPU: torch.utils.benchmark)."""
    if is_cuda(device):
        return bench_cuda(fn, warmup_ms=warmup_ms, rep_ms=rep_ms, grad_to_none=grad_to_none)
    return bench_cpu(fn, min_run_time=min_run_time, grad_to_none=grad_to_none)


def bench_calls(fn: Callable[[], Any], device: str | torch.device, *, n: int,
                before: Callable[[], Any] | None = None) -> Timing:
    """Exactly ``n`` timed calls, each preceded by an untimed ``before`` (decode steps on a reset KV cache)."""
    if is_cuda(device):
        return bench_cuda_events(fn, n=n, before=before)
    return bench_cpu_calls(fn, n=n, before=before)


def first_call(fn: Callable[[], Any], device: str | torch.device | None) -> float:
    """Seconds taken by one synchronised call (for the cold, compiling first call of a compiled variant)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def peak_memory(fn: Callable[[], Any], device: str | torch.device) -> int | None:
    """Bytes the call needs on top of what is already allocated (CUDA); ``None`` on CPU (not measurable here)."""
    if not is_cuda(device):
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def peak_memory_and_ms(fn: Callable[[], Any], device: str | torch.device) -> tuple[int | None, float]:
    """One call giving both :func:`peak_memory` (``None`` on CPU) and its time in ms (CUDA events around the call;
    on CPU, where the work is synchronous, a ``perf_counter`` pair). The time is only meant to size repetitions."""
    if not is_cuda(device):
        t0 = time.perf_counter()
        fn()
        return None, (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base), start.elapsed_time(end)


def free_memory(device: str | torch.device | None, collect: bool = False) -> None:
    """Release cached blocks after an OOM or a big shape, so the next measurement starts clean. ``collect`` also
    runs the garbage collector (slow with torch.compile loaded: use it after an OOM, not after every call)."""
    if collect:

        gc.collect()
    if is_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or isinstance(exc, MemoryError))


__all__ = ["Timing", "summarize", "bench", "bench_cuda", "bench_cpu", "bench_calls", "bench_cuda_events",
           "bench_cpu_calls", "first_call", "peak_memory", "peak_memory_and_ms", "free_memory", "is_oom",
           "triton_available", "sync", "L2_FLUSH_BYTES", "DO_BENCH_WARMUP_MS", "DO_BENCH_REP_MS"]
