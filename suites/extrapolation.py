"""Length extrapolation: train short, test long (Press et al. 2022, Fig. 1; RoPE-scaling papers).

    ablate run --suite extrapolation                       # tiny preset on CPU (<= 5 min on 2 cores), gpu on CUDA
    ablate run --suite extrapolation --preset micro --set eval.mode=sliding --set eval.stride=8 --seeds 3
    ablate run --suite extrapolation --set passkey=true    # add the passkey-retrieval probe

For each trained position variant (``positions``) and seed: train one small causal LM at ``train_len`` (same seed,
data order, steps and size for all), then evaluate it on the same held-out tokens at ``eval_len = train_len x
factor``. The ``rope`` model is also evaluated with every inference-time scaling in ``rope_scalings`` (scale =
eval_len / train_len, no retraining). ``learned`` has a table of ``train_len`` rows (as in the papers), so past it
the suite writes an ``unsupported`` row "no positions past max_len" instead of a number.

Rows (one per trained variant x evaluated variant x seed x eval_len; ``metric="ppl"``): ``value`` = perplexity,
``loss`` (nats/token), ``bpb`` (bits per byte, byte-level data), the protocol (``mode``, ``stride``, ``tokens``)
and ``pos_loss``: the mean loss per in-window position bin (a list; bin ``b`` covers positions ``b*pos_bin ..
(b+1)*pos_bin - 1``). Passkey rows (``metric="passkey_acc"``) add ``depth``. Trained weights are kept in
``<out>/extrapolation.ckpt/`` so that a resumed run never retrains a finished variant.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from ablate.config import ModelConfig, apply_overrides, flatten, unified_train_len
from ablate.data import Batches, Corpus, DataSettings, check_eval_span, corpus_for, data_fields
from ablate.errors import ConfigError, PositionRangeError
from ablate.evaluate import (MODES, PROBES, PasskeyBatches, Probe, evaluate, passkey_loss, probe_correct,
                             span_needed)
from ablate.registry import POSITION, load_all
from ablate.results import ResultWriter, done_keys, row_key, status_from_exception, to_frame
from ablate.runstate import Claims
from ablate.train import TrainConfig, lm_loss, refuse_cpu_amp, train

SUITE = "extrapolation"
POSITIONS = ("none", "sinusoidal", "learned", "rope", "alibi", "t5_bias")
ROPE_SCALINGS = ("rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn")
# `ablate run --sweep KEY=V1,V2` (ablate.sweep): the trained position variants, and the inference-time scalings
# swapped into a trained model at evaluation.
SWEEPS = {"model.position": "positions", "eval.position": "rope_scalings"}
METRIC_PPL = "ppl"
METRIC_PASSKEY = "passkey_acc"
FAIR_TOL = 0.10  # report: a trained variant more than 10% above the best perplexity at train_len is undertrained


@dataclass(frozen=True)
class EvalSettings:
    mode: str = "nonoverlap"  # "nonoverlap" (ALiBi Fig. 1) or "sliding"
    stride: int | None = None  # sliding stride in tokens; None = train_len
    factors: tuple[int, ...] = (1, 2, 4, 8, 16)  # eval_len = train_len x factor
    tokens: int = 32768  # targets scored at every eval_len (rounded down to a multiple of the longest eval_len)
    batch_tokens: int = 16384  # tokens per evaluation forward
    pos_bins: int = 64  # in-window position bins of the per-position loss
    decode_chunk: int = 1  # length-dependent positions (dynamic NTK): tokens per decoding step past train_len


@dataclass(frozen=True)
class PasskeySettings:
    tasks: tuple[str, ...] = PROBES  # passkey (classic) and multikey (RULER-style MK-NIAH)
    keys: int = 4  # multikey: labelled needles per sequence, one queried (a random needle's value: 1/keys)
    digits: int = 2  # answer digits (chance = 10^-digits)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 50  # sequences per (eval_len, depth)
    steps: int | None = None  # training steps of the passkey models; None = train.steps
    answer_weight: float = 1.0  # extra weight of the answer digits in the passkey models' training loss


@dataclass(frozen=True)
class ExtrapolationConfig:
    model: ModelConfig
    train: TrainConfig
    eval: EvalSettings = field(default_factory=EvalSettings)
    data: DataSettings = field(default_factory=DataSettings)
    positions: tuple[str, ...] = POSITIONS  # trained variants
    rope_scalings: tuple[str, ...] = ROPE_SCALINGS  # applied to the `rope` model at evaluation
    passkey: bool = False  # also train/score passkey-retrieval models (one per trained variant)
    probe: PasskeySettings = field(default_factory=PasskeySettings)
    cpu_threads: int = 0  # CPU: torch threads (0 = torch's default); 1 is robust on a machine shared with others

    @property
    def eval_lens(self) -> list[int]:
        return [self.model.train_len * f for f in self.eval.factors]


PRESETS: dict[str, ExtrapolationConfig] = {
    # Tests: seconds on a CPU.
    "micro": ExtrapolationConfig(
        model=ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=16),
        train=TrainConfig(steps=30, batch_size=8, seq_len=16, lr=3e-3, min_lr=3e-4, warmup=5, log_every=10,
                          amp=None),
        eval=EvalSettings(factors=(1, 2, 4), tokens=512, batch_tokens=4096, pos_bins=16),
        probe=PasskeySettings(keys=2, digits=2, depths=(0.0, 1.0), trials=8),
    ),
    # CPU default: the whole suite in <= 5 minutes on 2 cores (see docs/extrapolation.md for the measured run).
    "tiny": ExtrapolationConfig(
        model=ModelConfig(d_model=128, n_layers=2, n_heads=4, train_len=64, max_len=64),
        train=TrainConfig(steps=500, batch_size=32, seq_len=64, lr=3e-3, min_lr=3e-4, warmup=50, log_every=50,
                          amp=None),
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=16384, batch_tokens=16384, pos_bins=64),
    ),
    # CUDA default: <= 15 minutes on one H100 (bf16 autocast, SDPA picks its fastest kernel that takes the bias).
    "gpu": ExtrapolationConfig(
        model=ModelConfig(d_model=512, n_layers=6, n_heads=8, train_len=256, max_len=256),
        train=TrainConfig(steps=2000, batch_size=64, seq_len=256, lr=1e-3, min_lr=1e-4, warmup=100, log_every=100,
                          amp="bf16"),
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=131072, batch_tokens=65536, pos_bins=64),
        data=DataSettings(corpus="stdlib"),
        probe=PasskeySettings(digits=4, trials=100),
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def resolve(preset: str, overrides: tuple[str, ...] | list[str] = ()) -> ExtrapolationConfig:
    """The preset with ``--set`` overrides applied and checked (one-line ConfigError / UnknownKeyError)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown extrapolation preset {preset!r}; valid: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    cfg = apply_overrides(base, list(overrides))
    load_all()
    keys_set = {str(o).split("=", 1)[0].strip() for o in overrides}
    cfg = _honour_model_slots(base, cfg, keys_set)
    # train.seq_len and model.train_len are one setting: follow whichever the user changed.
    m, t = cfg.model, cfg.train
    train_len = unified_train_len(base.model.train_len, base.train.seq_len, m.train_len, t.seq_len)
    # The learned table covers train_len positions (as in the papers) unless model.max_len is set explicitly.
    max_len = m.max_len if m.max_len != base.model.max_len else train_len
    cfg = replace(cfg, model=replace(m, train_len=train_len, max_len=max_len), train=replace(t, seq_len=train_len))
    e = cfg.eval
    if e.mode not in MODES:
        raise ConfigError(f"unknown eval.mode {e.mode!r}; valid: {', '.join(MODES)}")
    if not e.factors or any(f < 1 for f in e.factors):
        raise ConfigError(f"eval.factors must be integers >= 1, got {e.factors}")
    if e.stride is not None and e.stride < 1:
        raise ConfigError(f"eval.stride must be >= 1, got {e.stride}")
    if e.stride is not None and e.mode != "sliding":
        raise ConfigError(f"eval.stride applies to sliding-window evaluation only; add --set eval.mode=sliding "
                          f"(eval.mode is {e.mode!r})")
    if cfg.cpu_threads < 0:
        raise ConfigError(f"cpu_threads must be >= 0 (0 = torch's default), got {cfg.cpu_threads}")
    if not cfg.positions:
        raise ConfigError("positions is empty; valid: " + ", ".join(POSITION.keys()))
    for p in cfg.positions:
        POSITION.get(p)  # UnknownKeyError lists the valid keys
    if "rope_scalings" not in keys_set:  # the preset's scalings apply to the trained models they rescale
        cfg = replace(cfg, rope_scalings=tuple(s for s in cfg.rope_scalings if s in POSITION and
                                               POSITION.get(s).supports.get("rescales") in cfg.positions))
    for s in cfg.rope_scalings:
        entry = POSITION.get(s)
        if entry.supports.get("rescales") and entry.supports["rescales"] not in cfg.positions:
            raise ConfigError(f"rope_scalings: {s!r} rescales the {entry.supports['rescales']!r} model, which "
                              f"positions does not train; add it to positions or drop the scaling "
                              f"(--set rope_scalings=)")
        if not entry.supports.get("rescales"):
            valid = [k for k in POSITION.keys() if POSITION[k].supports.get("rescales")]
            raise ConfigError(f"rope_scalings: {s!r} is not a RoPE scaling; valid: {', '.join(valid)}")
    if e.decode_chunk < 1:
        raise ConfigError(f"eval.decode_chunk must be >= 1, got {e.decode_chunk}")
    probe_keys = sorted(k for k in keys_set if k.startswith("probe."))
    if probe_keys and not cfg.passkey:
        raise ConfigError(f"{probe_keys[0]} applies to the retrieval probes, which are off; add --set passkey=true")
    if cfg.passkey:
        pr = cfg.probe
        if not pr.tasks:
            raise ConfigError(f"probe.tasks is empty; valid: {', '.join(PROBES)}")
        for task in pr.tasks:
            if task not in PROBES:
                raise ConfigError(f"unknown probe task {task!r}; valid: {', '.join(PROBES)}")
        if pr.digits < 1 or pr.trials < 1 or not 1 <= pr.keys <= 26:
            raise ConfigError(f"probe.digits and probe.trials must be >= 1 and probe.keys in 1..26 "
                              f"(got {pr.digits}, {pr.trials}, {pr.keys})")
        for task in pr.tasks:
            probe = probe_of(cfg, task)
            if cfg.model.train_len < probe.overhead - 1:
                raise ConfigError(f"the {task} probe with {pr.digits} digits"
                                  f"{f' and {pr.keys} keys' if task == 'multikey' else ''} needs train_len >= "
                                  f"{probe.overhead - 1}, got {cfg.model.train_len}")
        if any(not 0.0 <= d <= 1.0 for d in pr.depths):
            raise ConfigError(f"probe.depths must lie in [0, 1], got {pr.depths}")
    return cfg


def _honour_model_slots(base: ExtrapolationConfig, cfg: ExtrapolationConfig, keys: set[str]) -> ExtrapolationConfig:
    """``--set model.position=X`` restricts the sweep to X (a ``rope_*`` scaling: the rope model evaluated with
    it); model settings the suite decides per job are refused rather than ignored."""
    if "model.position" in keys:
        if keys & {"positions", "rope_scalings"}:
            raise ConfigError("model.position (one variant) and positions / rope_scalings (a sweep) both choose what "
                              "is trained; set one of them")
        pos = cfg.model.position
        entry = POSITION.get(pos)  # UnknownKeyError lists the valid keys
        if entry.supports.get("rescales"):  # an inference-time scaling: the model it rescales, scored with it
            cfg = replace(cfg, positions=(entry.supports["rescales"],), rope_scalings=(pos,))
        else:
            cfg = replace(cfg, positions=(pos,), rope_scalings=())
    decided = {"model.rope_scale": "the suite sets the RoPE scale of every rope_* row to eval_len / train_len",
               "train.eval_every": "the suite evaluates each model once, after training",
               "model.vocab_size": "the vocabulary comes from the data (data.vocab_size for a .bin file)"}
    for k, why in decided.items():
        if k in keys:
            raise ConfigError(f"{k} cannot be set for the extrapolation suite: {why}")
    if not cfg.model.causal:
        raise ConfigError("model.causal=false: a language model that sees the tokens it predicts scores a leaked "
                          "perplexity; the extrapolation suite trains causal models only")
    return cfg


def probe_of(cfg: ExtrapolationConfig, task: str) -> Probe:
    """The :class:`ablate.evaluate.Probe` a probe task runs with these settings."""
    return Probe(task, cfg.probe.digits, cfg.probe.keys)


def eval_tokens(cfg: ExtrapolationConfig) -> int:
    """Targets scored at every length: ``eval.tokens`` rounded down to a multiple of the longest eval_len."""
    longest = max(cfg.eval_lens)
    n = (cfg.eval.tokens // longest) * longest
    if n < 1:
        raise ConfigError(f"eval.tokens={cfg.eval.tokens} is shorter than the longest eval_len={longest}")
    return n


def eval_stride(cfg: ExtrapolationConfig) -> int | None:
    return (cfg.eval.stride or cfg.model.train_len) if cfg.eval.mode == "sliding" else None


PROTOCOL = 2  # what a row measures; v2: held-out documents, corpus hash, fairseq sinusoidal init, reference YaRN


def config_id(cfg: ExtrapolationConfig, corpus: Any, kind: str = "lm") -> str:
    """Hash of everything that shapes the trained weights (model without its position slot, training, data and the
    corpus's identity; a probe's settings for probe models), so switching the probes on or off never retrains the
    LMs. ``corpus``: a :class:`ablate.data.Corpus` (or its name)."""
    model = flatten(cfg.model)
    model.pop("position", None)
    tr = flatten(cfg.train)
    tr.pop("seed", None)  # a key field of its own
    name = getattr(corpus, "name", corpus)
    fields: dict[str, Any] = {"model": model, "train": tr, "data": data_fields(cfg.data, corpus), "corpus": name,
                              "protocol": PROTOCOL}
    if getattr(corpus, "hash", None):
        fields["corpus_hash"] = corpus.hash
    if kind != "lm":  # probe models train on synthetic sequences
        probe = flatten(cfg.probe)
        probe.pop("tasks", None)
        if kind == "passkey":
            probe.pop("keys", None)
        fields = {k: v for k, v in fields.items() if k not in ("data", "corpus", "corpus_hash")}
        fields.update(kind=kind, probe=probe)
    return row_key(fields)


def decodes_incrementally(position: str) -> bool:
    """Positions whose rotation depends on the current length (dynamic NTK) are scored as they are used: decoding
    through the KV cache past train_len (a full-window forward would make them static)."""
    return POSITION.get(position).supports_("needs_raw_cache")


# ---------------------------------------------------------------------------------------------------------------
# The plan: jobs (one trained model each) and the rows each one owes


@dataclass
class RowSpec:
    key: dict[str, Any]
    evaluated: str  # position key used at evaluation
    eval_len: int
    scale: float
    depth: float | None = None


@dataclass
class Job:
    kind: str  # "lm" or "passkey"
    position: str  # trained variant
    seed: int
    rows: list[RowSpec]

    @property
    def name(self) -> str:
        return f"{'' if self.kind == 'lm' else self.kind + '-'}{self.position}-s{self.seed}"


def evaluated_variants(cfg: ExtrapolationConfig, position: str) -> list[str]:
    """The trained variant itself, then every inference-time scaling in ``rope_scalings`` that rescales it."""
    return [position] + [s for s in cfg.rope_scalings if POSITION.get(s).supports.get("rescales") == position]


def scales_embeddings(cfg: ExtrapolationConfig, position: str) -> bool:
    """A sinusoidal model multiplies its token embeddings by sqrt(d_model), as Vaswani et al. (2017, sec. 3.4)
    do and as the training grid does: otherwise unit-amplitude sinusoids drown the small embeddings and the model
    is handicapped at train_len already. (True here means: added for this variant, not set by the user.)"""
    return POSITION.get(position).supports_("scale_embeddings") and not cfg.model.scale_embeddings


def job_model(cfg: ExtrapolationConfig, position: str) -> ModelConfig:
    """The model trained for ``position``."""
    return replace(cfg.model, position=position,
                   scale_embeddings=cfg.model.scale_embeddings or scales_embeddings(cfg, position))


def plan_jobs(cfg: ExtrapolationConfig, preset: str, corpus: Corpus, device: str, seeds: list[int]) -> list[Job]:
    m = cfg.model
    tokens, stride = eval_tokens(cfg), eval_stride(cfg)
    jobs: list[Job] = []
    kinds = ["lm"] + (list(cfg.probe.tasks) if cfg.passkey else [])
    for kind in kinds:
        common = {"preset": preset, "config_id": config_id(cfg, corpus, kind), "train_len": m.train_len,
                  "attention": m.attention, "norm": m.norm, "activation": m.activation, "n_kv_heads": m.n_kv_heads,
                  "data": corpus.name if kind == "lm" else "passkey", "device": device}
        for seed in seeds:
            for pos in cfg.positions:
                evaluated = evaluated_variants(cfg, pos)
                rows = []
                for ev in evaluated:
                    for L in cfg.eval_lens:
                        scale = L / m.train_len if ev != pos else 1.0
                        base = {**common, "trained_position": pos, "position": ev, "rope_scale": scale, "seed": seed,
                                "eval_len": L}
                        if scales_embeddings(cfg, pos):  # a different model from the unscaled one: its own key
                            base["scale_embeddings"] = True
                        if kind == "lm":
                            key = {**base, "metric": METRIC_PPL, "mode": cfg.eval.mode, "stride": stride,
                                   "tokens": tokens, "pos_bins": cfg.eval.pos_bins}
                            if decodes_incrementally(ev):
                                key.update(decode="incremental", decode_chunk=cfg.eval.decode_chunk)
                            rows.append(RowSpec(key, ev, L, scale))
                        else:
                            for d in cfg.probe.depths:
                                key = {**base, "metric": f"{kind}_acc", "depth": float(d),
                                       "trials": cfg.probe.trials, "digits": cfg.probe.digits}
                                if kind == "multikey":
                                    key["keys"] = cfg.probe.keys
                                rows.append(RowSpec(key, ev, L, scale, float(d)))
                jobs.append(Job(kind, pos, seed, rows))
    return jobs


def plan_caveats(cfg: ExtrapolationConfig) -> list[str]:
    """One line per degenerate or untrained setup in the plan (``ablate run`` prints them before training)."""
    from ablate.variants.positions import position_caveats

    lines: list[str] = []
    for pos in cfg.positions:
        evaluated = evaluated_variants(cfg, pos)
        for ev in evaluated:
            longest = max(cfg.eval_lens)
            scale = longest / cfg.model.train_len if ev != pos else 1.0
            mcfg = replace(job_model(cfg, pos), position=ev, rope_scale=scale)
            for c in position_caveats(ev, mcfg, cfg.eval_lens, incremental=decodes_incrementally(ev)):
                line = f"{ev}: {c.message}" if not c.message.startswith(ev) else c.message
                if line not in lines:
                    lines.append(line)
    return lines


def check_memory(cfg: ExtrapolationConfig, device: str) -> None:
    """Refuse (one line) a plan whose training step or longest evaluation cannot fit in the device's memory, by the
    closed-form lower bound of :func:`ablate.validate.estimate_memory_bytes`."""
    from ablate.validate import check_fits, estimate_memory_bytes

    half = device == "cuda" and cfg.train.amp is not None
    db = {"dtype_bytes": 2 if half else 4, "param_dtype_bytes": 4}
    longest = max(cfg.eval_lens)
    for pos in cfg.positions:
        m = job_model(cfg, pos)
        check_fits(estimate_memory_bytes(m, batch=cfg.train.batch_size, seq_len=cfg.train.seq_len, training=True,
                                         **db), device, what=f"training {pos}", hint="train.batch_size or model.*")
        check_fits(estimate_memory_bytes(m, batch=max(1, cfg.eval.batch_tokens // longest), seq_len=longest,
                                         training=False, **db), device, what=f"evaluating {pos} at {longest}",
                   hint="eval.batch_tokens or eval.factors")


def validate_plan(cfg: ExtrapolationConfig, device: str) -> None:
    """Every model the plan builds or swaps to must be valid here, before any compute."""
    from ablate.validate import validate_model

    for pos in cfg.positions:
        validate_model(job_model(cfg, pos), device=device)
    for pos in cfg.positions:
        for s in evaluated_variants(cfg, pos)[1:]:
            for L in cfg.eval_lens:
                validate_model(replace(cfg.model, position=s, rope_scale=L / cfg.model.train_len), device=device)


# ---------------------------------------------------------------------------------------------------------------
# Training with checkpoints


def _ckpt_path(ckpt_dir: Path, job: Job, cid: str, scaled: bool = False) -> Path:
    return ckpt_dir / f"{job.name}{'-xemb' if scaled else ''}-{cid}.pt"


def _save(path: Path, payload: dict) -> None:
    save_checkpoint(path, payload)


def _train_job(cfg: ExtrapolationConfig, job: Job, corpus: Corpus, device: str, ckpt: Path,
               progress: Any, reuse: bool = True) -> tuple[Any, dict]:
    """(model or None, training info); loads the checkpoint when there is one (and ``reuse``)."""
    from ablate.model import Transformer

    mcfg = job_model(cfg, job.position)
    if reuse and ckpt.is_file():
        try:
            payload = load_checkpoint(ckpt)
            info = payload["info"]
            if payload.get("state_dict") is None:
                return None, info
            torch.manual_seed(job.seed)
            model = Transformer(mcfg)
            model.load_state_dict(payload["state_dict"])
            info = {**info, "from_checkpoint": True}
            return model.to(device), info
        except (CorruptCheckpoint, KeyError, RuntimeError) as exc:  # truncated, tampered, from another model
            why = exc.why if isinstance(exc, CorruptCheckpoint) else f"{type(exc).__name__}: {exc}"
            sys.stderr.write(f"ablate: warning: checkpoint {ckpt} is unusable ({' '.join(why.split())[:200]}); "
                             f"retraining {job.name}\n")
            ckpt.unlink(missing_ok=True)
    torch.manual_seed(job.seed)
    model = Transformer(mcfg).to(device)
    tcfg = replace(cfg.train, seed=job.seed)
    loss_fn = lm_loss
    if job.kind != "lm":
        tcfg = replace(tcfg, steps=cfg.probe.steps or tcfg.steps)
        batches = PasskeyBatches(tcfg.batch_size, tcfg.seq_len, cfg.probe.digits, seed=job.seed, device=device,
                                 probe=probe_of(cfg, job.kind))
        loss_fn = passkey_loss(cfg.probe.digits, cfg.probe.answer_weight)
    else:
        batches = Batches(corpus.train, tcfg.batch_size, tcfg.seq_len, seed=job.seed, device=device)
    res = train(model, tcfg, batches, device=device, progress=progress, description=f"train {job.name}",
                **({"loss_fn": loss_fn} if loss_fn is not lm_loss else {}))
    info = {"train_status": res.status, "train_reason": res.reason, "diverged_step": res.diverged_step,
            "train_steps": res.steps, "train_loss": res.stats.get("final_train_loss"),
            "train_s": res.stats.get("elapsed_s"), "train_tokens_per_s": res.stats.get("tokens_per_s"),
            "peak_mem_bytes": res.stats.get("peak_mem_bytes"), "n_params": model.num_params(),
            "from_checkpoint": False}
    _save(ckpt, {"info": info, "state_dict": model.state_dict() if res.ok else None,
                 "model_cfg": dataclasses.asdict(mcfg), "history": res.history})
    return (model if res.ok else None), info


# ---------------------------------------------------------------------------------------------------------------
# Run


def _out_dir(opts) -> Path:
    return Path(opts.out)


def _setup(opts):
    """(device, preset, cfg, corpus, jobs, results file): what run() and tasks() share."""
    from ablate.runner import resolve_device, results_path

    device = resolve_device(opts.device)
    preset = opts.preset or ("gpu" if device == "cuda" else "tiny")
    cfg = resolve(preset, opts.overrides)
    refuse_cpu_amp(cfg.train, opts.overrides, device)
    cfg, corpus = corpus_for(cfg, opts.data)
    validate_plan(cfg, device)
    tokens, stride = eval_tokens(cfg), eval_stride(cfg)  # the data must hold the evaluation: refused before a plan
    check_eval_span(corpus.val, span_needed(tokens, max(cfg.eval_lens), cfg.eval.mode, stride),
                    f"evaluation at eval_len={max(cfg.eval_lens)} ({tokens} tokens, {cfg.eval.mode})")
    if len(corpus.train) < cfg.train.seq_len + 1:
        raise ConfigError(f"training split holds {len(corpus.train)} tokens, fewer than seq_len+1 = "
                          f"{cfg.train.seq_len + 1}")
    check_memory(cfg, device)
    seeds = [cfg.train.seed + i for i in range(int(opts.seeds))]
    return device, preset, cfg, corpus, plan_jobs(cfg, preset, corpus, device, seeds), results_path(opts)


def tasks(opts):
    """(results file, one :class:`ablate.runner.Task` per trained model: a position variant x seed [x passkey])."""
    from ablate.runner import Task

    *_, jobs, out = _setup(opts)
    return out, [Task(j.name, tuple(row_key(r.key) for r in j.rows), f"{j.kind} {j.position} seed {j.seed}")
                 for j in jobs]


def run(opts) -> Path:
    """Run the suite as ``opts`` (an :class:`ablate.runner.RunOptions`) asks; returns the JSONL results file."""
    from ablate import distributed
    from ablate.runner import select_tasks

    if distributed.launched():
        raise ConfigError("the extrapolation suite runs one process per device; spread its trained variants with "
                          "--launcher gpus or slurm instead of --nproc-per-node")
    t_start = time.perf_counter()
    device, preset, cfg, corpus, jobs, out = _setup(opts)
    chosen = select_tasks([j.name for j in jobs], opts.only, "extrapolation task")
    jobs = [j for j in jobs if j.name in chosen]
    ckpt_dir = _out_dir(opts) / "extrapolation.ckpt"
    caveats = plan_caveats(cfg)
    if caveats and not opts.shard:
        from rich.console import Console

        err = Console(stderr=True)
        for line in caveats:
            err.print(f"[yellow]caveat:[/] {line}", highlight=False, soft_wrap=True)
    writer = ResultWriter(out, SUITE, resume=opts.resume, shard=opts.shard)
    cid = config_id(cfg, corpus)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    threads_before = torch.get_num_threads()
    if device == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)

    from ablate.progress import start_progress

    prog = start_progress(opts.progress)
    overall = prog.add_task("extrapolation", total=sum(len(j.rows) for j in jobs), info="") if prog else None
    trained = 0
    claims = Claims(out)
    try:
        for job in jobs:
            todo = [r for r in job.rows if not writer.done(r.key)]
            if prog:
                prog.update(overall, advance=len(job.rows) - len(todo), info=job.name)
            if not todo:
                continue
            if not claims.claim(job.name):  # another live run into this --out is on it
                if prog:
                    prog.update(overall, advance=len(todo))
                continue
            try:
                if opts.resume:  # it may have finished it between our start and our claim
                    finished = done_keys(out)
                    todo = [r for r in todo if row_key(r.key) not in finished]
                trained += _run_job(cfg, job, todo, corpus, device, writer, ckpt_dir, opts, prog, overall)
            finally:
                claims.release(job.name)
    finally:
        claims.release_all()
        if prog:
            prog.stop()
        torch.set_num_threads(threads_before)
    if claims.skipped:
        sys.stderr.write(f"ablate: {len(claims.skipped)} task(s) were being run by another process into the same "
                         f"--out and were left to it: " + ", ".join(f"{t} ({who})" for t, who in
                                                                      claims.skipped.items()) + "\n")
    elapsed = time.perf_counter() - t_start
    _print_summary(out, cid, preset, elapsed, trained)
    return out


def _run_job(cfg, job: Job, todo: list[RowSpec], corpus: Corpus, device: str, writer: ResultWriter, ckpt_dir: Path,
             opts, prog, overall) -> int:
    """Train (or load) one job's model and write its rows; returns 1 when a model was trained."""
    if not todo:
        return 0
    run_cfg = replace(cfg, model=job_model(cfg, job.position), train=replace(cfg.train, seed=job.seed))
    ckpt = _ckpt_path(ckpt_dir, job, config_id(cfg, corpus, job.kind), scaled=scales_embeddings(cfg, job.position))
    try:
        model, info = _train_job(cfg, job, corpus, device, ckpt, prog, reuse=opts.resume)
    except Exception as exc:  # OOM, a kernel that fails: every row of this job says so
        if _is_oom(exc) and device == "cuda":
            torch.cuda.empty_cache()
        for r in todo:
            writer.write_exception(exc, r.key, {"value": None, "unit": _unit(r)}, config=run_cfg)
        if prog:
            prog.update(overall, advance=len(todo))
        return 0
    trained = 0 if info.get("from_checkpoint") else 1
    if model is None:  # diverged
        reason = f"training diverged at step {info.get('diverged_step')}: {info.get('train_reason')}"
        for r in todo:
            writer.write("diverged", r.key, {"value": None, "unit": _unit(r), **info}, config=run_cfg,
                         reason=reason)
        if prog:
            prog.update(overall, advance=len(todo))
        return trained
    _evaluate_job(cfg, job, todo, model, corpus, device, writer, run_cfg, info, prog, overall)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return trained


def _unit(r: RowSpec) -> str:
    return "fraction" if r.depth is not None else "ppl"


def _is_oom(exc: BaseException) -> bool:
    return status_from_exception(exc)[0] == "oom"


def _caveats(cfg: ExtrapolationConfig, job: Job, r: RowSpec) -> dict[str, Any]:
    """The degenerate-setup caveats of this row's evaluated variant (codes and one-line messages)."""
    from ablate.variants.positions import position_caveats

    mcfg = replace(job_model(cfg, job.position), position=r.evaluated, rope_scale=r.scale)
    found = position_caveats(r.evaluated, mcfg, [r.eval_len], incremental=decodes_incrementally(r.evaluated))
    return {"caveats": [c.code for c in found], "caveat": "; ".join(c.message for c in found)} if found else {}


def _evaluate_job(cfg, job: Job, todo: list[RowSpec], model, corpus: Corpus, device: str, writer: ResultWriter,
                  run_cfg, info: dict, prog, overall) -> None:
    from ablate.stats import wilson_interval

    current = (job.position, 1.0)
    amp = cfg.train.amp if device == "cuda" else None
    tokens, stride = eval_tokens(cfg), eval_stride(cfg)
    for r in todo:
        want = (r.evaluated, r.scale)
        metrics: dict[str, Any] = {"unit": _unit(r), "scale_factor": r.eval_len / cfg.model.train_len, **info,
                                   **_caveats(cfg, job, r)}
        if job.kind == "lm":
            metrics.update({k: v for k, v in corpus.describe().items() if k not in r.key})
        try:
            if want != current:
                model.set_position(r.evaluated, rope_scale=r.scale)
                current = want
            if r.depth is None:
                chunk = cfg.eval.decode_chunk if decodes_incrementally(r.evaluated) else None
                res = evaluate(model, corpus.val, r.eval_len, tokens=tokens, mode=cfg.eval.mode, stride=stride,
                               batch_tokens=cfg.eval.batch_tokens, byte_level=corpus.byte_level, device=device,
                               amp=amp, pos_bins=cfg.eval.pos_bins, decode_chunk=chunk,
                               prefill=cfg.model.train_len)
                metrics.update(value=res.ppl, loss=res.loss, ppl=res.ppl, bpb=corpus.bpb(res.loss, res.tokens),
                               eval_bytes=corpus.scored_bytes(res.tokens), windows=res.windows,
                               pos_loss=res.pos_loss, pos_bin=res.pos_bin, eval_s=res.elapsed_s)
                if "decode" not in r.key:
                    metrics["decode"] = "full"
            else:
                probe = probe_of(cfg, job.kind)
                k = probe_correct(model, probe, r.eval_len, r.depth, trials=cfg.probe.trials, seed=job.seed,
                                  device=device, amp=amp, batch_tokens=cfg.eval.batch_tokens)
                lo, hi = wilson_interval(k, cfg.probe.trials)
                metrics.update(value=k / cfg.probe.trials, correct=k, chance=probe.chance, ci_lo=lo, ci_hi=hi)
            if r.depth is None and not math.isfinite(metrics["loss"]):
                writer.write("diverged", r.key, {**metrics, "value": None}, config=run_cfg,
                             reason="non-finite evaluation loss")
            else:
                writer.write("ok", r.key, metrics, config=run_cfg)
        except PositionRangeError as exc:
            writer.write("unsupported", r.key, {**metrics, "value": None}, config=run_cfg,
                         reason=str(exc) if "no positions past max_len" in str(exc)
                         else f"no positions past max_len: {exc}")
        except Exception as exc:
            if _is_oom(exc) and device == "cuda":
                torch.cuda.empty_cache()
            writer.write_exception(exc, r.key, {**metrics, "value": None}, config=run_cfg)
        if prog:
            prog.update(overall, advance=1, info=f"{job.name} {r.evaluated} L={r.eval_len}")


# ---------------------------------------------------------------------------------------------------------------
# Summaries (shared by the terminal print and the report)

def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile for ``dof`` degrees of freedom."""
    from ablate.stats import t_ppf

    return t_ppf(0.975, dof) if dof >= 1 else float("nan")


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) via :func:`ablate.stats.summarize`; NaNs when undefined."""
    from ablate.stats import summarize

    s = summarize([None if v is None else float(v) for v in values], confidence=0.95)
    nan = float("nan")
    return (nan if s.mean is None else s.mean), (nan if s.half_width is None else s.half_width), s.n


PROTOCOL_COLS = ("preset", "config_id", "train_len", "mode", "stride", "tokens", "data", "device")


def _variant_order(df) -> list[str]:
    present = list(dict.fromkeys(df["position"].tolist()))
    order = [p for p in POSITIONS if p in present] + [s for s in ROPE_SCALINGS if s in present]
    return order + sorted(p for p in present if p not in order)


def _protocol_groups(df):
    cols = [c for c in PROTOCOL_COLS if c in df.columns]
    if not cols:
        return [({}, df)]
    out = []
    for keys, sub in df.groupby([df[c].astype(str) for c in cols], sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        first = sub.iloc[0]
        out.append(({c: first[c] for c in cols}, sub))
    return out


def protocol_line(p: dict) -> str:
    def g(k):
        v = p.get(k)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    mode = g("mode") or "?"
    stride = g("stride")
    mode_s = f"sliding window, stride {int(stride)}" if mode == "sliding" and stride is not None else (
        "non-overlapping windows" if mode == "nonoverlap" else mode)
    parts = [f"trained at {int(g('train_len'))} tokens" if g("train_len") is not None else None,
             mode_s,
             f"{int(g('tokens'))} held-out tokens scored at every length" if g("tokens") is not None else None,
             f"data {g('data')}" if g("data") else None,
             f"preset {g('preset')}" if g("preset") else None,
             f"device {g('device')}" if g("device") else None]
    return "; ".join(x for x in parts if x)


def ppl_summary(df):
    """Long frame: protocol columns, position, eval_len, mean, ci, n, status (of the non-ok rows), reason, the
    trained variant, its parameter count and the row caveats."""
    import pandas as pd

    rows = []
    sub = df[df.get("metric", pd.Series(dtype=str)) == METRIC_PPL]
    for pdict, g in _protocol_groups(sub):
        for (pos, L), cell in g.groupby(["position", "eval_len"], sort=False):
            ok = cell[cell["status"] == "ok"]
            mean, ci, n = mean_ci(ok["value"].tolist())
            bad = cell[cell["status"] != "ok"]
            params = [v for v in cell.get("n_params", pd.Series(dtype=float)).tolist() if _number(v)]
            caveat = [c for c in cell.get("caveat", pd.Series(dtype=str)).tolist() if isinstance(c, str) and c]
            rows.append({**pdict, "position": pos, "eval_len": int(L), "mean": mean, "ci": ci, "n": n,
                         "seeds": len(cell), "status": "ok" if len(bad) == 0 else str(bad["status"].iloc[0]),
                         "reason": "" if len(bad) == 0 else str(bad["reason"].iloc[0]),
                         "trained": str(cell["trained_position"].iloc[0]) if "trained_position" in cell else pos,
                         "params": int(params[0]) if params else None, "caveat": caveat[0] if caveat else ""})
    return pd.DataFrame(rows)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def per_seed_ppl(df) -> dict[tuple[str, int], dict[int, float]]:
    """``{(position, eval_len): {seed: perplexity}}`` over the ok perplexity rows (claims are paired by seed)."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    sub = df[(df["metric"] == METRIC_PPL) & (df["status"] == "ok")] if "metric" in df.columns else df.iloc[0:0]
    for r in sub.itertuples():
        if _number(r.value):
            out.setdefault((str(r.position), int(r.eval_len)), {})[int(r.seed)] = float(r.value)
    return out


def undertrained(summary, train_len: int, tol: float = 0.10) -> dict[str, float]:
    """Trained variants whose perplexity at train_len exceeds the best trained variant's by more than ``tol``:
    ``{variant: ratio to the best}``. Such a baseline is too weak for its extrapolation to mean much."""
    at = summary[(summary["eval_len"] == train_len) & (summary["position"] == summary["trained"])
                 & np.isfinite(summary["mean"])]
    if at.empty:
        return {}
    best = float(at["mean"].min())
    return {str(r.position): float(r.mean) / best for r in at.itertuples() if r.mean > (1.0 + tol) * best}


def effective_length(lens_ppl: list[tuple[int, float]], train_len: int, tol: float = 0.10) -> int | None:
    """Longest eval_len whose perplexity stays within ``tol`` of the perplexity at train_len (all shorter ones too)."""
    d = {int(L): v for L, v in lens_ppl}
    ref = d.get(int(train_len))
    if ref is None or not np.isfinite(ref):
        return None
    best = None
    for L in sorted(d):
        if L < train_len:
            continue
        v = d[L]
        if v is None or not np.isfinite(v) or v > (1.0 + tol) * ref:
            break
        best = L
    return best


def _cell(mean: float, ci: float, n: int, status: str) -> Any:
    if n == 0:
        return None if status == "unsupported" else status  # None prints as "—"
    if np.isfinite(ci):
        return f"{mean:.2f} ± {ci:.2f}"
    return round(mean, 2)


def ppl_table(summary, train_len: int, flags: dict[str, float] | None = None):
    """Wide table: rows = variants (incl. rope_* scalings), parameters, columns = eval lengths, cells = ppl [± 95%
    CI over seeds]; ``flags`` (from :func:`undertrained`) mark weak baselines."""
    import pandas as pd

    flags = flags or {}
    lens = sorted(summary["eval_len"].unique())
    out = []
    for pos in _variant_order(summary):
        s = summary[summary["position"] == pos]
        params = next((int(v) for v in s["params"].tolist() if _number(v)), None) if "params" in s else None
        row: dict[str, Any] = {"variant": pos, "params": f"{params:,}" if params is not None else None}
        for L in lens:
            c = s[s["eval_len"] == L]
            key = f"{L}" + (" (train)" if L == train_len else f" ({L // train_len}x)")
            row[key] = _cell(c["mean"].iloc[0], c["ci"].iloc[0], int(c["n"].iloc[0]), c["status"].iloc[0]) \
                if len(c) else None
        trained = str(s["trained"].iloc[0]) if "trained" in s and len(s) else pos
        row["note"] = f"undertrained (×{flags[trained]:.2f} the best at train_len)" if trained in flags else ""
        out.append(row)
    df = pd.DataFrame(out)
    if not df["note"].astype(bool).any():
        df = df.drop(columns=["note"])
    if df["params"].isna().all():
        df = df.drop(columns=["params"])
    return df


def effective_table(summary, train_len: int):
    import pandas as pd

    out = []
    for pos in _variant_order(summary):
        s = summary[summary["position"] == pos].sort_values("eval_len")
        pairs = [(int(L), m) for L, m in zip(s["eval_len"], s["mean"])]
        eff = effective_length(pairs, train_len)
        ref = dict(pairs).get(train_len, float("nan"))
        ok = [(L, m) for L, m in pairs if np.isfinite(m)]
        longest = ok[-1] if ok else (None, float("nan"))
        out.append({"variant": pos, "ppl at train_len": round(ref, 3) if np.isfinite(ref) else None,
                    "effective length": eff, "x train_len": (eff / train_len) if eff else None,
                    "longest measured": longest[0],
                    "ppl there": round(longest[1], 3) if np.isfinite(longest[1]) else None,
                    "ratio to train_len": round(longest[1] / ref, 3) if np.isfinite(longest[1]) and
                    np.isfinite(ref) and ref > 0 else None})
    return pd.DataFrame(out)


def _print_summary(out: Path, cid: str, preset: str, elapsed: float, trained: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        df = to_frame(out)
    except Exception as exc:  # the run itself succeeded; never fail on the print
        console.print(f"[yellow]could not read {out}: {exc}[/]")
        return
    if "config_id" not in df.columns:
        return
    df = df[(df["config_id"] == cid) & (df["suite"] == SUITE)]
    summary = ppl_summary(df)
    if summary.empty:
        return
    for pdict, g in _protocol_groups(summary):
        train_len = int(pdict.get("train_len") or g["eval_len"].min())
        wide = ppl_table(g, train_len)
        table = Table(title="extrapolation: perplexity by evaluation length", caption=protocol_line(pdict))
        for c in wide.columns:
            table.add_column(str(c), justify="left" if c == "variant" else "right")
        for _, r in wide.iterrows():
            table.add_row(*[("—" if v is None or (isinstance(v, float) and not math.isfinite(v))
                             else f"{v:.2f}" if isinstance(v, float) else str(v)) for v in r.tolist()])
        console.print(table)
        eff = effective_table(g, train_len)
        console.print("effective length (ppl within 10% of train_len): " + ", ".join(
            f"{r['variant']}={r['effective length'] or '—'}" for _, r in eff.iterrows()))
    try:
        allrows = to_frame(out)
        allrows = allrows[allrows["suite"] == SUITE]
    except Exception:
        allrows = None
    for task in PROBES:
        if allrows is None or "metric" not in allrows.columns:
            break
        pk = allrows[(allrows["metric"] == f"{task}_acc") & (allrows["status"] == "ok")]
        if pk.empty:
            continue
        wide = probe_table(pk)
        table = Table(title=f"{task} retrieval accuracy [95% Wilson interval] (over depths and seeds)",
                      caption=f"chance {probe_chance(pk):.2f}")
        for c in wide.columns:
            table.add_column(str(c), justify="left" if c == "variant" else "right")
        for _, r in wide.iterrows():
            table.add_row(*[str(v) for v in r.tolist()])
        console.print(table)
    console.print(f"{len(df)} rows in {out}; trained {trained} model(s); {elapsed:.1f} s")


# ---------------------------------------------------------------------------------------------------------------
# Report


def _notes(summary, train_len: int, flags: dict[str, float], tol: float) -> list[str]:
    """Reading notes: degenerate setups the rows carry (caveats), weak baselines, and method effects."""
    notes = []
    for pos in _variant_order(summary):  # the caveat at the longest length that has one says the most
        s = summary[(summary["position"] == pos) & (summary["caveat"] != "")] if "caveat" in summary else summary[:0]
        if len(s):
            notes.append(f"* **caveat** `{pos}`: {s.sort_values('eval_len')['caveat'].iloc[-1]}")
    for pos, ratio in flags.items():
        notes.append(f"* **undertrained** `{pos}`: its perplexity at train_len is ×{ratio:.2f} the best trained "
                     f"variant's (tolerance ×{1 + tol:.2f}); its extrapolation is that of a weaker model.")
    bounded = [p for p in _variant_order(summary) if p in POSITION and POSITION.get(p).supports_("max_len_bound")]
    for p in bounded:
        if not any(f"`{p}`" in n for n in notes):
            notes.append(f"* `{p}` has a table of train_len rows, as in the papers: longer positions have no "
                         "parameters (—).")
    return (["### Notes", ""] + notes + [""]) if notes else []


# ---------------------------------------------------------------------------------------------------------------
# Retrieval probes (passkey, multikey)


def _probe_counts(pk) -> "Any":
    """Rows with integer ``correct`` / ``trials`` (older rows have only the accuracy)."""
    import pandas as pd

    pk = pk.copy()
    trials = pd.to_numeric(pk["trials"], errors="coerce")
    acc = pd.to_numeric(pk["value"], errors="coerce")
    correct = pd.to_numeric(pk["correct"], errors="coerce") if "correct" in pk else acc * trials
    pk["trials_n"] = trials.fillna(0).astype(int)
    pk["correct_n"] = correct.fillna(acc * trials).round().fillna(0).astype(int)
    return pk


def probe_chance(pk) -> float:
    vals = [float(v) for v in pk.get("chance", []).tolist() if _number(v)] if "chance" in pk else []
    if vals:
        return max(vals)
    digits = int(pk["digits"].iloc[0]) if "digits" in pk and _number(pk["digits"].iloc[0]) else 2
    return 10.0 ** -digits


def probe_summary(pk):
    """Long frame: position, eval_len, correct, trials, acc, Wilson lo/hi -- pooled over depths and seeds."""
    import pandas as pd

    from ablate.stats import wilson_interval

    pk = _probe_counts(pk)
    rows = []
    for (pos, L), g in pk.groupby(["position", "eval_len"], sort=False):
        k, n = int(g["correct_n"].sum()), int(g["trials_n"].sum())
        lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
        rows.append({"position": pos, "eval_len": int(L), "correct": k, "trials": n, "acc": k / n if n else
                     float("nan"), "lo": lo, "hi": hi, "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows)


def probe_table(pk):
    """Wide table: variants x eval lengths, cells ``acc [lo, hi]`` (95% Wilson, pooled over depths and seeds)."""
    import pandas as pd

    summ = probe_summary(pk)
    lens = sorted(summ["eval_len"].unique())
    out = []
    for pos in _variant_order(summ):
        s = summ[summ["position"] == pos]
        row: dict[str, Any] = {"variant": pos}
        for L in lens:
            c = s[s["eval_len"] == L]
            row[str(int(L))] = (f"{c['acc'].iloc[0]:.2f} [{c['lo'].iloc[0]:.2f}, {c['hi'].iloc[0]:.2f}]"
                                if len(c) and c["trials"].iloc[0] else "—")
        out.append(row)
    return pd.DataFrame(out)


PROBE_TITLES = {"passkey": "Passkey retrieval (one needle, digit-free filler)",
                "multikey": "Multi-key needle in a haystack (RULER-style: labelled needles, numbers in the filler)"}


def _probe_report(df, out_dir: Path, pal: dict, markers: dict) -> tuple[list[Path], list[str]]:
    import matplotlib.pyplot as plt

    from ablate.tables import plot_style, savefig, write_table

    written: list[Path] = []
    index: list[str] = []
    for task in PROBES:
        pk = df[df["metric"] == f"{task}_acc"] if "metric" in df.columns else df.iloc[0:0]
        pk = pk[pk["status"] == "ok"]
        if pk.empty:
            continue
        chance = probe_chance(pk)
        summ = probe_summary(pk)
        order = _variant_order(summ)
        seeds = int(summ["seeds"].max())
        keys = int(pk["keys"].iloc[0]) if task == "multikey" and "keys" in pk and _number(pk["keys"].iloc[0]) \
            else None
        what = (f"chance {chance:.2f} = a random needle's value of {keys}" if keys else
                f"chance {chance:.2g} = a random {int(round(-math.log10(chance)))}-digit number")
        md, tex = write_table(probe_table(pk), out_dir / f"extrapolation_{task}",
                              caption=f"{PROBE_TITLES[task]}: accuracy by context length, pooled over needle depths "
                                      f"and {seeds} seed(s), with 95% Wilson intervals; {what}.")
        written += [md, tex]
        with plot_style():
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            for pos in order:
                s = summ[summ["position"] == pos].sort_values("eval_len")
                ax.plot(s["eval_len"], s["acc"], marker=markers.get(pos, "o"), ms=4, lw=1.5, color=pal.get(pos),
                        ls="--" if pos in ROPE_SCALINGS else "-", label=pos)
                ax.fill_between(s["eval_len"], s["lo"], s["hi"], color=pal.get(pos), alpha=0.12, lw=0)
            ax.axhline(chance, color="0.3", ls=":", lw=1.2)
            ax.text(1.0, chance, " chance", transform=ax.get_yaxis_transform(), va="bottom", ha="right", fontsize=8,
                    color="0.3")
            lens = sorted(summ["eval_len"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(lens)
            ax.set_xticklabels([str(int(L)) for L in lens])
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("accuracy (95% Wilson band)")
            ax.set_title(PROBE_TITLES[task].split(" (")[0])
            ax.legend(fontsize=7, ncol=2, frameon=False)
            written += list(savefig(fig, out_dir / f"extrapolation_{task}_vs_length"))
        written += _probe_heatmaps(pk, order, out_dir / f"extrapolation_{task}")
        index += [f"## {PROBE_TITLES[task]}", "", md.read_text(), ""] + _probe_notes(summ, chance, order) + [
                  f"![{task} vs length](extrapolation_{task}_vs_length.png)", "",
                  f"![{task} by depth](extrapolation_{task}.png)", ""]
    return written, index


def _probe_notes(summ, chance: float, order: list[str]) -> list[str]:
    """Variants that did not learn the probe: at the shortest length (train_len) their accuracy is not above chance
    by a one-sided exact binomial test, so their accuracy past it says nothing about extrapolation."""
    from ablate.stats import above_chance

    shortest = int(summ["eval_len"].min())
    at = summ[summ["eval_len"] == shortest]
    failed = [p for p in order if len(at[at["position"] == p]) and
              not above_chance(int(at[at["position"] == p]["correct"].iloc[0]),
                               int(at[at["position"] == p]["trials"].iloc[0]), chance)]
    if not failed:
        return []
    if len(failed) == len(at):
        return [f"**Not learned:** no variant retrieves above chance ({chance:.2f}) at {shortest} tokens, where the "
                f"models were trained (one-sided binomial test, 5%): the probe is too hard for this model and budget, "
                f"and this table says nothing about extrapolation.", ""]
    return [f"**Not learned** at {shortest} tokens (not above chance {chance:.2g}, one-sided binomial test, 5%): "
            + ", ".join(f"`{p}`" for p in failed) + "; their accuracy past it says nothing about extrapolation.", ""]


def _probe_heatmaps(pk, order: list[str], stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import pandas as pd

    from ablate.tables import plot_style, savefig

    pk = pk.copy()
    pk["acc"] = pd.to_numeric(pk["value"], errors="coerce")
    agg = pk.groupby(["position", "eval_len", "depth"], sort=False)["acc"].mean().reset_index()
    n = len(order)
    cols = min(5, n)
    rows_ = math.ceil(n / cols)
    all_lens = sorted(int(L) for L in agg["eval_len"].unique())
    all_depths = sorted(float(d) for d in agg["depth"].unique())
    with plot_style():
        fig, axes = plt.subplots(rows_, cols, figsize=(2.5 * cols + 0.8, 2.4 * rows_), squeeze=False,
                                 constrained_layout=True)
        im = None
        for i, pos in enumerate(order):
            ax = axes[i // cols][i % cols]
            h = agg[agg["position"] == pos].pivot_table(index="depth", columns="eval_len", values="acc")
            h = h.reindex(index=all_depths, columns=all_lens)
            im = ax.imshow(h.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper")
            ax.set_title(pos, fontsize=9)
            ax.set_xticks(range(len(all_lens)))
            ax.set_xticklabels([str(L) for L in all_lens], fontsize=7, rotation=45)
            ax.set_yticks(range(len(all_depths)))
            ax.set_yticklabels([f"{d:g}" for d in all_depths], fontsize=7)
            ax.grid(False)
            if i % cols == 0:
                ax.set_ylabel("needle depth")
            if i // cols == rows_ - 1 or i + cols >= n:
                ax.set_xlabel("eval_len")
        for j in range(n, rows_ * cols):
            axes[j // cols][j % cols].axis("off")
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
        return list(savefig(fig, stem))


def _slug(p: dict, many: bool) -> str:
    if not many:
        return ""
    bits = [str(p.get("preset", "")), str(p.get("mode", "")), f"L{p.get('train_len')}"]
    if p.get("mode") == "sliding":
        bits.append(f"s{int(p['stride'])}")
    bits.append(str(p.get("config_id", ""))[:6])
    return "_" + "-".join(b for b in bits if b)


def variant_style() -> tuple[dict[str, Any], dict[str, str]]:
    """One colour (colour-blind palette) and one marker per position key, the same in every figure."""
    import seaborn as sns

    keys = list(POSITIONS) + list(ROPE_SCALINGS)
    colors = sns.color_palette("colorblind", n_colors=len(keys))
    marks = "osD^vP*Xph"
    return dict(zip(keys, colors)), {k: marks[i % len(marks)] for i, k in enumerate(keys)}


def report(df, out_dir: Path) -> list[Path]:
    """Tables (Markdown + LaTeX), figures (PNG + SVG) and an index for the extrapolation rows in ``df``."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ablate.claims import claims_frame, extrapolation_claims
    from ablate.tables import plot_style, savefig, to_markdown, write_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    index: list[str] = ["<!-- ablate:extrapolation -->", "# Length extrapolation", "",
                        "Train short, test long: each position variant is trained at `train_len` and evaluated on the "
                        "same held-out tokens at longer lengths (Press et al. 2022, Fig. 1). The `rope_*` rows are the "
                        "`rope` model evaluated with an inference-time RoPE scaling (scale = eval_len / train_len), "
                        "without retraining; `rope_dynamic_ntk` is scored token by token through the KV cache past "
                        "train_len, as it is used. Perplexity: lower is better; ± is the 95% t-interval over seeds.",
                        ""]
    if df.empty or "metric" not in df.columns:
        index.append("(no extrapolation rows)")
    pal, markers = variant_style()
    ppl_rows = df[df["metric"] == METRIC_PPL] if "metric" in df.columns else df.iloc[0:0]
    groups = _protocol_groups(ppl_rows) if not ppl_rows.empty else []
    many = len(groups) > 1
    for pdict, g in groups:
        train_len = int(pdict["train_len"])
        slug = _slug(pdict, many)
        summary = ppl_summary(g)
        seeds = int(summary["seeds"].max()) if not summary.empty else 0
        line = protocol_line(pdict) + f"; {seeds} seed(s)"
        tol = FAIR_TOL
        flags = undertrained(summary, train_len, tol)
        wide = ppl_table(summary, train_len, flags)
        md, tex = write_table(wide, out_dir / f"extrapolation_ppl{slug}",
                              caption=f"Perplexity by evaluation length ({line}). params: trained parameters. —: not "
                                      "measurable (no positions past the learned table).", floatfmt=".2f")
        eff = effective_table(summary, train_len)
        md2, tex2 = write_table(eff, out_dir / f"extrapolation_effective_length{slug}",
                                caption=f"Effective length: the longest eval_len whose perplexity stays within 10% of "
                                        f"its perplexity at train_len ({line}).",
                                floatfmt={"ppl at train_len": ".2f", "ppl there": ".2f", "ratio to train_len": ".2f",
                                          "x train_len": ".0f", "effective length": ".0f", "longest measured": ".0f"})
        written += [md, tex, md2, tex2]
        index += [f"## Protocol{': ' + slug[1:] if slug else ''}", "", line, "",
                  "### Perplexity", "", md.read_text(), "", "### Effective length", "", md2.read_text(), ""]
        index += _notes(summary, train_len, flags, tol)

        # Figure 1: perplexity vs evaluation length, 95% CI bands over seeds.
        order = _variant_order(summary)
        with plot_style():
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for pos in order:
                s = summary[(summary["position"] == pos) & np.isfinite(summary["mean"])].sort_values("eval_len")
                if s.empty:
                    continue
                dashed = pos in ROPE_SCALINGS
                ax.plot(s["eval_len"], s["mean"], marker=markers.get(pos, "o"), ms=4, lw=1.6,
                        ls="--" if dashed else "-", color=pal.get(pos), label=pos)
                ci = s["ci"].fillna(0.0)
                if (ci > 0).any():
                    ax.fill_between(s["eval_len"], s["mean"] - ci, s["mean"] + ci, color=pal.get(pos), alpha=0.15,
                                    lw=0)
            ax.axvline(train_len, color="0.3", ls=":", lw=1.2)
            ax.text(train_len, 1.0, " train_len", transform=ax.get_xaxis_transform(), va="top", ha="left",
                    fontsize=8, color="0.3")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            lens = sorted(summary["eval_len"].unique())
            ax.set_xticks(lens)
            ax.set_xticklabels([str(int(L)) for L in lens])
            ax.set_xlabel("evaluation length (tokens)")
            ax.set_ylabel("perplexity (log scale; 95% CI bands)")
            ax.set_title(f"Extrapolation: trained at {train_len}")
            ax.legend(fontsize=7, ncol=2, frameon=False)
            written += list(savefig(fig, out_dir / f"extrapolation_ppl_vs_length{slug}"))

        # Figure 2: loss vs token position inside the window, one panel per eval length.
        ok = g[(g["status"] == "ok")] if "pos_loss" in g.columns else g.iloc[0:0]
        recs = []
        for r in ok.itertuples():
            pl, width = getattr(r, "pos_loss"), getattr(r, "pos_bin")
            if not isinstance(pl, (list, tuple)):
                continue
            for b, v in enumerate(pl):
                if v is not None and np.isfinite(v):
                    recs.append({"position": r.position, "eval_len": int(r.eval_len), "seed": r.seed,
                                 "token position": (b + 0.5) * float(width), "loss": float(v)})
        if recs:
            pdf = pd.DataFrame(recs)
            lens = sorted(pdf["eval_len"].unique())
            with plot_style():
                fig, axes = plt.subplots(1, len(lens), figsize=(3.0 * len(lens), 3.2), sharey=True, squeeze=False)
                for ax, L in zip(axes[0], lens):
                    sub = pdf[pdf["eval_len"] == L]
                    for pos in order:
                        s = sub[sub["position"] == pos]
                        if s.empty:
                            continue
                        m = s.groupby("token position", sort=True)["loss"].mean()
                        ax.plot(m.index, m.values, lw=1.2, ls="--" if pos in ROPE_SCALINGS else "-",
                                color=pal.get(pos), label=pos)
                    ax.axvline(train_len, color="0.3", ls=":", lw=1.0)
                    ax.set_title(f"eval_len {L}", fontsize=9)
                    ax.set_xlabel("token position in window")
                axes[0][0].set_ylabel("loss (nats/token, mean over seeds)")
                seen: dict[str, Any] = {}
                for ax in axes[0]:
                    for h, lab in zip(*ax.get_legend_handles_labels()):
                        seen.setdefault(lab, h)
                labels = [p for p in order if p in seen]
                handles = [seen[p] for p in labels]
                fig.legend(handles, labels, loc="upper center", ncol=min(10, len(labels)), fontsize=7,
                           frameon=False, bbox_to_anchor=(0.5, 1.08))
                written += list(savefig(fig, out_dir / f"extrapolation_loss_vs_position{slug}"))
        index += ["### Figures", "", f"![perplexity vs length](extrapolation_ppl_vs_length{slug}.png)", "",
                  f"![loss vs position](extrapolation_loss_vs_position{slug}.png)" if recs else "", ""]
        claims = extrapolation_claims(per_seed_ppl(g), train_len)
        if claims:
            cf = claims_frame(claims)
            md3, tex3 = write_table(cf, out_dir / f"extrapolation_claims{slug}",
                                    caption=f"Published claims vs this run ({line}); verdicts from 95% intervals over "
                                            "seeds (see ablate.claims).")
            written += [md3, tex3]
            counts = cf["verdict"].value_counts()
            tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "not reproduced",
                                                                         "inconclusive"))
            index += ["### Published claims vs this run", "", f"{tally} (of {len(cf)}).", "", to_markdown(cf), ""]

    probe_files, probe_index = _probe_report(df, out_dir, pal, markers)
    written += probe_files
    index += probe_index

    idx = out_dir / "extrapolation_index.md"  # `ablate report` writes OUT/index.md linking every suite's index
    tmp = idx.with_name(f".{idx.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(index).rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, idx)
    written.append(idx)
    return written


__all__ = ["SUITE", "POSITIONS", "ROPE_SCALINGS", "EvalSettings", "DataSettings", "PasskeySettings",
           "ExtrapolationConfig", "PRESETS", "resolve", "run", "report", "plan_jobs", "effective_length",
           "mean_ci", "ppl_summary", "ppl_table", "effective_table", "t_quantile_975", "per_seed_ppl", "undertrained",
           "probe_table", "probe_summary", "plan_caveats", "decodes_incrementally", "PROTOCOL", "variant_style"]
