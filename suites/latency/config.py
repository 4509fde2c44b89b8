"""Latency suite settings: the sweep dataclasses, the presets, ``resolve`` (``--set`` checked), and the kernel plan
(which attention key is measured at which shape and pass)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol

import torch

from ablate.core.config import (ModelConfig, apply_overrides, check_max_len, check_model_keys, model_preset,
                                override_keys)
from ablate.errors import ConfigError
from ablate.registry.keys import ACTIVATION, ATTENTION, NORM, POSITION
from ablate.core.timing import DO_BENCH_REP_MS, DO_BENCH_WARMUP_MS
from ablate.variants.attention import kernel_keys as standard_kernels, spec

from .constants import DECODE_MODES, LAYOUTS, STREAM_MODES, TRAIN_MODES, MASKS, PARTS, PASSES


class KeyBase(Protocol):
    """What a shape needs of the run to key its row (the harness's ``Ctx``): the part's base key."""

    def base_key(self, part: str) -> dict[str, Any]: ...

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}

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
    # measure the GPU before its clock settles under load (see ablate.core.timing), so the suite would no longer agree
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
    model: ModelConfig = model_preset("large")
    seq_len: int = 2048
    batch: int = 8
    amp: str | None = "bf16"  # autocast on CUDA (ignored on CPU)
    choices: tuple[str, ...] = DEFAULT_TRAIN_CHOICES  # "base" or "field=key" swaps applied to the model
    # eager: the model as written; compiled: torch.compile(model) (forward and backward through inductor), timed
    # beside the eager step so the table shows what compiling buys
    modes: tuple[str, ...] = ("eager", "compiled")
    warmup_steps: int = 2
    budget_s: float = 0.0


@dataclass(frozen=True)
class DecodeSweep:
    model: ModelConfig = replace(model_preset("large"), n_heads=16, max_len=65536)
    layouts: tuple[str, ...] = LAYOUTS
    gqa_group: int = 4
    contexts: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    batch: int = 8
    steps: int = 20  # timed decode steps per context (each at exactly that context: the cache is reset)
    # how each step runs (ablate.core.decode): eager, a replayed CUDA graph (CUDA only), torch.compile; every mode is a
    # row per layout and context, so eager and graphed steps sit side by side
    modes: tuple[str, ...] = ("eager", "graph")
    warmup_steps: int = 3
    prompt_lens: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    prefill_batch: int = 1
    dtype: str = "bfloat16"  # weights and cache (CUDA); CPU runs float32
    budget_s: float = 0.0


@dataclass(frozen=True)
class StreamSweep:
    """Part ``stream``: per-token decode latency and cache bytes once ``tokens`` tokens have streamed through the
    decode part's model (``decode.model``, ``decode.batch``, ``decode.dtype``), in each of StreamingLLM's ``modes``
    (Xiao et al. 2023, Fig. 10; :mod:`ablate.variants.attention.streaming`): ``dense`` (no eviction), ``window``
    (the last ``budget`` tokens), ``sinks`` (``sinks`` first tokens + the recent ones, ``budget`` keys per query) and
    ``recompute`` (a fresh forward over the last ``budget`` tokens per token)."""

    layouts: tuple[str, ...] = ("mha",)
    modes: tuple[str, ...] = STREAM_MODES
    tokens: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768)  # tokens streamed before the timed step
    budget: int = 1024  # keys per query of the evicting modes and of recompute (StreamingLLM: 4 + 1020)
    sinks: int = 4  # initial tokens the sinks mode keeps
    steps: int = 20  # timed steps per point (each from the same state: the cache is restored before every step)
    warmup_steps: int = 3  # untimed steps first (>= 1: the first reads the kernel that runs and lets a growing
    # cache re-allocate)
    budget_s: float = 0.0


@dataclass(frozen=True)
class LatencyConfig:
    parts: tuple[str, ...] = PARTS
    kernels: KernelSweep = field(default_factory=KernelSweep)
    positions: PositionSweep = field(default_factory=PositionSweep)
    train: TrainSweep = field(default_factory=TrainSweep)
    decode: DecodeSweep = field(default_factory=DecodeSweep)
    stream: StreamSweep = field(default_factory=StreamSweep)
    budget_s: float = 0.0  # whole-run limit (0: none); parts past it are left for a resumed run
    seed: int = 0  # random inputs
    cpu_threads: int = 0  # CPU: torch threads for every measurement (0: torch's default); part of device_name


_CPU_MODEL = replace(model_preset("tiny"), train_len=128)

PRESETS: dict[str, LatencyConfig] = {
    # Tests: a few seconds on CPU.
    "micro": LatencyConfig(
        kernels=KernelSweep(keys=("naive", "sdpa", "sdpa_math", "flex", "linear", "sliding_window", "xformers"),
                            seq_lens=(32, 64), tokens=128, hidden=32, head_dims=(16,), causal=(False, True),
                            dtype="float32", feature_seq_len=64, feature_head_dim=16, gqa_group=2, extra_dtypes=(),
                            windows=(16,), min_run_time=0.002, min_reps=1),
        positions=PositionSweep(keys=("none", "rope", "alibi", "sinusoidal"), seq_lens=(64,), tokens=128, n_heads=2,
                                head_dim=16),
        train=TrainSweep(model=replace(model_preset("micro"), train_len=32),
                         seq_len=32, batch=2, choices=("base", "position=alibi"), warmup_steps=1, modes=("eager",)),
        decode=DecodeSweep(model=replace(model_preset("micro"), n_heads=4, train_len=32),
                           gqa_group=2, contexts=(16, 32), batch=2, steps=3, warmup_steps=1, prompt_lens=(16, 32),
                           modes=("eager",)),
        stream=StreamSweep(tokens=(24, 48), budget=8, sinks=2, steps=3, warmup_steps=1),
    ),
    # CPU default: every CPU-capable attention key, <= 3 minutes on 2 cores. Called "cpu" until every suite said
    # micro/tiny/gpu; "cpu" is still accepted (ablate.plan.runner.PRESET_ALIASES, with a note).
    "tiny": LatencyConfig(
        kernels=KernelSweep(seq_lens=(128, 256, 512), tokens=1024, hidden=128, head_dims=(32, 64),
                            causal=(False, True), dtype="float32", feature_seq_len=256, feature_head_dim=32,
                            gqa_group=2, extra_dtypes=(), windows=(64,), min_run_time=0.05, budget_s=110.0),
        positions=PositionSweep(seq_lens=(512,), tokens=2048, n_heads=4, head_dim=32, budget_s=10.0),
        train=TrainSweep(model=_CPU_MODEL, seq_len=128, batch=8,
                         choices=("base", "attention=naive", "attention=linear", "position=alibi", "position=none",
                                  "norm=layernorm", "activation=gelu"), warmup_steps=1, budget_s=25.0,
                         modes=("eager",)),
        decode=DecodeSweep(model=replace(_CPU_MODEL, n_heads=4), gqa_group=2, contexts=(128, 256, 512, 1024),
                           batch=2, steps=8, warmup_steps=2, prompt_lens=(128, 256, 512, 1024), dtype="float32",
                           budget_s=12.0, modes=("eager",)),
        stream=StreamSweep(tokens=(512, 1024, 2048), budget=128, steps=8, warmup_steps=2, budget_s=10.0),
        budget_s=180.0,
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
        stream=StreamSweep(budget_s=30.0),
        budget_s=480.0,
    ),
}


def default_preset(device: str) -> str:
    return "gpu" if device == "cuda" else "tiny"


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
    """The preset with ``--set`` overrides applied and checked (one-line errors); ``cpu``, the old name of ``tiny``,
    is accepted with a note (:func:`ablate.plan.runner.canonical_preset`)."""
    from ablate.plan.runner import canonical_preset

    preset = canonical_preset(preset)
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
    tm = cfg.train.modes
    if not tm or len(set(tm)) != len(tm) or set(tm) - set(TRAIN_MODES):
        raise ConfigError(f"train.modes={','.join(tm)}: give distinct modes from {', '.join(TRAIN_MODES)}")
    _check_stream(cfg.stream)
    bad = [m for m in d.modes if m not in DECODE_MODES]
    if bad or not d.modes or len(set(d.modes)) != len(d.modes):
        raise ConfigError(f"decode.modes={','.join(d.modes)}: give distinct modes from {', '.join(DECODE_MODES)}")
    # the models of the train and decode parts: variant keys exist (model.X sets both parts; name the one the user
    # wrote), a max_len set below the train part's sequence length is refused (it was raised silently)
    keys = override_keys(overrides)
    for part, m in (("train", cfg.train.model), ("decode", cfg.decode.model)):
        check_model_keys(m, prefix=f"{part}.model.")
    check_max_len(cfg.train.model.max_len, cfg.train.seq_len, keys, key="train.model.max_len",
                  what="train.seq_len")
    for c in cfg.train.choices:
        train_model_config(cfg.train, c)  # parse errors surface before any compute
    return cfg


def _check_stream(s: StreamSweep) -> None:
    bad = [m for m in s.modes if m not in STREAM_MODES]
    if bad or not s.modes or len(set(s.modes)) != len(s.modes):
        raise ConfigError(f"stream.modes={','.join(s.modes)}: give distinct modes from {', '.join(STREAM_MODES)}")
    for lay in s.layouts:
        if lay not in LAYOUTS:
            raise ConfigError(f"unknown head layout {lay!r} in stream.layouts; valid: {', '.join(LAYOUTS)}")
    if s.budget < 2 or not 1 <= s.sinks < s.budget:
        raise ConfigError(f"stream: needs budget >= 2 and 1 <= sinks < budget, got budget={s.budget}, "
                          f"sinks={s.sinks}")
    if not s.tokens or min(s.tokens) < s.budget:
        raise ConfigError(f"stream.tokens={','.join(map(str, s.tokens))}: every length must be >= stream.budget="
                          f"{s.budget} (before that no mode evicts anything)")
    if s.steps < 1 or s.warmup_steps < 1:
        raise ConfigError("stream: steps and warmup_steps must be >= 1")


# ---------------------------------------------------------------------------------------------------------------
# Kernel plan


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

    def key(self, ctx: KeyBase, attention: str, pas: str) -> dict[str, Any]:
        return {**ctx.base_key("kernel"), "attention": attention, "pass": pas, "seq_len": self.seq_len,
                "batch": self.batch, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "head_dim": self.head_dim, "causal": self.causal, "dtype": self.dtype, "bias": self.bias,
                "window": self.window}

    def describe(self) -> str:
        extra = (f" {self.bias}" if self.bias != "none" else "") + (f" W={self.window}" if self.window else "")
        return (f"n={self.seq_len} b={self.batch} h={self.n_heads}/{self.n_kv_heads} d={self.head_dim} "
                f"{'causal' if self.causal else 'full'} {self.dtype}{extra}")


def compiles_per_shape(key: str, device: str) -> bool:
    """Whether ``key`` compiles once per new shape on ``device`` (its registration says: ``spec(key).is_compiled``)."""
    return spec(key).is_compiled(device)


def compiled_keys() -> list[str]:
    """The attention keys that compile per shape somewhere (``spec(key).compiled``)."""
    return [k for k in ATTENTION.keys() if spec(k).compiled]  # a layer: its kernel's


def kernel_keys(cfg: LatencyConfig) -> list[str]:
    """The kernels part times kernels: the keys asked for, else every key whose layer is the standard layer over a
    kernel of its own name (a layer of its own has no kernel call to time apart from its model)."""
    return list(cfg.kernels.keys) or standard_kernels()


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


def kernel_passes(cfg: LatencyConfig, shape: Shape, key: str) -> list[str]:
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
            if shape.group == "main" and compiles_per_shape(key, device) and shape.seq_len not in compiled_lens:
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

def attention_spec(key: str) -> Any:
    """The registration facts of attention ``key`` (:class:`ablate.variants.attention.AttentionSpec`)."""
    return spec(key)


def train_model_config(ts: TrainSweep, choice: str) -> ModelConfig:
    m = replace(ts.model, train_len=ts.seq_len, max_len=max(ts.model.max_len, ts.seq_len))
    if choice == "base":
        return m
    if "=" not in choice:
        raise ConfigError(f"train choice {choice!r} must be 'base' or field=key (e.g. attention=flex)")
    name, value = (s.strip() for s in choice.split("=", 1))
    registries = {"attention": ATTENTION, "position": POSITION, "norm": NORM, "activation": ACTIVATION}
    if name not in registries:
        raise ConfigError(f"train choice field {name!r} must be one of {', '.join(registries)}")
    registries[name].get(value)
    return replace(m, **{name: value})


