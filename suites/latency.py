"""Latency: speed, memory and FLOP/s of every attention kernel, position variant and model choice, measured honestly.

    ablate run --suite latency                          # `cpu` preset on CPU (<= 3 min on 2 cores), `gpu` on CUDA
    ablate run --suite latency --preset gpu --out results/latency
    ablate run --suite latency --preset micro --set kernels.keys=sdpa,naive
    ablate report results/latency/gpu.jsonl --out reports/latency/gpu

Five parts, each a list of measurements written as rows as they finish (see ``docs/latency.md``):

* ``kernel``: every attention key x pass (``fwd``, ``bwd``, ``fwd_bwd``) x shape. Shapes: sequence lengths at a fixed
  number of tokens per batch (batch = tokens / n), heads = hidden / head_dim, causal and not, MHA; plus feature
  shapes (GQA, MQA, a second dtype, ALiBi bias, sliding window) at one length. Every kernel is first checked against
  the ``naive`` reference on the same inputs (a slice of batch 0 and the first heads, in float32 on CUDA / float64 on
  CPU; ``linear`` against an O(n²) formulation of linear attention); a kernel off by more than the tolerance gets an
  ``error`` row and is not timed, so a fast wrong kernel cannot win. Unavailable keys get one ``unavailable`` row.
* ``position``: each position variant's hooks on their own (RoPE family ``rotate`` of q and k, ALiBi / T5 dense bias
  build, absolute ``embed``), and all hooks together.
* ``train``: one training step (forward, backward, grad clipping, AdamW) of the reference model for a few
  attention / position / norm / activation choices: tokens/s, MFU (against the bf16 peak of ``ablate.flops``; the
  peak used is in the row) and peak memory.
* ``decode``: per-token latency with the KV cache at several context lengths for MHA / GQA / MQA, the cache's
  measured bytes next to the closed form ``2 · layers · kv_heads · head_dim · n · bytes`` (× batch).
* ``prefill``: latency of the forward pass that fills the cache, vs prompt length.

Rows: ``metric="time_ms"``, ``value`` = median milliseconds (``unit="ms"``), ``p20_ms`` / ``p80_ms`` the spread,
plus part-specific metrics (``tflops``, ``peak_mem_bytes``, ``rel_err``, ``backend``, ``tokens_per_s``, ``mfu``,
``kv_bytes``...). Key fields: ``part`` and the shape / variant fields, ``device`` and ``device_name``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ablate.config import ModelConfig, apply_overrides, flatten
from ablate.errors import AblateError, ConfigError
from ablate.flops import attention_flops, kv_cache_bytes, matmul_params, mfu, peak_tflops, step_flops, tflops
from ablate.progress import start_progress
from ablate.registry import ATTENTION, POSITION, load_all
from ablate.results import ResultWriter, read_rows, row_key, status_from_exception
from ablate.runstate import Claims
from ablate.timing import (DO_BENCH_REP_MS, DO_BENCH_WARMUP_MS, bench, bench_calls, first_call, free_memory,
                           is_cuda, peak_memory_and_ms, sync)

SUITE = "latency"
PARTS = ("kernel", "position", "train", "decode", "prefill")
PASSES = ("fwd", "bwd", "fwd_bwd")
LAYOUTS = ("mha", "gqa", "mqa")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}
# Relative L2 error allowed against the reference (computed in float32 on CUDA, float64 on CPU).
FWD_TOL = {"float64": 1e-8, "float32": 1e-3, "bfloat16": 3e-2, "float16": 1e-2}
GRAD_TOL = {"float64": 1e-7, "float32": 3e-3, "bfloat16": 6e-2, "float16": 3e-2}
COMPILED_KEYS = ("flex",)  # keys that compile once per new shape (on CUDA; on CPU only with ABLATE_FLEX_COMPILE_CPU=1)


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class KernelSweep:
    keys: tuple[str, ...] = ()  # () = every registered attention key
    seq_lens: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384)
    compiled_seq_lens: tuple[int, ...] = ()  # lengths for keys that compile per shape (flex); () = seq_lens
    tokens: int = 16384  # tokens per batch: batch = tokens // seq_len
    hidden: int = 2048  # heads = hidden // head_dim
    head_dims: tuple[int, ...] = (64, 128)
    causal: tuple[bool, ...] = (False, True)
    dtype: str = "bfloat16"
    passes: tuple[str, ...] = PASSES
    # feature shapes: one length and head dim, causal
    feature_seq_len: int = 4096
    feature_head_dim: int = 128
    feature_passes: tuple[str, ...] = ("fwd", "fwd_bwd")
    layouts: tuple[str, ...] = ("gqa", "mqa")  # besides MHA
    gqa_group: int = 4  # query heads per kv head for GQA
    extra_dtypes: tuple[str, ...] = ("float16",)
    alibi: bool = True
    windows: tuple[int, ...] = (1024,)
    # Caps on the main grid, "key[/pass][/causal|full]:N": that key (pass, mask) is not measured at sequence
    # lengths above N, e.g. "sdpa_math:4096", "naive/bwd:8192", "linear/causal:8192". No row is written for a
    # capped measurement (as for lengths outside seq_lens); rows already in the results file stay.
    caps: tuple[str, ...] = ()
    # timing: triton.testing.do_bench's own warm-up and rep times (CUDA). Not a knob to save time: shorter ones
    # measure the GPU before its clock settles under load (see ablate.timing), so the suite would no longer agree
    # with a bare do_bench. Every timing setting applies to all parts (kernel, position, train, prefill).
    warmup_ms: float = DO_BENCH_WARMUP_MS
    rep_ms: float = DO_BENCH_REP_MS
    min_reps: int = 5  # a call slower than rep_ms / min_reps gets its rep time raised to this many timed reps
    min_run_time: float = 0.05  # CPU: torch.utils.benchmark blocked_autorange
    check: bool = True
    check_mb: int = 2048  # memory allowed for the reference slice's score matrices
    budget_s: float = 0.0  # stop starting new measurements after this long (0: no limit); re-run to resume


@dataclass(frozen=True)
class PositionSweep:
    keys: tuple[str, ...] = ()  # () = every registered position key
    seq_lens: tuple[int, ...] = (4096,)
    tokens: int = 16384
    n_heads: int = 16
    head_dim: int = 128
    budget_s: float = 0.0


# flex last: it compiles (tens of seconds) and a time budget cuts the tail first
DEFAULT_TRAIN_CHOICES = ("base", "attention=naive", "attention=flash_attn", "attention=linear", "position=alibi",
                         "position=none", "norm=layernorm", "activation=gelu", "attention=flex")


@dataclass(frozen=True)
class TrainSweep:
    model: ModelConfig = ModelConfig(d_model=1024, n_layers=8, n_heads=8, max_len=4096, train_len=2048)
    seq_len: int = 2048
    batch: int = 8
    amp: str | None = "bf16"  # autocast on CUDA (ignored on CPU)
    choices: tuple[str, ...] = DEFAULT_TRAIN_CHOICES  # "base" or "field=key" swaps applied to the model
    warmup_steps: int = 2
    budget_s: float = 0.0


@dataclass(frozen=True)
class DecodeSweep:
    model: ModelConfig = ModelConfig(d_model=1024, n_layers=8, n_heads=16, max_len=65536, train_len=2048)
    layouts: tuple[str, ...] = LAYOUTS
    gqa_group: int = 4
    contexts: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    batch: int = 8
    steps: int = 20  # timed decode steps per context (each at exactly that context: the cache is reset)
    warmup_steps: int = 3
    prompt_lens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    prefill_batch: int = 1
    dtype: str = "bfloat16"  # weights and cache (CUDA); CPU runs float32
    budget_s: float = 0.0


@dataclass(frozen=True)
class LatencyConfig:
    parts: tuple[str, ...] = PARTS
    kernels: KernelSweep = field(default_factory=KernelSweep)
    positions: PositionSweep = field(default_factory=PositionSweep)
    train: TrainSweep = field(default_factory=TrainSweep)
    decode: DecodeSweep = field(default_factory=DecodeSweep)
    budget_s: float = 0.0  # whole-run limit (0: none); parts past it are left for a resumed run
    seed: int = 0  # random inputs
    cpu_threads: int = 0  # CPU: torch threads for every measurement (0: torch's default); part of device_name


_CPU_MODEL = ModelConfig(d_model=128, n_layers=2, n_heads=4, max_len=4096, train_len=128)

PRESETS: dict[str, LatencyConfig] = {
    # Tests: a few seconds on CPU.
    "micro": LatencyConfig(
        kernels=KernelSweep(keys=("naive", "sdpa", "sdpa_math", "flex", "linear", "sliding_window", "xformers"),
                            seq_lens=(32, 64), tokens=128, hidden=32, head_dims=(16,), causal=(False, True),
                            dtype="float32", feature_seq_len=64, feature_head_dim=16, gqa_group=2, extra_dtypes=(),
                            windows=(16,), min_run_time=0.002, min_reps=1),
        positions=PositionSweep(keys=("none", "rope", "alibi", "sinusoidal"), seq_lens=(64,), tokens=128, n_heads=2,
                                head_dim=16),
        train=TrainSweep(model=ModelConfig(d_model=32, n_layers=1, n_heads=2, max_len=512, train_len=32),
                         seq_len=32, batch=2, choices=("base", "position=alibi"), warmup_steps=1),
        decode=DecodeSweep(model=ModelConfig(d_model=32, n_layers=1, n_heads=4, max_len=512, train_len=32),
                           gqa_group=2, contexts=(16, 32), batch=2, steps=3, warmup_steps=1, prompt_lens=(16, 32)),
    ),
    # CPU default: every CPU-capable attention key, <= 3 minutes on 2 cores.
    "cpu": LatencyConfig(
        kernels=KernelSweep(seq_lens=(128, 256, 512), tokens=1024, hidden=128, head_dims=(32, 64),
                            causal=(False, True), dtype="float32", feature_seq_len=256, feature_head_dim=32,
                            gqa_group=2, extra_dtypes=(), windows=(64,), min_run_time=0.05, budget_s=110.0),
        positions=PositionSweep(seq_lens=(512,), tokens=2048, n_heads=4, head_dim=32, budget_s=10.0),
        train=TrainSweep(model=_CPU_MODEL, seq_len=128, batch=8,
                         choices=("base", "attention=naive", "attention=linear", "position=alibi", "position=none",
                                  "norm=layernorm", "activation=gelu"), warmup_steps=1, budget_s=25.0),
        decode=DecodeSweep(model=replace(_CPU_MODEL, n_heads=4), gqa_group=2, contexts=(128, 256, 512, 1024),
                           batch=2, steps=8, warmup_steps=2, prompt_lens=(128, 256, 512, 1024), dtype="float32",
                           budget_s=12.0),
        budget_s=170.0,
    ),
    # CUDA default: one H100 in <= 9 minutes (bf16; 16k tokens per batch, hidden 2048, as in the FlashAttention papers).
    # Measured on an H100 (torch 2.11): ~415 s in all (kernels ~300 s, of which ~70 s flex compiles, ~60 s FA4
    # JIT compiles, ~45 s the launch-bound causal linear scan); the caps drop the slowest, least telling points
    # (unfused math at n >= 8k: OOM or ~0.2 s a call; naive's backward at 16k; the causal linear scan at 16k), and
    # calls slower than 33 ms get 3 timed reps, not 5.
    "gpu": LatencyConfig(
        kernels=KernelSweep(compiled_seq_lens=(2048, 16384), min_reps=3, budget_s=330.0,
                            caps=("sdpa_math:4096", "naive/bwd:8192", "naive/fwd_bwd:8192", "linear/causal:8192")),
        positions=PositionSweep(budget_s=15.0),
        train=TrainSweep(budget_s=75.0),
        decode=DecodeSweep(budget_s=45.0),
        budget_s=480.0,
    ),
}


def default_preset(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def _dtype_name(name: str) -> str:
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)})")
    return name


def _model_alias(overrides: Iterable[str]) -> list[str]:
    """``model.X=v`` sets the model of both model parts (``train.model.X`` and ``decode.model.X``), as it sets the
    model of the other suites."""
    out: list[str] = []
    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        if key.startswith("model.") and "=" in str(item):
            valid = [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)]
            if key not in valid:
                raise ConfigError(f"unknown setting {key!r}; valid model settings: {', '.join(valid)}")
            rest = str(item).split("=", 1)[1]
            out += [f"train.{key}={rest}", f"decode.{key}={rest}"]
        else:
            out.append(item)
    return out


def resolve(preset: str, overrides: Iterable[str] = ()) -> LatencyConfig:
    """The preset with ``--set`` overrides applied and checked (one-line errors)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown latency preset {preset!r}; valid: {', '.join(PRESETS)}")
    overrides = _model_alias(overrides)
    cfg = apply_overrides(PRESETS[preset], overrides)
    decided = {"train.model.train_len": "the train part trains at train.seq_len",
               "decode.model.n_kv_heads": "decode.layouts sets the KV heads (mha, gqa = n_heads / decode.gqa_group, "
                                          "mqa = 1)",
               "decode.model.causal": "decoding with a KV cache needs a causal model"}
    for item in overrides:
        k = str(item).split("=", 1)[0].strip()
        if k in decided:
            raise ConfigError(f"{k} cannot be set: {decided[k]}")
    load_all()
    for p in cfg.parts:
        if p not in PARTS:
            raise ConfigError(f"unknown latency part {p!r}; valid: {', '.join(PARTS)}")
    k = cfg.kernels
    for key in k.keys:
        ATTENTION.get(key)  # UnknownKeyError lists the valid keys
    for key in cfg.positions.keys:
        POSITION.get(key)
    for p in tuple(k.passes) + tuple(k.feature_passes):
        if p not in PASSES:
            raise ConfigError(f"unknown pass {p!r}; valid: {', '.join(PASSES)}")
    for lay in tuple(k.layouts) + tuple(cfg.decode.layouts):
        if lay not in LAYOUTS:
            raise ConfigError(f"unknown head layout {lay!r}; valid: {', '.join(LAYOUTS)}")
    kernels = replace(k, dtype=_dtype_name(k.dtype), extra_dtypes=tuple(_dtype_name(d) for d in k.extra_dtypes))
    cfg = replace(cfg, kernels=kernels, decode=replace(cfg.decode, dtype=_dtype_name(cfg.decode.dtype)))
    _parse_caps(k.caps)
    if k.min_reps < 1 or k.warmup_ms < 0 or k.rep_ms <= 0:
        raise ConfigError("kernels: min_reps must be >= 1, warmup_ms >= 0 and rep_ms > 0")
    for hd in tuple(k.head_dims) + (k.feature_head_dim,):
        if hd < 1 or k.hidden % hd:
            raise ConfigError(f"kernels.hidden={k.hidden} is not divisible by head_dim {hd}")
    if any(n < 1 for n in tuple(k.seq_lens) + (k.feature_seq_len,)) or k.tokens < 1:
        raise ConfigError("kernels: sequence lengths and tokens must be >= 1")
    if k.gqa_group < 1 or (k.hidden // k.feature_head_dim) % k.gqa_group:
        raise ConfigError(f"kernels.gqa_group={k.gqa_group} must divide the heads "
                          f"({k.hidden // k.feature_head_dim}) of the feature shapes")
    d = cfg.decode
    if d.gqa_group < 1 or d.model.n_heads % d.gqa_group:
        raise ConfigError(f"decode.gqa_group={d.gqa_group} must divide decode.model.n_heads={d.model.n_heads}")
    for c in cfg.train.choices:
        _train_cfg(cfg.train, c)  # parse errors surface before any compute
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def _device_name(device: str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name()
    from ablate.env import fingerprint

    return f"{fingerprint().get('cpu') or 'cpu'} ({torch.get_num_threads()} threads)"


def _classify(exc: BaseException, entry_available: bool = True) -> tuple[str, str]:
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


def _timing_metrics(t) -> dict[str, Any]:
    """The timing columns every ok row carries; ``load_1m`` (the 1-minute load average) shows when a CPU timing was
    taken on a busy machine."""
    return {"metric": "time_ms", "value": t.median_ms, "unit": "ms", "time_ms": t.median_ms, "p20_ms": t.p20_ms,
            "p80_ms": t.p80_ms, "iqr_ms": t.iqr_ms, "mean_ms": t.mean_ms, "reps": t.reps, "timing": t.method,
            "load_1m": _load_1m()}


def _empty_metrics() -> dict[str, Any]:
    return {"metric": "time_ms", "value": None, "unit": "ms"}


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (x - ref).norm().item()
    if not math.isfinite(num):
        return float("inf")
    return num / den if den > 0 else num


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
        if self.writer.done(key):
            return True
        return False

    def same_unavailable(self, key: dict[str, Any], reason: str) -> bool:
        """An ``unavailable`` row with this exact reason is already stored: nothing changed, write nothing."""
        return self.prior.get(row_key(key)) == ("unavailable", " ".join(str(reason).split()))

    def write(self, status: str, key: dict[str, Any], metrics: dict[str, Any], config: Any = None,
              reason: str = "") -> None:
        if status == "unavailable" and self.same_unavailable(key, reason):
            return  # still unavailable for the same reason: a resumed run writes nothing new
        self.writer.write(status, key, metrics, config, reason=reason)

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


def _set_compile_limits() -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# Part 1: attention kernels


@dataclass(frozen=True)
class Shape:
    group: str  # "main" or the feature it exercises: gqa, mqa, dtype, alibi, window
    seq_len: int
    batch: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    causal: bool
    dtype: str
    bias: str  # "none" | "alibi"
    window: int | None
    passes: tuple[str, ...]

    @property
    def layout(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "mha"
        return "mqa" if self.n_kv_heads == 1 else "gqa"

    def key(self, ctx: Ctx, attention: str, pas: str) -> dict[str, Any]:
        return {**ctx.base_key("kernel"), "attention": attention, "pass": pas, "seq_len": self.seq_len,
                "batch": self.batch, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "head_dim": self.head_dim, "causal": self.causal, "dtype": self.dtype, "bias": self.bias,
                "window": self.window}

    def describe(self) -> str:
        extra = (f" {self.bias}" if self.bias != "none" else "") + (f" W={self.window}" if self.window else "")
        return (f"n={self.seq_len} b={self.batch} h={self.n_heads}/{self.n_kv_heads} d={self.head_dim} "
                f"{'causal' if self.causal else 'full'} {self.dtype}{extra}")


def _is_compiled(key: str, device: str) -> bool:
    return key in COMPILED_KEYS and (is_cuda(device) or os.environ.get("ABLATE_FLEX_COMPILE_CPU", "") not in ("", "0"))


def kernel_keys(cfg: LatencyConfig) -> list[str]:
    return list(cfg.kernels.keys) or ATTENTION.keys()


MASKS = ("causal", "full")


def _parse_caps(caps: Iterable[str]) -> list[tuple[str, str | None, str | None, int]]:
    """``"key[/pass][/causal|full]:N"`` entries as (key, pass or None, mask or None, N); one-line errors."""
    out = []
    for item in caps:
        spec, sep, n = str(item).strip().rpartition(":")
        key, *quals = spec.split("/")
        pas = [q for q in quals if q in PASSES]
        mask = [q for q in quals if q in MASKS]
        if not sep or not key or not n.strip().isdigit() or len(pas) > 1 or len(mask) > 1 \
                or len(pas) + len(mask) != len(quals):
            raise ConfigError(f"kernels.caps entry {item!r} must be key[/pass][/causal|full]:N, e.g. "
                              f"sdpa_math:4096 or naive/bwd:8192 (passes: {', '.join(PASSES)})")
        ATTENTION.get(key)  # UnknownKeyError lists the valid keys
        out.append((key, pas[0] if pas else None, mask[0] if mask else None, int(n)))
    return out


def kernel_passes(cfg: LatencyConfig, shape: "Shape", key: str) -> list[str]:
    """The passes of ``shape`` that ``key`` is measured for: all of them, less those capped by ``kernels.caps``
    (main grid only; the feature shapes run every key)."""
    if shape.group != "main" or not cfg.kernels.caps:
        return list(shape.passes)
    mask = "causal" if shape.causal else "full"
    caps = _parse_caps(cfg.kernels.caps)
    return [p for p in shape.passes
            if not any(k == key and shape.seq_len > n and cp in (None, p) and cm in (None, mask)
                       for k, cp, cm, n in caps)]


def plan_kernels(cfg: LatencyConfig, device: str) -> list[tuple[Shape, list[str]]]:
    """(shape, keys) in run order: main grid (head dim, causal, length), then the feature shapes."""
    k = cfg.kernels
    keys = kernel_keys(cfg)
    plan: list[tuple[Shape, list[str]]] = []
    compiled_lens = set(k.compiled_seq_lens or k.seq_lens)

    def keys_for(shape: Shape) -> list[str]:
        out = []
        for key in keys:
            if "window" in attention_spec(key).requires and shape.window is None:
                continue  # it is defined by its window: exercised by the window shapes
            if shape.group == "main" and _is_compiled(key, device) and shape.seq_len not in compiled_lens:
                continue
            if not kernel_passes(cfg, shape, key):
                continue  # capped at this length (kernels.caps)
            out.append(key)
        return out

    def main_shapes(hd: int) -> list[tuple[Shape, list[str]]]:
        h = k.hidden // hd
        out = []
        for causal in k.causal:
            for n in k.seq_lens:
                s = Shape("main", n, max(1, k.tokens // n), h, h, hd, causal, k.dtype, "none", None, tuple(k.passes))
                out.append((s, keys_for(s)))
        return out

    # Run order, most telling first (a time budget cuts the tail): the largest head dim's grid (the one the
    # FlashAttention papers headline), then the feature shapes, then the other head dims.
    head_dims = sorted(set(k.head_dims), reverse=True)
    if head_dims:
        plan += main_shapes(head_dims[0])
    n, hd = k.feature_seq_len, k.feature_head_dim
    h, b = k.hidden // hd, max(1, k.tokens // k.feature_seq_len)
    fp = tuple(k.feature_passes)
    feats: list[Shape] = []
    for lay in k.layouts:
        if lay == "mha":
            continue
        feats.append(Shape(lay, n, b, h, h // k.gqa_group if lay == "gqa" else 1, hd, True, k.dtype, "none", None, fp))
    for dt in k.extra_dtypes:
        if dt != k.dtype:
            feats.append(Shape("dtype", n, b, h, h, hd, True, dt, "none", None, fp))
    if k.alibi:
        feats.append(Shape("alibi", n, b, h, h, hd, True, k.dtype, "alibi", None, fp))
    for w in k.windows:
        feats.append(Shape("window", n, b, h, h, hd, True, k.dtype, "none", int(w), fp))
    plan += [(s, keys_for(s)) for s in feats]
    for hd_ in head_dims[1:]:
        plan += main_shapes(hd_)
    return plan


def _score_bias(shape: Shape, device: str):
    """The ALiBi ScoreBias of the position slot for ``shape`` (None without bias)."""
    if shape.bias == "none":
        return None
    from ablate.variants.positions import build_position

    mcfg = ModelConfig(d_model=shape.n_heads * shape.head_dim, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
                       causal=shape.causal, max_len=max(shape.seq_len, 16), train_len=shape.seq_len,
                       position=shape.bias, attention="naive")
    return build_position(shape.bias, mcfg).to(device).score_bias()


def _slice_bias(bias, hs: int):
    if bias is None:
        return None
    from ablate.variants.positions import ScoreBias

    slopes = None if bias.alibi_slopes is None else bias.alibi_slopes[:hs]
    return ScoreBias(dense=lambda tq, tk, dev, dt: bias.dense(tq, tk, dev, dt)[:hs], alibi_slopes=slopes,
                     kind=bias.kind)


def attention_spec(key: str) -> Any:
    """The registration facts of attention ``key`` (:class:`ablate.variants.attention.AttentionSpec`)."""
    load_all()
    from ablate.variants.attention import spec

    return spec(key)


class Reference:
    """Reference outputs and gradients for a slice of the inputs (batch 0, query heads 0..hs-1, kv head 0)."""

    def __init__(self, shape: Shape, q, k, v, dout, bias, device: str, check_mb: int, spec: Any,
                 need_grad: bool):
        """``spec``: the :class:`~ablate.variants.attention.AttentionSpec` whose ``reference`` to run."""
        g = shape.n_heads // shape.n_kv_heads
        per_head = shape.seq_len * shape.seq_len * 4 * 3  # fp32 scores, softmax and a temporary
        hs = max(1, min(g, 2 if g == 1 else g, (check_mb << 20) // max(per_head, 1)))
        self.hs, self.full_group = hs, hs == g
        ref_dtype = torch.float32 if is_cuda(device) else torch.float64
        self.dtype = str(ref_dtype).replace("torch.", "")
        qs = q[:1, :hs].detach().to(ref_dtype).requires_grad_(need_grad)
        ks = k[:1, :1].detach().to(ref_dtype).requires_grad_(need_grad)
        vs = v[:1, :1].detach().to(ref_dtype).requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            out = spec.reference(qs, ks, vs, causal=shape.causal, bias=_slice_bias(bias, hs), window=shape.window)
            self.name = f"{spec.reference_name} {self.dtype}"
            if need_grad:
                out.backward(dout[:1, :hs].to(ref_dtype))
        self.out = out.detach()
        self.dq = qs.grad if need_grad else None
        self.dk = ks.grad if need_grad else None
        self.dv = vs.grad if need_grad else None
        self.name += f", batch 0, heads 0..{hs - 1}" + ("" if self.full_group else " (dq only)")

    def fwd_err(self, out) -> float:
        return _rel_err(out[:1, :self.hs], self.out)

    def grad_err(self, q, k, v) -> float:
        errs = [_rel_err(q.grad[:1, :self.hs], self.dq)]
        if self.full_group:
            errs += [_rel_err(k.grad[:1, :1], self.dk), _rel_err(v.grad[:1, :1], self.dv)]
        return max(errs)


def _inputs(shape: Shape, device: str, seed: int):
    dt = DTYPES[shape.dtype]
    gen = torch.Generator(device=device).manual_seed(seed)
    b, h, hkv, n, d = shape.batch, shape.n_heads, shape.n_kv_heads, shape.seq_len, shape.head_dim
    q = torch.randn(b, h, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    k = torch.randn(b, hkv, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    v = torch.randn(b, hkv, n, d, device=device, dtype=dt, generator=gen).requires_grad_()
    dout = torch.randn(b, h, n, d, device=device, dtype=dt, generator=gen)
    return q, k, v, dout


def _kernel_config(cfg: LatencyConfig) -> dict[str, Any]:
    k = cfg.kernels
    return {"kernels": {"tokens": k.tokens, "hidden": k.hidden, "warmup_ms": k.warmup_ms, "rep_ms": k.rep_ms,
                        "min_reps": k.min_reps, "min_run_time": k.min_run_time, "check": k.check}}


def run_kernels(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    from ablate.variants.attention import backend_of, check_call, supports

    plan = plan_kernels(cfg, device)
    conf = _kernel_config(cfg)
    unavailable: dict[str, str] = {}
    for key in kernel_keys(cfg):
        ok, why = ATTENTION.get(key).available(device)
        if not ok:
            unavailable[key] = why
            ukey = {**ctx.base_key("kernel"), "attention": key, "pass": None, "seq_len": None, "batch": None,
                    "n_heads": None, "n_kv_heads": None, "head_dim": None, "causal": None,
                    "dtype": None, "bias": None, "window": None}
            ctx.write("unavailable", ukey, _empty_metrics(), conf,
                      reason=f"UnavailableError: {key} unavailable on {device}: {why}")
    for shape, keys in plan:
        passes_of = {key: kernel_passes(cfg, shape, key) for key in keys}
        todo = [(key, [p for p in passes_of[key] if not ctx.done(shape.key(ctx, key, p))])
                for key in keys if key not in unavailable]
        todo = [(key, ps) for key, ps in todo if ps]
        ctx.advance(sum(len(passes_of[key]) for key in keys) - sum(len(ps) for _, ps in todo))
        if not todo:
            continue
        if ctx.clock.over():
            n = sum(len(ps) for _, ps in todo)
            ctx.clock.skip("kernel", n)
            ctx.advance(n)
            continue
        try:
            _run_shape(ctx, shape, todo, conf, backend_of, check_call, supports)
        finally:
            free_memory(device)


def _run_shape(ctx: Ctx, shape: Shape, todo: list[tuple[str, list[str]]], conf: dict, backend_of, check_call,
               supports) -> None:
    device, k = ctx.device, ctx.cfg.kernels
    try:
        q, k_, v, dout = _inputs(shape, device, ctx.cfg.seed)
        bias = _score_bias(shape, device)
    except Exception as exc:  # OOM for the inputs themselves
        status, reason = _classify(exc)
        for key, ps in todo:
            for p in ps:
                ctx.write(status, shape.key(ctx, key, p), _empty_metrics(), conf, reason=reason)
            ctx.advance(len(ps))
        free_memory(device, collect=True)
        return
    refs: dict[Any, Reference | None] = {}  # per reference function

    def reference(key: str, need_grad: bool) -> Reference | None:
        if not k.check:
            return None
        s = attention_spec(key)
        r = refs.get(s.reference)
        if r is None or (need_grad and r.dq is None):
            r = Reference(shape, q, k_, v, dout, bias, device, k.check_mb, s, need_grad)
            refs[s.reference] = r
        return r

    for key, passes in todo:
        ctx.advance(0, f"{key} {shape.describe()}")
        if ctx.clock.over():
            ctx.clock.skip("kernel", len(passes))
            ctx.advance(len(passes))
            continue
        try:
            with _no_donated_buffers(key, device)[0]:
                _run_key(ctx, shape, key, passes, q, k_, v, dout, bias, reference, conf, backend_of, check_call,
                         supports)
        finally:
            for t in (q, k_, v):
                t.grad = None
            free_memory(device)


FLOPS_FA = "fa"  # FlashAttention convention (ablate.flops.attention_flops)
# Kernel tables compare every key with the model's default attention ("× sdpa", speedup_vs_sdpa).
BASELINE_ATTENTION = ModelConfig.attention


def kernel_flops(key: str, pas: str, *, batch: int, n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int,
                 causal: bool, window: int | None, linear_chunk: int | None = None) -> dict[str, Any]:
    """The FLOP columns of a kernel row (before timing): ``flops``, ``flops_convention`` and, for ``linear``, the
    chunk and the softmax-attention count (``equiv_flops``, only ever used for ``equiv_tflops``). Shared with
    ``scripts/recompute_flops.py``, which rewrites these columns of stored rows."""
    from ablate.variants.attention import spec

    s = spec(key)
    chunk = s.chunk if linear_chunk is None else int(linear_chunk)
    fl, conv = s.flops(pas, batch=batch, n_heads=n_heads, n_kv_heads=n_kv_heads, seq_len=seq_len, head_dim=head_dim,
                       causal=causal, window=window, chunk=chunk)
    if conv == FLOPS_FA:
        return {"flops": fl, "flops_convention": FLOPS_FA}
    fa = attention_flops(batch, n_heads, seq_len, seq_len, head_dim, causal=causal, window=window, mode=pas)
    out = {"flops": fl, "flops_convention": conv, "equiv_flops": fa}
    if chunk is not None:
        out["linear_chunk"] = int(chunk)
    return out


def _no_donated_buffers(key: str, device: str) -> tuple[Any, str | None]:
    """(context, label): ``torch._functorch.config.donated_buffer=False`` for a kernel that may be compiled here
    (``flex`` on CUDA, ``sliding_window`` when it routes to compiled flex), else a no-op.

    AOT autograd (torch >= 2.6) compiles a backward that *donates* saved tensors (reuses their memory), and then
    refuses ``backward(retain_graph=True)`` -- the way a backward-only pass is timed, as in FlashAttention's own
    benchmarks: one forward, its backward repeated. The option is read when the forward compiles (once per shape,
    inside this context) and, on newer torch, again at backward time, so the whole key's measurement runs in it.
    It only changes memory reuse inside the compiled backward; the kernels are the same. Rows of compiled kernels
    name it in ``compile_opts``. Older torch without the option has no donated buffers."""
    if not (is_cuda(device) or _is_compiled(key, device)):
        return contextlib.nullcontext(), None
    try:
        import torch._functorch.config as fconfig
    except Exception:  # pragma: no cover - torch without functorch
        return contextlib.nullcontext(), None
    if not hasattr(fconfig, "donated_buffer"):
        return contextlib.nullcontext(), None
    return fconfig.patch(donated_buffer=False), "torch._functorch.config.donated_buffer=False"


def _donated_buffer_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "donated buffer" in str(exc)


def _time_bwd(ctx: Ctx, fwd: Callable[[], Any], dout, inputs) -> tuple[Any, int | None]:
    """Backward alone: ``out.backward(dout, retain_graph=True)`` on one forward done outside the timed region, timed
    like every other call. Should a compiled backward still refuse retain_graph (a graph compiled with donated
    buffers before :func:`_no_donated_buffers` took effect), the backward of a *fresh* forward is timed instead:
    each rep runs an untimed forward, flushes L2, then times ``backward`` between CUDA events; the row's ``timing``
    says so."""
    device = ctx.device
    out = fwd()
    run = lambda: out.backward(dout, retain_graph=True)  # noqa: E731
    _clear_grads(inputs)
    refused = False
    try:
        mem, est = peak_memory_and_ms(run, device)
    except RuntimeError as exc:
        if not _donated_buffer_error(exc):
            raise
        refused = True
    if refused:  # outside the except block, so the traceback no longer holds the graph
        out = run = None
        return _time_bwd_fresh(ctx, fwd, dout, inputs)
    _clear_grads(inputs)
    return ctx.bench(run, grad_to_none=inputs, est_ms=est), mem


def _time_bwd_fresh(ctx: Ctx, fwd: Callable[[], Any], dout, inputs) -> tuple[Any, int | None]:
    k, device = ctx.cfg.kernels, ctx.device
    held: dict[str, Any] = {}

    def before() -> None:
        _clear_grads(inputs)
        held["out"] = fwd()

    def run() -> None:
        held.pop("out").backward(dout)

    before()
    mem, est = peak_memory_and_ms(run, device)  # memory above the saved forward, as for every bwd row
    est = max(est, 1e-3)
    for _ in range(max(1, int(k.warmup_ms / est))):
        before()
        run()
    n = max(k.min_reps, min(1000, int(k.rep_ms / est)))
    t = bench_calls(run, device, n=n, before=before)
    _clear_grads(inputs)
    t.method = f"{t.method}; backward of a fresh untimed forward each rep (retain_graph refused)"
    return t, mem


def _clear_grads(inputs) -> None:
    for t in inputs:
        t.grad = None


def _run_key(ctx: Ctx, shape: Shape, key: str, passes: list[str], q, k, v, dout, bias, reference, conf,
             backend_of, check_call, supports) -> None:
    device = ctx.device
    fn = ATTENTION.get(key).fn
    call_kw = {"causal": shape.causal, "bias": bias, "window": shape.window}
    has_bwd = supports(key, "backward", device)
    need_grad = any(p != "fwd" for p in passes) and has_bwd
    common: dict[str, Any] = {"layout": shape.layout, "group": shape.group, "tokens": shape.batch * shape.seq_len,
                              "fwd_grad": has_bwd}
    written: set[str] = set()

    def write(p: str, status: str, metrics: dict[str, Any], reason: str = "") -> None:
        ctx.write(status, shape.key(ctx, key, p), {**_empty_metrics(), **common, **metrics}, conf, reason=reason)
        written.add(p)
        ctx.advance(1)

    def write_rest(status: str, reason: str, metrics: dict[str, Any] | None = None) -> None:
        for p in passes:
            if p not in written:
                write(p, status, metrics or {}, reason)

    # 1. can it run at all?
    try:
        with torch.set_grad_enabled(has_bwd):
            check_call(key, q, k, v, **call_kw)
    except Exception as exc:
        write_rest(*_classify(exc))
        return
    fl = {p: kernel_flops(key, p, batch=shape.batch, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
                          seq_len=shape.seq_len, head_dim=shape.head_dim, causal=shape.causal, window=shape.window)
          for p in PASSES}
    flops = {p: f["flops"] for p, f in fl.items()}
    equiv = {p: f.get("equiv_flops") for p, f in fl.items()}
    common["flops_convention"] = fl["fwd"]["flops_convention"]
    if "linear_chunk" in fl["fwd"]:
        common["linear_chunk"] = fl["fwd"]["linear_chunk"]
    if not has_bwd:
        for p in passes:
            if p != "fwd":
                write(p, "unsupported", {}, f"UnavailableError: {key} does not support backward on {device}")

    if has_bwd:  # the timed closure is the bare call: nothing of the harness runs inside the timed region
        def fwd():
            return fn(q, k, v, **call_kw)
    else:
        def fwd():
            with torch.no_grad():
                return fn(q, k, v, **call_kw)

    # 2. first call (compilation happens here), correctness of the output against the reference, backend
    out = None
    try:
        holder: dict[str, Any] = {}
        first_s = first_call(lambda: holder.__setitem__("out", fwd()), device)
        out = holder.pop("out")
        common["first_call_s"] = first_s
        common["backend"] = backend_of(key, q, k, v, **call_kw) if has_bwd else _no_grad(backend_of, key, q, k, v,
                                                                                         call_kw)
        opts = _no_donated_buffers(key, device)[1]
        if opts and "compiled" in str(common["backend"]):
            common["compile_opts"] = opts
        ref = reference(key, need_grad)
        if ref is not None:
            err = ref.fwd_err(out)
            common.update(rel_err=err, check_ref=ref.name, tol=FWD_TOL[shape.dtype])
            if not err <= FWD_TOL[shape.dtype]:
                write_rest("error", f"wrong output: relative error {err:.3g} vs {ref.name} exceeds "
                                    f"{FWD_TOL[shape.dtype]:g}; not timed")
                return
    except Exception as exc:
        failure = _classify(exc)
    else:
        failure = None
    if failure is not None:  # outside the except block: the traceback's frames (and their tensors) are gone
        out = None
        free_memory(device, collect=failure[0] == "oom")
        write_rest(*failure)
        return

    # 2b. first backward and the gradients' correctness; a failure here still lets the forward be timed
    if need_grad:
        try:
            first_b = first_call(lambda: out.backward(dout), device)
            common["first_bwd_s"] = first_b
            if ref is not None:
                gerr = ref.grad_err(q, k, v)
                common.update(grad_rel_err=gerr, grad_tol=GRAD_TOL[shape.dtype])
                if not gerr <= GRAD_TOL[shape.dtype]:
                    for p in passes:
                        if p != "fwd" and p not in written:
                            write(p, "error", {}, f"wrong gradients: relative error {gerr:.3g} vs {ref.name} "
                                                  f"exceeds {GRAD_TOL[shape.dtype]:g}; not timed")
        except Exception as exc:
            failure = _classify(exc)
        else:
            failure = None
        for t in (q, k, v):
            t.grad = None
        if failure is not None:
            out = None
            free_memory(device, collect=failure[0] == "oom")
            for p in passes:
                if p != "fwd" and p not in written:
                    write(p, failure[0], {}, failure[1])
    out = None  # frees the graph of the checked call before timing

    # 3. time each pass
    for p in passes:
        if p in written:
            continue
        try:
            if p == "fwd":
                mem, est = peak_memory_and_ms(fwd, device)
                t_ = ctx.bench(fwd, est_ms=est)
                write(p, "ok", _kernel_metrics(t_, flops[p], mem, equiv[p]))
            elif p == "bwd":
                t_, mem = _time_bwd(ctx, fwd, dout, [q, k, v])
                write(p, "ok", _kernel_metrics(t_, flops[p], mem, equiv[p]))
            else:
                run = lambda: fwd().backward(dout)  # noqa: E731
                mem, est = peak_memory_and_ms(run, device)
                t_ = ctx.bench(run, grad_to_none=[q, k, v], est_ms=est)
                m = _kernel_metrics(t_, flops[p], mem, equiv[p])
                if "first_call_s" in common and _is_compiled(key, device):
                    m["compile_s"] = max(0.0, common["first_call_s"] + common.get("first_bwd_s", 0.0)
                                         - t_.median_ms / 1e3)
                write(p, "ok", m)
        except Exception as exc:
            failure = _classify(exc)
        else:
            failure = None
        out = run = None
        for t in (q, k, v):
            t.grad = None
        if failure is not None:
            free_memory(device, collect=failure[0] == "oom")
            write(p, failure[0], {}, failure[1])


def _no_grad(backend_of, key, q, k, v, call_kw):
    with torch.no_grad():
        return backend_of(key, q, k, v, **call_kw)


def _kernel_metrics(t, flops: float, mem: int | None, equiv_flops: float | None = None) -> dict[str, Any]:
    m = {**_timing_metrics(t), "flops": flops, "tflops": tflops(flops, t.median_ms), "peak_mem_bytes": mem,
         "mem_note": None if mem is not None else "n/a on cpu"}
    if equiv_flops is not None:  # linear: the softmax-attention-equivalent rate, never in `tflops`
        m["equiv_tflops"] = tflops(equiv_flops, t.median_ms)
    return m


# ---------------------------------------------------------------------------------------------------------------
# Part 2: position variants on their own


def _hooks(pos) -> list[str]:
    from ablate.variants.positions import Position

    out = []
    if type(pos).embed is not Position.embed:
        out.append("embed")
    if type(pos).rotate is not Position.rotate:
        out.append("rotate_qk")
    if type(pos).score_bias is not Position.score_bias:
        out.append("bias_dense")
    return out


def run_positions(ctx: Ctx) -> None:
    from ablate.variants.positions import build_position

    cfg, device = ctx.cfg, ctx.device
    ps = cfg.positions
    dt = DTYPES[cfg.kernels.dtype]
    conf = {"positions": flatten(ps)}
    for key in (list(ps.keys) or POSITION.keys()):
        for n in ps.seq_lens:
            b = max(1, ps.tokens // n)
            d_model = ps.n_heads * ps.head_dim
            mcfg = ModelConfig(d_model=d_model, n_heads=ps.n_heads, max_len=n, train_len=n, position=key)
            base = {**ctx.base_key("position"), "position": key, "seq_len": n, "batch": b, "n_heads": ps.n_heads,
                    "head_dim": ps.head_dim, "dtype": cfg.kernels.dtype}
            try:
                pos = build_position(key, mcfg).to(device=device)
                ops = _hooks(pos) + ["all"]
            except Exception as exc:
                status, reason = _classify(exc)
                for op in ("all",):
                    if not ctx.done({**base, "op": op}):
                        ctx.write(status, {**base, "op": op}, _empty_metrics(), conf, reason=reason)
                ctx.advance(1)
                continue
            gen = torch.Generator(device=device).manual_seed(cfg.seed)
            x = torch.randn(b, n, d_model, device=device, dtype=dt, generator=gen)
            q = torch.randn(b, ps.n_heads, n, ps.head_dim, device=device, dtype=dt, generator=gen)
            kk = torch.randn_like(q)

            def embed():
                return pos.embed(x, 0)

            def rotate():
                return pos.rotate(q, 0, n), pos.rotate(kk, 0, n)

            def dense():
                sb = pos.score_bias()
                return None if sb is None else sb.dense(n, n, torch.device(device), dt)

            def all_hooks():
                return embed(), rotate(), dense()

            fns = {"embed": embed, "rotate_qk": rotate, "bias_dense": dense, "all": all_hooks}
            for op in ops:
                key_f = {**base, "op": op}
                if ctx.done(key_f):
                    ctx.advance(1)
                    continue
                if ctx.clock.over():
                    ctx.clock.skip("position")
                    ctx.advance(1)
                    continue
                try:
                    with torch.no_grad():
                        fns[op]()  # warm caches (cos/sin tables) before timing
                        mem, est = peak_memory_and_ms(fns[op], device)
                        t = ctx.bench(fns[op], est_ms=est)
                    ctx.write("ok", key_f, {**_timing_metrics(t), "peak_mem_bytes": mem,
                                            "hooks": ",".join(_hooks(pos)) or "identity",
                                            "kind": POSITION.get(key).supports.get("kind")}, conf)
                except Exception as exc:
                    status, reason = _classify(exc)
                    ctx.write(status, key_f, _empty_metrics(), conf, reason=reason)
                ctx.advance(1, f"position {key} {op}")
            del x, q, kk, pos
            free_memory(device)


# ---------------------------------------------------------------------------------------------------------------
# Part 3: training step


def model_id(mcfg: ModelConfig) -> str:
    """Hash of every model setting (a row key field of the model parts: a changed model is a new measurement)."""
    return row_key(flatten(mcfg))


def _train_cfg(ts: TrainSweep, choice: str) -> ModelConfig:
    m = replace(ts.model, train_len=ts.seq_len, max_len=max(ts.model.max_len, ts.seq_len))
    if choice == "base":
        return m
    if "=" not in choice:
        raise ConfigError(f"train choice {choice!r} must be 'base' or field=key (e.g. attention=flex)")
    name, value = (s.strip() for s in choice.split("=", 1))
    registries = {"attention": ATTENTION, "position": POSITION}
    from ablate.registry import ACTIVATION, NORM

    registries.update(norm=NORM, activation=ACTIVATION)
    if name not in registries:
        raise ConfigError(f"train choice field {name!r} must be one of {', '.join(registries)}")
    registries[name].get(value)
    return replace(m, **{name: value})


def train_flops(n_matmul: int, mcfg: ModelConfig, batch: int, seq_len: int,
                linear_chunk: int | None = None) -> tuple[float, str]:
    """(model FLOPs of one step, convention): ``6·N·tokens + 3·layers·attention_fwd``, the attention term by the
    FlashAttention convention, or for ``attention=linear`` the linear-attention algorithm that runs (so MFU counts the
    work the model needs, not a softmax it never computes). Shared with ``scripts/recompute_flops.py``."""
    return step_flops(n_matmul, mcfg, batch, seq_len, chunk=None if linear_chunk is None else int(linear_chunk))


def run_train(ctx: Ctx) -> None:
    from ablate.model import Transformer
    from ablate.train import TrainConfig, autocast_for, lm_loss, make_optimizer
    from ablate.validate import validate_model

    cfg, device = ctx.cfg, ctx.device
    ts = cfg.train
    dev = torch.device(device)
    amp = ts.amp if is_cuda(device) else None
    peak = peak_tflops() if is_cuda(device) else None
    for choice in ts.choices:
        mcfg = _train_cfg(ts, choice)
        key = {**ctx.base_key("train"), "choice": choice, "attention": mcfg.attention, "position": mcfg.position,
               "norm": mcfg.norm, "activation": mcfg.activation, "n_kv_heads": mcfg.n_kv_heads,
               "d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads, "seq_len": ts.seq_len,
               "batch": ts.batch, "amp": amp, "model_id": model_id(mcfg)}
        if ctx.done(key):
            ctx.advance(1)
            continue
        if ctx.clock.over():
            ctx.clock.skip("train")
            ctx.advance(1)
            continue
        ctx.advance(0, f"train {choice}")
        model = opt = None
        try:
            validate_model(mcfg, device=device)
            torch.manual_seed(cfg.seed)
            model = Transformer(mcfg).to(dev)
            tcfg = TrainConfig(steps=10, batch_size=ts.batch, seq_len=ts.seq_len, lr=1e-4, warmup=0, amp=amp)
            opt = make_optimizer(model, tcfg, dev)
            gen = torch.Generator(device=device).manual_seed(cfg.seed)
            data = torch.randint(0, mcfg.vocab_size, (ts.batch, ts.seq_len + 1), device=device, generator=gen)
            xb, yb = data[:, :-1], data[:, 1:]
            params = [p for p in model.parameters() if p.requires_grad]

            def step():
                with autocast_for(dev, amp):
                    loss = lm_loss(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
                opt.step()
                return loss

            first_s = first_call(step, device)
            for _ in range(max(0, ts.warmup_steps - 1)):
                step()
            sync(device)
            base_mem = torch.cuda.memory_allocated() if is_cuda(device) else None
            extra, est = peak_memory_and_ms(step, device)
            t = ctx.bench(step, est_ms=est)
            n_mm = matmul_params(model)
            flops, conv = train_flops(n_mm, mcfg, ts.batch, ts.seq_len)
            pk = peak
            metrics = {**_timing_metrics(t), "tokens_per_s": ts.batch * ts.seq_len / (t.median_ms / 1e3),
                       "model_flops": flops, "flops_convention": conv, "tflops": tflops(flops, t.median_ms),
                       "mfu": mfu(flops, t.median_ms, pk) if pk is not None else None,
                       "peak_tflops": pk.tflops if pk is not None else None,
                       "peak_source": pk.source if pk is not None else "no peak for CPU (MFU n/a)",
                       "peak_mem_bytes": (base_mem + extra) if extra is not None else None,
                       "step_extra_mem_bytes": extra, "mem_note": None if extra is not None else "n/a on cpu",
                       "params": model.num_params(), "matmul_params": n_mm, "first_step_s": first_s,
                       "compile_s": max(0.0, first_s - t.median_ms / 1e3) if _is_compiled(mcfg.attention, device)
                       else None}
            ctx.write("ok", key, metrics, {"model": flatten(mcfg), "train": flatten(ts)})
        except Exception as exc:
            status, reason = _classify(exc, ATTENTION.get(mcfg.attention).available(device)[0])
            ctx.write(status, key, _empty_metrics(), {"model": flatten(mcfg)}, reason=reason)
        finally:
            del model, opt
            free_memory(device, collect=True)
        ctx.advance(1)


# ---------------------------------------------------------------------------------------------------------------
# Parts 4 and 5: decode with the KV cache, and prefill


def _decode_model_cfg(ds: DecodeSweep, layout: str) -> ModelConfig:
    h = ds.model.n_heads
    kv = {"mha": None, "gqa": h // ds.gqa_group, "mqa": 1}[layout]
    return replace(ds.model, n_kv_heads=kv, causal=True,
                   max_len=max(ds.model.max_len, max(ds.contexts + ds.prompt_lens) + ds.steps + 8))


def _decode_dtype(ctx: Ctx) -> str:
    return ctx.cfg.decode.dtype if is_cuda(ctx.device) else "float32"


def _attn_backend(mcfg: ModelConfig, batch: int, tq: int, tk: int, device: str, dtype) -> str | None:
    try:
        from ablate.variants.attention import backend_of

        q = torch.zeros(batch, mcfg.n_heads, tq, mcfg.head_dim, device=device, dtype=dtype)
        kv = torch.zeros(batch, mcfg.kv_heads, tk, mcfg.head_dim, device=device, dtype=dtype)
        with torch.no_grad():
            return backend_of(mcfg.attention, q, kv, kv, causal=True, window=mcfg.window)
    except Exception as exc:
        return f"? ({type(exc).__name__})"


@dataclass
class _LayoutRun:
    """One decode layout (MHA / GQA / MQA) to measure: its model and the lengths still owed."""

    layout: str
    mcfg: ModelConfig
    model: Any
    keys: dict[int, dict]
    todo: list[int]
    gen: torch.Generator
    dtype: torch.dtype


def _layout_runs(ctx: Ctx, part: str, lengths: Iterable[int], length_field: str, batch: int):
    """For each decode layout, build the model once and yield a :class:`_LayoutRun`; a model that cannot be built
    turns every owed row into a status row. The model is released after the caller's iteration."""
    from ablate.model import Transformer

    cfg, device = ctx.cfg, ctx.device
    dname = _decode_dtype(ctx)
    dt = DTYPES[dname]
    lengths = list(lengths)
    for layout in cfg.decode.layouts:
        mcfg = _decode_model_cfg(cfg.decode, layout)
        keys = {L: {**ctx.base_key(part), "attention": mcfg.attention, "position": mcfg.position,
                    "layout": layout, "n_heads": mcfg.n_heads, "n_kv_heads": mcfg.kv_heads, "d_model": mcfg.d_model,
                    "n_layers": mcfg.n_layers, "batch": batch, length_field: L, "dtype": dname,
                    "model_id": model_id(mcfg)}
                for L in lengths}
        todo = [L for L in lengths if not ctx.done(keys[L])]
        ctx.advance(len(lengths) - len(todo))
        if not todo:
            continue
        try:
            torch.manual_seed(cfg.seed)
            model = Transformer(mcfg).to(device=device, dtype=dt).eval()
        except Exception as exc:
            status, reason = _classify(exc)
            for L in todo:
                ctx.write(status, keys[L], _empty_metrics(), {"model": flatten(mcfg)}, reason=reason)
            ctx.advance(len(todo))
            continue
        run = _LayoutRun(layout, mcfg, model, keys, todo, torch.Generator(device=device).manual_seed(cfg.seed), dt)
        del model
        yield run
        run.model = None
        free_memory(device, collect=True)


def run_decode(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    ds = cfg.decode
    for run in _layout_runs(ctx, "decode", ds.contexts, "context", ds.batch):
        mcfg, model, keys, gen = run.mcfg, run.model, run.keys, run.gen
        for L in run.todo:
            if ctx.clock.over():
                ctx.clock.skip("decode")
                ctx.advance(1)
                continue
            ctx.advance(0, f"decode {run.layout} context {L}")
            cache = None
            try:
                prompt = torch.randint(0, mcfg.vocab_size, (ds.batch, L), device=device, generator=gen)
                tok = torch.randint(0, mcfg.vocab_size, (ds.batch, 1), device=device, generator=gen)
                cache = model.new_cache()
                with torch.no_grad():
                    model(prompt, cache)
                sync(device)
                kv_bytes = cache.nbytes()
                allocated = sum(b.numel() * b.element_size() for b in cache.k + cache.v if b is not None)
                el = next(b for b in cache.k if b is not None).element_size()
                closed = kv_cache_bytes(mcfg.n_layers, mcfg.kv_heads, mcfg.head_dim, L, el, ds.batch)

                def reset():
                    cache.length = L

                def step():
                    with torch.no_grad():
                        model(tok, cache)

                for _ in range(ds.warmup_steps):
                    reset()
                    step()
                t = bench_calls(step, device, n=ds.steps, before=reset)
                reset()
                metrics = {**_timing_metrics(t), "tokens_per_s": ds.batch / (t.median_ms / 1e3),
                           "kv_bytes": kv_bytes, "kv_bytes_closed_form": closed, "kv_bytes_allocated": allocated,
                           "kv_match": kv_bytes == closed, "kv_dtype": str(next(b for b in cache.k if b is not None)
                                                                          .dtype).replace("torch.", ""),
                           "attn_backend": _attn_backend(mcfg, ds.batch, 1, L + 1, device, run.dtype)}
                ctx.write("ok", keys[L], metrics, {"model": flatten(mcfg)})
            except Exception as exc:
                status, reason = _classify(exc)
                ctx.write(status, keys[L], _empty_metrics(), {"model": flatten(mcfg)}, reason=reason)
            finally:
                del cache
                free_memory(device)
            ctx.advance(1)
        del model


def run_prefill(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    ds = cfg.decode
    for run in _layout_runs(ctx, "prefill", ds.prompt_lens, "prompt_len", ds.prefill_batch):
        mcfg, model, keys, gen = run.mcfg, run.model, run.keys, run.gen
        for L in run.todo:
            if ctx.clock.over():
                ctx.clock.skip("prefill")
                ctx.advance(1)
                continue
            ctx.advance(0, f"prefill {run.layout} {L}")
            try:
                prompt = torch.randint(0, mcfg.vocab_size, (ds.prefill_batch, L), device=device, generator=gen)

                def fill():
                    with torch.no_grad():
                        return model(prompt, model.new_cache())

                fill()
                mem, est = peak_memory_and_ms(fill, device)
                t = ctx.bench(fill, est_ms=est)
                metrics = {**_timing_metrics(t), "tokens_per_s": ds.prefill_batch * L / (t.median_ms / 1e3),
                           "peak_mem_bytes": mem, "mem_note": None if mem is not None else "n/a on cpu",
                           "attn_backend": _attn_backend(mcfg, ds.prefill_batch, L, L, device, run.dtype)}
                ctx.write("ok", keys[L], metrics, {"model": flatten(mcfg)})
            except Exception as exc:
                status, reason = _classify(exc)
                ctx.write(status, keys[L], _empty_metrics(), {"model": flatten(mcfg)}, reason=reason)
            finally:
                free_memory(device)
            ctx.advance(1)
        del model


# ---------------------------------------------------------------------------------------------------------------
# Run


def _count(cfg: LatencyConfig, device: str) -> dict[str, int]:
    n = {p: 0 for p in PARTS}
    for shape, keys in plan_kernels(cfg, device):
        n["kernel"] += sum(len(kernel_passes(cfg, shape, key)) for key in keys)
    ps = cfg.positions
    for key in (list(ps.keys) or POSITION.keys()):
        try:
            from ablate.variants.positions import build_position

            hooks = _hooks(build_position(key, ModelConfig(d_model=ps.n_heads * ps.head_dim, n_heads=ps.n_heads,
                                                           max_len=16, train_len=16, position=key)))
        except Exception:
            hooks = []
        n["position"] += (len(hooks) + 1) * len(ps.seq_lens)
    n["train"] = len(cfg.train.choices)
    n["decode"] = len(cfg.decode.layouts) * len(cfg.decode.contexts)
    n["prefill"] = len(cfg.decode.layouts) * len(cfg.decode.prompt_lens)
    return n


RUNNERS = {"kernel": run_kernels, "position": run_positions, "train": run_train, "decode": run_decode,
           "prefill": run_prefill}


def _part_budget(cfg: LatencyConfig, part: str) -> float:
    return {"kernel": cfg.kernels.budget_s, "position": cfg.positions.budget_s, "train": cfg.train.budget_s,
            "decode": cfg.decode.budget_s, "prefill": cfg.decode.budget_s}[part]


def results_file(opts, preset: str) -> Path:
    """``<out>/<preset>.jsonl``: one file per preset (cpu.jsonl, gpu.jsonl), so runs on different machines never
    resume into each other."""
    return Path(opts.out) / f"{preset}.jsonl"


def _setup(opts) -> tuple[str, str, LatencyConfig, Path]:
    from ablate.runner import resolve_device

    device = resolve_device(opts.device)
    preset = opts.preset or default_preset(device)
    cfg = resolve(preset, opts.overrides)
    set_keys = {str(o).split("=", 1)[0].strip() for o in opts.overrides}
    if not is_cuda(device):
        for k in ("decode.dtype", "train.amp"):
            if k in set_keys:
                raise ConfigError(f"{k} applies on CUDA only; on {device} the model parts run in float32")
        if "kernels.compiled_seq_lens" in set_keys and not any(_is_compiled(k, device) for k in COMPILED_KEYS):
            raise ConfigError(f"kernels.compiled_seq_lens applies to kernels compiled per shape ("
                              f"{', '.join(COMPILED_KEYS)} on CUDA); on {device} they run eagerly at every length")
    _check_memory(cfg, device)
    if device == "cpu" and preset == "gpu":
        raise ConfigError("the gpu latency preset needs CUDA; use --preset cpu (the CPU default) or micro")
    return device, preset, cfg, results_file(opts, preset)


def _check_memory(cfg: LatencyConfig, device: str) -> None:
    """Refuse (one line) model parts that cannot fit in the device's memory (closed-form lower bound); the kernel
    and position parts are guarded by kernels.check_mb / caps and write oom rows."""
    from ablate.validate import check_fits, estimate_memory_bytes

    cuda = is_cuda(device)
    if "train" in cfg.parts:
        db = {"dtype_bytes": 2 if cuda and cfg.train.amp else 4, "param_dtype_bytes": 4}
        for c in cfg.train.choices:
            m = _train_cfg(cfg.train, c)
            check_fits(estimate_memory_bytes(m, batch=cfg.train.batch, seq_len=cfg.train.seq_len, training=True,
                                             **db), device, what=f"the train part's {c!r} step",
                       hint="train.batch or model.*")
    d = cfg.decode
    el = DTYPES[d.dtype].itemsize if cuda else 4
    for layout in d.layouts:
        m = _decode_model_cfg(d, layout)
        if "decode" in cfg.parts:
            check_fits(estimate_memory_bytes(m, batch=d.batch, seq_len=1, kv_cache_len=max(d.contexts),
                                             training=False, dtype_bytes=el), device,
                       what=f"decoding ({layout}) at context {max(d.contexts)}", hint="decode.batch or decode.contexts")
        if "prefill" in cfg.parts:
            check_fits(estimate_memory_bytes(m, batch=d.prefill_batch, seq_len=max(d.prompt_lens),
                                             kv_cache_len=max(d.prompt_lens), training=False, dtype_bytes=el), device,
                       what=f"prefill ({layout}) of {max(d.prompt_lens)} tokens", hint="decode.prompt_lens")


def _task_ids(cfg: LatencyConfig) -> list[str]:
    """``kernel-<key>`` per attention key of the kernel part, then one task per other part."""
    ids = []
    for part in PARTS:
        if part in cfg.parts:
            ids += [f"kernel-{k}" for k in kernel_keys(cfg)] if part == "kernel" else [part]
    return ids


def tasks(opts):
    """(results file, tasks): each attention key's kernel sweep, and each other part, is one task. A launcher gives
    every task a device of its own (one process per GPU), so no two measurements ever share a GPU."""
    from ablate.runner import Task

    *_, cfg, out = _setup(opts)
    return out, [Task(t, None, t.replace("-", " ", 1)) for t in _task_ids(cfg)]


def _only(cfg: LatencyConfig, only: tuple[str, ...]) -> LatencyConfig:
    """The config restricted to the chosen tasks (parts, and attention keys of the kernel part)."""
    from ablate.runner import select_tasks

    if not only:
        return cfg
    chosen = select_tasks(_task_ids(cfg), only, "latency task")
    keys = tuple(k for k in kernel_keys(cfg) if f"kernel-{k}" in chosen)
    parts = tuple(p for p in cfg.parts if p in chosen or (p == "kernel" and keys))
    return replace(cfg, parts=parts, kernels=replace(cfg.kernels, keys=keys) if keys else cfg.kernels)


def run(opts) -> Path:
    """Run the latency suite as ``opts`` (an :class:`ablate.runner.RunOptions`) asks; returns the JSONL file."""
    from ablate import distributed

    if distributed.launched():
        raise ConfigError("the latency suite measures one process per GPU; spread it with --launcher gpus or "
                          "slurm instead of --nproc-per-node")
    device, preset, cfg, out = _setup(opts)
    cfg = _only(cfg, opts.only)
    # Two runs into one --out: each task (an attention key's kernel sweep, a part) is measured by one of them.
    claims = Claims(out)
    ids = _task_ids(cfg)
    mine = tuple(t for t in ids if claims.claim(t))
    if len(mine) < len(ids):
        if not mine:
            claims.release_all()
            sys.stderr.write(f"ablate: every latency task is being run by another process into {out} "
                             f"({', '.join(sorted(set(claims.skipped.values())))}); nothing left to run here\n")
            return out
        cfg = _only(cfg, mine)
    try:
        return _run_claimed(opts, device, preset, cfg, out, claims)
    finally:
        claims.release_all()


def _run_claimed(opts, device: str, preset: str, cfg: LatencyConfig, out: Path, claims: Claims) -> Path:
    writer = ResultWriter(out, SUITE, resume=opts.resume, shard=opts.shard)
    clock = Clock(cfg.budget_s)
    if is_cuda(device) or _is_compiled("flex", device):
        _set_compile_limits()
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 stays fp32 (bf16/fp16 are what the GPU preset times)
    counts = _count(cfg, device)
    threads_before = torch.get_num_threads()
    if not is_cuda(device) and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    prog = start_progress(opts.progress)
    ctx = Ctx(cfg, device, writer, prog, preset, clock)
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
        torch.set_num_threads(threads_before)
    msg = f"latency ({preset}, {device}: {ctx.device_name}): {clock.elapsed():.0f} s; results in {out}"
    if claims.skipped:
        msg += (f"\nlatency: {len(claims.skipped)} task(s) were being run by another process into the same --out and "
                f"were left to it: {', '.join(sorted(claims.skipped))}")
    if clock.skipped:
        left = ", ".join(f"{n} {p}" for p, n in clock.skipped.items())
        msg += (f"\nlatency: time budget reached, {left} measurement(s) left for later: re-run the same command to "
                "resume (or raise budget_s with --set)")
    sys.stderr.write(msg + "\n")
    return out



# ---------------------------------------------------------------------------------------------------------------
# Report

PASS_ORDER = {p: i for i, p in enumerate(PASSES)}
MIB = float(1 << 20)


def _col(df, name: str, default: Any = None):
    import pandas as pd

    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index, dtype=object)


def _num(df, name: str):
    import pandas as pd

    return pd.to_numeric(_col(df, name), errors="coerce")


def _key_order(keys: Iterable[str]) -> list[str]:
    try:
        load_all()
        reg = ATTENTION.keys()
    except Exception:
        reg = []
    keys = list(dict.fromkeys(str(k) for k in keys))
    return [k for k in reg if k in keys] + sorted(k for k in keys if k not in reg)


def _spread(lo: Any, hi: Any) -> str:
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return "—"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"{lo:.4g}–{hi:.4g}"


def _bool_label(v: Any) -> str:
    return "causal" if bool(v) and v == v else "full"


def _kernel_frame(df):
    """Kernel rows with typed shape columns and the speed-up against ``sdpa`` on the same shape and pass."""
    import pandas as pd

    k = df[_col(df, "part") == "kernel"].copy()
    if k.empty:
        return k
    for c in ("seq_len", "batch", "n_heads", "n_kv_heads", "head_dim", "window", "time_ms", "p20_ms", "p80_ms",
              "tflops", "peak_mem_bytes", "rel_err", "grad_rel_err", "compile_s"):
        k[c] = _num(k, c)
    for c in ("layout", "group", "backend", "bias", "dtype", "pass", "device_name"):
        k[c] = _col(k, c)
    k["bias"] = k["bias"].fillna("none")
    k["causal"] = _col(k, "causal").map(lambda v: bool(v) if isinstance(v, (bool, int)) else v)
    shape_cols = ["device_name", "dtype", "seq_len", "batch", "n_heads", "n_kv_heads", "head_dim", "causal",
                  "bias", "window", "pass"]
    ok = k[k["status"] == "ok"]
    sdpa = ok[ok["attention"] == BASELINE_ATTENTION][shape_cols + ["time_ms"]].rename(columns={"time_ms": "_sdpa_ms"})
    k = k.merge(sdpa.astype({"window": float}), how="left", on=shape_cols) if not sdpa.empty else k.assign(_sdpa_ms=None)
    k["speedup_vs_sdpa"] = pd.to_numeric(k["_sdpa_ms"], errors="coerce") / k["time_ms"]
    return k.drop(columns=["_sdpa_ms"])


def _group_slug(dtype: str, hd: Any, causal: Any, layout: str, bias: str, window: Any) -> str:
    bits = [str(dtype), f"hd{int(hd)}", "causal" if causal else "full", str(layout)]
    if bias and bias != "none":
        bits.append(str(bias))
    if window == window and window is not None:
        bits.append(f"w{int(window)}")
    return "_".join(bits)


def kernel_tables(k) -> list[tuple[str, str, Any]]:
    """(slug, caption, table) per shape family: rows = length x pass x kernel."""
    import pandas as pd

    out = []
    if k.empty:
        return out
    ok = k[k["status"] == "ok"].copy()
    if ok.empty:
        return out
    ok["_w"] = ok["window"].fillna(-1)
    order = _key_order(ok["attention"])
    gcols = ["device_name", "dtype", "head_dim", "causal", "layout", "bias", "_w"]
    many_dev = ok["device_name"].nunique() > 1
    for gkey, g in ok.groupby(gcols, sort=True, dropna=False):
        dev, dtype, hd, causal, layout, bias, w = gkey
        window = None if w == -1 else w
        g = g.assign(_p=g["pass"].map(PASS_ORDER), _k=g["attention"].map({a: i for i, a in enumerate(order)}))
        g = g.sort_values(["seq_len", "_p", "_k"], kind="stable")
        t = pd.DataFrame({
            "n": g["seq_len"].astype(int), "batch": g["batch"].astype(int),
            "heads": [f"{int(a)}/{int(b)}" for a, b in zip(g["n_heads"], g["n_kv_heads"])],
            "kernel": g["attention"], "pass": g["pass"], "backend": g["backend"],
            "ms": g["time_ms"], "p20–p80 ms": [_spread(a, b) for a, b in zip(g["p20_ms"], g["p80_ms"])],
            "TFLOP/s": g["tflops"], "peak MiB": g["peak_mem_bytes"] / MIB,
            "× sdpa": g["speedup_vs_sdpa"], "rel err": g["rel_err"], "grad err": g["grad_rel_err"],
        }).reset_index(drop=True)
        slug = _group_slug(dtype, hd, causal, layout, bias, window) + (f"_{_dev_slug(dev)}" if many_dev else "")
        cap = (f"Attention kernels, {dtype}, head dim {int(hd)}, {'causal' if causal else 'non-causal'}, {layout}"
               + (f", {bias} bias" if bias != "none" else "") + (f", window {int(window)}" if window else "")
               + f" on {dev}: median time (ms) with p20–p80, TFLOP/s (FlashAttention convention; linear: the FLOPs "
               "of the linear-attention algorithm that ran), peak memory above the inputs, speed-up vs sdpa, "
               "relative error vs the reference.")
        out.append((slug, cap, t))
    return out


def _dev_slug(name: Any) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-").lower()[:40]


def _other_convention_keys(k) -> set:
    """Attention keys with a row whose FLOPs follow another convention than FlashAttention's (``linear``: a
    different function, counted by the algorithm that ran), read off the rows themselves."""
    conv = _col(k, "flops_convention")
    return set(k.loc[conv.notna() & (conv != FLOPS_FA), "attention"])


def _softmax_rows(k):
    """Kernel rows whose FLOPs follow the FlashAttention convention (not those of a key counted by another one,
    even in its status rows). TFLOP/s tables and figures use these only."""
    conv = _col(k, "flops_convention").fillna(FLOPS_FA)
    return k[~k["attention"].isin(_other_convention_keys(k)) & (conv == FLOPS_FA)]


TFLOPS_FOOTNOTE = ("Linear attention is not in the TFLOP/s tables and figures: it computes a different function, and "
                   "its FLOPs are those of the algorithm that ran (`flops_convention = linear`: feature maps, chunked "
                   "C×C products and state updates), not comparable with the softmax count; its times, that rate and "
                   "its speed-up vs sdpa are in the per-shape tables (and `equiv_tflops`, the softmax-equivalent "
                   "rate, in the JSONL).")


def tflops_pivot(k, pas: str):
    """FlashAttention-paper style: rows (head dim, causal, kernel), columns sequence length, values TFLOP/s
    (softmax-attention kernels only, see :func:`_softmax_rows`)."""
    import pandas as pd

    k = _softmax_rows(k)
    ok = k[(k["status"] == "ok") & (_col(k, "group") == "main") & (k["pass"] == pas)]
    if ok.empty:
        return pd.DataFrame()
    order = _key_order(ok["attention"])
    piv = ok.pivot_table(index=["device_name", "dtype", "head_dim", "causal", "attention"], columns="seq_len",
                         values="tflops", aggfunc="median")
    piv.columns = [str(int(c)) for c in piv.columns]
    piv = piv.reset_index()
    piv["_k"] = piv["attention"].map({a: i for i, a in enumerate(order)})
    piv = piv.sort_values(["device_name", "dtype", "head_dim", "causal", "_k"], kind="stable").drop(columns="_k")
    piv["causal"] = piv["causal"].map(lambda v: "causal" if v else "full")
    piv["head_dim"] = piv["head_dim"].astype(int)
    if piv["device_name"].nunique() == 1:
        piv = piv.drop(columns="device_name")
    return piv.rename(columns={"attention": "kernel", "head_dim": "hd", "causal": "mask"}).reset_index(drop=True)


def best_table(k):
    """Per main shape and pass: the fastest correct kernel, its TFLOP/s, and sdpa's."""
    import pandas as pd

    ok = k[(k["status"] == "ok") & (_col(k, "group") == "main") & ~k["attention"].isin(_other_convention_keys(k))]
    if ok.empty:
        return pd.DataFrame()
    recs = []
    for (dev, dtype, hd, causal, n, pas), g in ok.groupby(["device_name", "dtype", "head_dim", "causal", "seq_len",
                                                           "pass"], sort=True):
        g = g[g["tflops"].notna()]
        if g.empty:
            continue
        best = g.loc[g["tflops"].idxmax()]
        s = g[g["attention"] == BASELINE_ATTENTION]
        recs.append({"device": dev, "dtype": dtype, "hd": int(hd), "mask": "causal" if causal else "full",
                     "n": int(n), "pass": pas, "best kernel": best["attention"], "backend": best["backend"],
                     "best TFLOP/s": best["tflops"], "sdpa TFLOP/s": s["tflops"].iloc[0] if not s.empty else None,
                     "sdpa backend": s["backend"].iloc[0] if not s.empty else None})
    t = pd.DataFrame(recs)
    if not t.empty:
        t["_p"] = t["pass"].map(PASS_ORDER)
        t = t.sort_values(["device", "dtype", "_p", "hd", "mask", "n"], kind="stable").drop(columns="_p")
        if t["device"].nunique() == 1:
            t = t.drop(columns="device")
    return t.reset_index(drop=True)


def status_table(df):
    import pandas as pd

    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    what = []
    for _, r in bad.iterrows():
        part = r.get("part")
        if part == "kernel":
            what.append(str(r.get("attention")))
        elif part == "position":
            what.append(str(r.get("position")))
        elif part == "train":
            what.append(str(r.get("choice")))
        else:
            what.append(f"{r.get('layout')}")
    t = bad.assign(variant=what, reason=_col(bad, "reason").fillna(""))
    t = t.groupby(["part", "variant", "status", "reason"], sort=True, dropna=False).size().rename("rows").reset_index()
    return t


def position_table(df):
    import pandas as pd

    p = df[(_col(df, "part") == "position") & (df["status"] == "ok")]
    if p.empty:
        return pd.DataFrame()
    order = {k: i for i, k in enumerate(_position_order(p["position"]))}
    ops = {"embed": 0, "rotate_qk": 1, "bias_dense": 2, "all": 3}
    p = p.assign(_a=p["position"].map(order), _b=_col(p, "op").map(ops), n=_num(p, "seq_len"))
    p = p.sort_values(["n", "_a", "_b"], kind="stable")
    return pd.DataFrame({"position": p["position"], "op": _col(p, "op"), "n": p["n"].astype(int),
                         "batch": _num(p, "batch").astype(int), "heads": _num(p, "n_heads").astype(int),
                         "head dim": _num(p, "head_dim").astype(int), "dtype": _col(p, "dtype"),
                         "ms": _num(p, "time_ms"),
                         "p20–p80 ms": [_spread(a, b) for a, b in zip(_num(p, "p20_ms"), _num(p, "p80_ms"))],
                         "peak MiB": _num(p, "peak_mem_bytes") / MIB}).reset_index(drop=True)


def _position_order(keys) -> list[str]:
    try:
        load_all()
        reg = POSITION.keys()
    except Exception:
        reg = []
    keys = list(dict.fromkeys(str(k) for k in keys))
    return [k for k in reg if k in keys] + sorted(k for k in keys if k not in reg)


def train_table(df):
    import pandas as pd

    t = df[(_col(df, "part") == "train") & (df["status"] == "ok")]
    if t.empty:
        return pd.DataFrame()
    return pd.DataFrame({"choice": _col(t, "choice"), "attention": t["attention"], "position": _col(t, "position"),
                         "norm": _col(t, "norm"), "activation": _col(t, "activation"),
                         "ms/step": _num(t, "time_ms"),
                         "p20–p80 ms": [_spread(a, b) for a, b in zip(_num(t, "p20_ms"), _num(t, "p80_ms"))],
                         "tokens/s": _num(t, "tokens_per_s"), "TFLOP/s": _num(t, "tflops"),
                         "MFU %": _num(t, "mfu") * 100, "peak GiB": _num(t, "peak_mem_bytes") / (1 << 30),
                         "compile s": _num(t, "compile_s"), "peak used": _col(t, "peak_source")}
                        ).reset_index(drop=True)


def _layout_rows(df, part: str, length: str):
    """The ok rows of a decode/prefill part in layout then length order, and the columns both tables start with."""
    d = df[(_col(df, "part") == part) & (df["status"] == "ok")]
    if d.empty:
        return d, {}
    d = d.assign(_l=_col(d, "layout").map({x: i for i, x in enumerate(LAYOUTS)}), _c=_num(d, length))
    d = d.sort_values(["_l", "_c"], kind="stable")
    return d, {"layout": _col(d, "layout"),
               "heads": [f"{int(a)}/{int(b)}" for a, b in zip(_num(d, "n_heads"), _num(d, "n_kv_heads"))],
               "batch": _num(d, "batch").astype(int)}


def _spread_col(d) -> list[str]:
    return [_spread(a, b) for a, b in zip(_num(d, "p20_ms"), _num(d, "p80_ms"))]


def decode_table(df):
    import pandas as pd

    d, head = _layout_rows(df, "decode", "context")
    if d.empty:
        return pd.DataFrame()
    return pd.DataFrame({**head, "context": d["_c"].astype(int), "ms/token": _num(d, "time_ms"),
                         "p20–p80 ms": _spread_col(d), "tokens/s": _num(d, "tokens_per_s"),
                         "KV MiB": _num(d, "kv_bytes") / MIB,
                         "closed form MiB": _num(d, "kv_bytes_closed_form") / MIB,
                         "equal": _col(d, "kv_match"), "allocated MiB": _num(d, "kv_bytes_allocated") / MIB,
                         "attention backend": _col(d, "attn_backend")}).reset_index(drop=True)


def prefill_table(df):
    import pandas as pd

    d, head = _layout_rows(df, "prefill", "prompt_len")
    if d.empty:
        return pd.DataFrame()
    return pd.DataFrame({**head, "prompt": d["_c"].astype(int), "ms": _num(d, "time_ms"),
                         "p20–p80 ms": _spread_col(d), "tokens/s": _num(d, "tokens_per_s"),
                         "peak MiB": _num(d, "peak_mem_bytes") / MIB,
                         "attention backend": _col(d, "attn_backend")}).reset_index(drop=True)


def _log2_lengths(ax, lengths) -> None:
    ax.set_xscale("log", base=2)
    lengths = sorted({int(x) for x in lengths if x == x})
    if lengths:
        ax.set_xticks(lengths)
        ax.set_xticklabels([f"{x // 1024}k" if x >= 1024 and x % 1024 == 0 else str(x) for x in lengths],
                           fontsize=7)
        ax.minorticks_off()


def _log_y(ax) -> None:
    """Log y axis with readable 1-2-5 tick labels (plain numbers, not powers of ten)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _palette(keys: list[str]) -> dict[str, Any]:
    import seaborn as sns

    return dict(zip(keys, sns.color_palette("colorblind", n_colors=max(10, len(keys)))))


def fig_tflops(k, pas: str, stem: Path) -> list[Path]:
    """TFLOP/s vs sequence length per kernel, one panel per head dim x causal (FlashAttention-paper style)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ablate.tables import plot_style, savefig

    k = _softmax_rows(k)
    ok = k[(k["status"] == "ok") & (_col(k, "group") == "main") & (k["pass"] == pas) & k["tflops"].notna()]
    if ok.empty:
        return []
    ok = ok.assign(mask=ok["causal"].map(lambda v: "causal" if v else "non-causal"),
                   hd=ok["head_dim"].map(lambda v: f"head dim {int(v)}"))
    unit, scale = ("TFLOP/s", 1.0) if ok["tflops"].max() >= 1 else ("GFLOP/s", 1e3)  # CPU numbers are small
    ok = ok.assign(rate=ok["tflops"] * scale)
    order = _key_order(ok["attention"])
    hds = sorted(ok["head_dim"].unique())
    masks = [m for m in ("non-causal", "causal") if m in set(ok["mask"])]
    with plot_style():
        fig, axes = plt.subplots(len(hds), len(masks), figsize=(4.2 * len(masks), 3.2 * len(hds)), squeeze=False,
                                 sharey=True)
        pal = _palette(order)
        for i, hd in enumerate(hds):
            for j, m in enumerate(masks):
                ax = axes[i][j]
                sub = ok[(ok["head_dim"] == hd) & (ok["mask"] == m)]
                if not sub.empty:
                    sns.lineplot(data=sub, x="seq_len", y="rate", hue="attention", hue_order=order, palette=pal,
                                 marker="o", ax=ax, legend=False, errorbar=None)
                _log2_lengths(ax, ok["seq_len"])
                ax.set_title(f"head dim {int(hd)}, {m}", fontsize=9)
                ax.set_xlabel("sequence length")
                ax.set_ylabel(unit if j == 0 else "")
        axes[0][0].set_ylim(0, float(ok["rate"].max()) * 1.06)  # shared y: one limit for every panel
        _legend_on_top(fig, plt, order, pal, f"attention {pas.replace('_', '+')} "
                       f"({', '.join(sorted(ok['dtype'].unique()))}), FlashAttention FLOP convention, on "
                       + ", ".join(sorted(str(x) for x in ok["device_name"].unique())))
        return list(savefig(fig, stem))


def _legend_on_top(fig, plt, order: list[str], pal: dict, title: str) -> None:
    """Title, then one legend row for every panel, above the panels (no overlap with panel titles)."""
    handles = [plt.Line2D([], [], color=pal[a], marker="o", label=a) for a in order]
    ncol = min(6, len(order))
    rows = math.ceil(len(order) / ncol)
    top = 1.0 - (0.05 + 0.035 * rows) * 6.4 / max(fig.get_figheight(), 1.0)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, top))
    fig.suptitle(title, fontsize=9, y=0.995)


def fig_memory(k, stem: Path) -> list[Path]:
    """Peak memory vs sequence length (log y); out-of-memory as crosses on the top edge: naive's n² wall."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ablate.tables import plot_style, savefig

    main = k[(_col(k, "group") == "main")]
    pas = "fwd_bwd" if (main["pass"] == "fwd_bwd").any() else "fwd"
    main = main[main["pass"] == pas]
    ok = main[(main["status"] == "ok") & main["peak_mem_bytes"].notna()]
    if ok.empty:
        return []
    ok = ok.assign(mib=ok["peak_mem_bytes"] / MIB)
    oom = main[main["status"] == "oom"]
    order = _key_order(list(ok["attention"]) + list(oom["attention"]))
    hds = sorted(main["head_dim"].dropna().unique())
    masks = [c for c in (False, True) if c in set(main["causal"])]
    with plot_style():
        fig, axes = plt.subplots(len(masks), len(hds), figsize=(4.2 * len(hds), 3.2 * len(masks)), squeeze=False,
                                 sharey=True)
        pal = _palette(order)
        top = ok["mib"].max() * 3
        for i, c in enumerate(masks):
            for j, hd in enumerate(hds):
                ax = axes[i][j]
                sub = ok[(ok["head_dim"] == hd) & (ok["causal"] == c)]
                if not sub.empty:
                    sns.lineplot(data=sub, x="seq_len", y="mib", hue="attention", hue_order=order, palette=pal,
                                 marker="o", ax=ax, legend=False, errorbar=None)
                o = oom[(oom["head_dim"] == hd) & (oom["causal"] == c)]
                for a, g in o.groupby("attention"):
                    ax.scatter(g["seq_len"], [top] * len(g), marker="x", color=pal.get(a, "k"), s=40, zorder=5)
                _log_y(ax)
                _log2_lengths(ax, main["seq_len"])
                ax.set_title(f"head dim {int(hd)}, {'causal' if c else 'non-causal'} ({pas.replace('_', '+')})",
                             fontsize=9)
                ax.set_xlabel("sequence length")
                ax.set_ylabel("peak MiB above inputs (× = OOM)" if j == 0 else "")
        _legend_on_top(fig, plt, order, pal, f"peak memory of {pas.replace('_', '+')} above the inputs "
                       f"(log scale; × = out of memory) on "
                       + ", ".join(sorted(str(x) for x in main["device_name"].dropna().unique())))
        return list(savefig(fig, stem))


def fig_decode(df, stem: Path) -> list[Path]:
    """Per-token decode latency and KV-cache size vs context for MHA / GQA / MQA (closed form dashed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ablate.tables import plot_style, savefig

    d = df[(_col(df, "part") == "decode") & (df["status"] == "ok")]
    if d.empty:
        return []
    d = d.assign(context=_num(d, "context"), ms=_num(d, "time_ms"), kv=_num(d, "kv_bytes") / MIB,
                 closed=_num(d, "kv_bytes_closed_form") / MIB, layout=_col(d, "layout"))
    order = [x for x in LAYOUTS if x in set(d["layout"])]
    pal = dict(zip(order, sns.color_palette("colorblind", n_colors=3)))
    with plot_style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.2))
        sns.lineplot(data=d, x="context", y="ms", hue="layout", hue_order=order, palette=pal, marker="o", ax=a1,
                     errorbar=None)
        a1.set_ylim(bottom=0)
        a1.set_ylabel("ms per decode step (whole batch)")
        a1.set_title(f"decode latency, batch {int(_num(d, 'batch').iloc[0])}", fontsize=9)
        for lay in order:
            s = d[d["layout"] == lay].sort_values("context")
            a2.plot(s["context"], s["kv"], marker="o", color=pal[lay], label=f"{lay} measured")
            a2.plot(s["context"], s["closed"], ls="--", color=pal[lay], alpha=0.7, label=f"{lay} closed form")
        _log_y(a2)
        a2.set_ylabel("KV cache MiB")
        a2.set_title("KV cache: nbytes() vs 2·L·kv·d·n·bytes", fontsize=9)
        a2.legend(fontsize=6, frameon=False)
        for ax in (a1, a2):
            _log2_lengths(ax, d["context"])
            ax.set_xlabel("context length")
        fig.tight_layout()
        return list(savefig(fig, stem))


def fig_prefill(df, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ablate.tables import plot_style, savefig

    d = df[(_col(df, "part") == "prefill") & (df["status"] == "ok")]
    if d.empty:
        return []
    d = d.assign(prompt=_num(d, "prompt_len"), ms=_num(d, "time_ms"), layout=_col(d, "layout"))
    order = [x for x in LAYOUTS if x in set(d["layout"])]
    with plot_style():
        fig, ax = plt.subplots(figsize=(4.4, 3.2))
        sns.lineplot(data=d, x="prompt", y="ms", hue="layout", hue_order=order, marker="o", ax=ax, errorbar=None,
                     palette=dict(zip(order, sns.color_palette("colorblind", n_colors=3))))
        _log_y(ax)
        _log2_lengths(ax, d["prompt"])
        ax.set_xlabel("prompt length")
        ax.set_ylabel("prefill ms")
        ax.set_title("prefill latency", fontsize=9)
        return list(savefig(fig, stem))


def _env_lines(df) -> list[str]:
    cols = ["env.gpu", "env.cpu", "env.cpu_count", "env.torch", "env.cuda", "env.cudnn", "env.triton",
            "env.flash_attn", "env.flash_attn_4", "env.xformers", "env.driver", "env.git_commit", "env.git_dirty"]
    lines = []
    for c in cols:
        if c in df.columns:
            vals = sorted({str(v) for v in df[c].dropna().unique()})
            if vals:
                lines.append(f"- `{c[4:]}`: {', '.join(vals)}")
    return lines


def report(df, out_dir: Path) -> list[Path]:
    """Tables (Markdown + LaTeX), figures (PNG + SVG) and ``index.md`` from latency rows alone."""
    import pandas as pd

    from ablate.tables import to_markdown, write_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    df = df.reset_index(drop=True)
    if "status" not in df.columns:
        df = df.assign(status="ok")
    written: list[Path] = []
    idx: list[str] = ["<!-- ablate:latency -->", "# Latency: attention kernels, positions, training, decoding", ""]
    if df.empty:
        idx.append("(no latency rows)")
    devices = sorted({str(x) for x in _col(df, "device_name").dropna().unique()})
    counts = df.groupby(["part", "status"], dropna=False).size() if "part" in df.columns else pd.Series(dtype=int)
    idx += ["Measured on: " + ("; ".join(devices) or "?") + ".", "", "Environment:", ""] + _env_lines(df) + [""]
    idx += ["Regenerate: `ablate report <results.jsonl> --out <this folder>`. Method and columns: "
            "`docs/latency.md`. Times are medians (p20–p80 in the tables); TFLOP/s use the FlashAttention convention "
            "(forward 4·b·h·n²·d, halved when causal, a sliding window counts its band; backward 2.5×, fwd+bwd 3.5×), "
            "except linear attention, counted by the algorithm that ran. "
            "Every timed kernel was first checked against the reference on the same inputs (rel err columns).", ""]
    if not counts.empty:
        ct = counts.rename("rows").reset_index()
        idx += ["Rows by part and status:", "", to_markdown(ct), ""]

    def table(t, stem: str, caption: str, floatfmt: Any = ".4g", heading: str | None = None) -> None:
        nonlocal written
        if t is None or t.empty:
            return
        md, tex = write_table(t, out_dir / f"latency_{stem}", caption=caption, floatfmt=floatfmt)
        written += [md, tex]
        if heading:
            idx.extend([heading, "", f"[{md.name}]({md.name}) · [{tex.name}]({tex.name})", ""])

    def figure(files: list[Path], title: str) -> None:
        nonlocal written
        if files:
            written += files
            png = next(f for f in files if f.suffix == ".png")
            idx.extend([f"![{title}]({png.name})", ""])

    k = _kernel_frame(df) if "part" in df.columns else pd.DataFrame()
    if not k.empty:
        idx += ["## Attention kernels", ""]
        best = best_table(k)
        if not best.empty:
            cap = ("Fastest correct exact-attention kernel per shape and pass, and sdpa, TFLOP/s (linear attention "
                   "computes a different function and is left out here; it is in the tables below).")
            table(best, "kernel_best", cap)
            idx += [cap, "", to_markdown(best, floatfmt=".4g"), ""]
        for pas in PASSES:
            piv = tflops_pivot(k, pas)
            if not piv.empty:
                table(piv, f"tflops_{pas}", f"TFLOP/s by sequence length ({pas.replace('_', '+')}), tokens per "
                                            "batch fixed (batch = tokens / n). " + TFLOPS_FOOTNOTE, ".4g",
                      f"### TFLOP/s, {pas.replace('_', '+')}")
                idx += [to_markdown(piv, floatfmt=".4g"), ""]
                if _other_convention_keys(k) and TFLOPS_FOOTNOTE not in idx:
                    idx += [TFLOPS_FOOTNOTE, ""]
                figure(fig_tflops(k, pas, out_dir / f"latency_tflops_{pas}"), f"TFLOP/s {pas}")
        mem_files = fig_memory(k, out_dir / "latency_memory")
        idx += ["### Peak memory", ""]
        if mem_files:
            figure(mem_files, "peak memory vs sequence length")
        else:
            idx += ["Peak memory is measured on CUDA only (`torch.cuda.max_memory_allocated`); these rows are "
                    "from a CPU run, where it is n/a.", ""]
        idx += ["### Per shape", ""]
        for slug, cap, t in kernel_tables(k):
            table(t, f"kernels_{slug}", cap, {"ms": ".4g", "TFLOP/s": ".4g", "peak MiB": ".4g", "× sdpa": ".3g",
                                              "rel err": ".2e", "grad err": ".2e"})
            idx.append(f"- [{slug}](latency_kernels_{slug}.md)")
        idx.append("")
    pt = position_table(df) if "part" in df.columns else pd.DataFrame()
    if not pt.empty:
        idx += ["## Position variants on their own", ""]
        table(pt, "positions", "Cost of each position variant's hooks on their own: embed (absolute), rotate_qk "
                               "(RoPE family, q and k), bias_dense (ALiBi / T5 dense (H, n, n) bias), all (every "
                               "hook once).")
        idx += [to_markdown(pt), ""]
    tt = train_table(df) if "part" in df.columns else pd.DataFrame()
    if not tt.empty:
        idx += ["## Training step (forward + backward + clip + AdamW)", ""]
        table(tt, "train", "Training step of the reference model: tokens/s, MFU against the listed bf16 peak, "
                           "peak memory (weights + optimizer + activations).")
        idx += [to_markdown(tt), ""]
    dt = decode_table(df) if "part" in df.columns else pd.DataFrame()
    if not dt.empty:
        idx += ["## Decoding with the KV cache", ""]
        table(dt, "decode", "Per-token decode latency at each context (cache reset to that context before every "
                            "step) and KV-cache bytes: measured nbytes() vs the closed form "
                            "2·layers·kv_heads·head_dim·n·bytes·batch.")
        idx += [to_markdown(dt), ""]
        figure(fig_decode(df, out_dir / "latency_decode"), "decode latency and KV cache vs context")
    pf = prefill_table(df) if "part" in df.columns else pd.DataFrame()
    if not pf.empty:
        idx += ["## Prefill", ""]
        table(pf, "prefill", "Prefill (one forward pass filling a fresh KV cache) vs prompt length.")
        idx += [to_markdown(pf), ""]
        figure(fig_prefill(df, out_dir / "latency_prefill"), "prefill latency vs prompt length")
    st = status_table(df) if "part" in df.columns else pd.DataFrame()
    if not st.empty:
        idx += ["## Rows without a number (status and reason)", ""]
        table(st, "status", "Measurements that did not produce a number, with the reason.")
        idx += [to_markdown(st), ""]
    index = out_dir / "index.md"
    if index.exists() and not index.read_text(encoding="utf-8").startswith("<!-- ablate:latency -->"):
        index = out_dir / "latency_index.md"  # another suite's index lives here
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(idx).rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, index)
    written.append(index)
    return written


__all__ = ["SUITE", "PARTS", "PASSES", "LAYOUTS", "KernelSweep", "PositionSweep", "TrainSweep", "DecodeSweep",
           "LatencyConfig", "PRESETS", "resolve", "run", "report", "plan_kernels", "Shape", "Reference",
           "attention_spec", "results_file", "default_preset", "kernel_tables", "tflops_pivot", "best_table"]
