"""The plan: jobs (one trained model each: a position variant x seed [x probe]) and the rows each one owes, the
models they train, and the checks made before any compute (caveats, memory, validity)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

from ablate.core.config import ModelConfig
from ablate.io.data import Corpus
from ablate.core.lr_sweep import sweep_jobs
from ablate.plan.estimate import EvalWork, TrainJob, planned_vocab
from ablate.plan.suitekit import task_id
from ablate.registry.keys import POSITION
from ablate.core.validate import check_fits, estimate_memory_bytes, validate_model
from ablate.variants.positions import position_caveats

from .config import (ExtrapolationConfig, config_id, decodes_incrementally, eval_set, eval_stride, eval_tokens,
                     rope_scale_specs, stream_budget)
from .constants import METRIC_PPL
from .finetune import FineTune, finetune_key, finetunes
from .stream import stream_keys


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
    finetune: FineTune | None = None  # the fine-tuning stage this job's model goes through (suites/.../finetune.py)

    @property
    def name(self) -> str:
        """The checkpoint and tracker-run name (``rope-s0``, ``passkey-rope-s0``): stored checkpoints keep it."""
        return f"{self.stem}-s{self.seed}"

    @property
    def stem(self) -> str:
        """What the job trains, without its seed: ``rope``, ``passkey-rope``, ``ft-rope_pi-x4-rope``."""
        return job_stem(self.kind, self.position, self.finetune)

    @property
    def task_id(self) -> str:
        """The launcher task id (:func:`ablate.plan.suitekit.task_id`): ``rope@s0``, ``passkey-rope@s0``."""
        return task_id(self.stem, self.seed)


def bca_key(cfg: ExtrapolationConfig) -> dict[str, Any]:
    """The key field of a perplexity row scored with blockwise causal attention (``eval.bca_block``; none when
    off, so rows without it keep their keys)."""
    return {} if cfg.eval.bca_block is None else {"bca_block": int(cfg.eval.bca_block)}


def job_stem(kind: str, position: str, finetune: FineTune | None = None) -> str:
    ft = f"{finetune.tag}-" if finetune is not None else ""
    return f"{'' if kind == 'lm' else kind + '-'}{ft}{position}"


def job_grid(cfg: ExtrapolationConfig, seeds: list[int]) -> Iterator[tuple[str, int, str, FineTune | None]]:
    """``(kind, seed, position, fine-tuning or None)`` of every model the run trains, in run order: per kind (the
    LM, then each probe task), per seed, per position variant -- each LM followed by its fine-tunings."""
    for kind in ["lm"] + (list(cfg.probe.tasks) if cfg.passkey else []):
        for seed in seeds:
            for pos in cfg.positions:
                yield kind, seed, pos, None
                if kind == "lm":
                    for ft in finetunes(cfg):
                        if POSITION.get(ft.scaling).supports.get("rescales") == pos:
                            yield kind, seed, pos, ft


def evaluated_variants(cfg: ExtrapolationConfig, position: str) -> list[str]:
    """The trained variant itself, then every inference-time scaling in ``rope_scalings`` that rescales it."""
    return [position] + [s for s in cfg.rope_scalings if POSITION.get(s).supports.get("rescales") == position]


def scales_embeddings(cfg: ExtrapolationConfig, position: str) -> bool:
    """Whether ``position``'s model multiplies its token embeddings by sqrt(d_model): ``model.scale_embeddings``,
    one treatment for every variant. The ALiBi paper's fairseq decoder scales the embeddings of every variant it
    trains (``embed_scale = sqrt(embed_dim)`` unless ``--no-scale-embedding``; embeddings N(0, d^-1/2), the tied
    output head unscaled), so the presets set it on; ``--set model.scale_embeddings=false`` turns it off for all."""
    return bool(cfg.model.scale_embeddings)


def job_model(cfg: ExtrapolationConfig, position: str) -> ModelConfig:
    """The model trained for ``position``."""
    return replace(cfg.model, position=position)


def rope_scale_rows(cfg: ExtrapolationConfig, trained: str, evaluated: str, eval_len: int
                    ) -> list[tuple[str | None, float]]:
    """``(rope_scale_mode, s)`` of each row of ``evaluated`` at ``eval_len``: ``(None, 1.0)`` for the trained variant
    itself; ``("dynamic", eval_len / train_len)`` for a length-dependent scaling (it finds s itself); otherwise one
    row per ``eval.rope_scales`` entry, ``("ideal", eval_len / train_len)`` or ``("fixed", s)``."""
    ideal = eval_len / cfg.model.train_len
    if evaluated == trained:
        return [(None, 1.0)]
    if decodes_incrementally(evaluated):
        return [("dynamic", ideal)]
    return [(mode, ideal if s is None else float(s)) for mode, s in rope_scale_specs(cfg)]


def plan_jobs(cfg: ExtrapolationConfig, preset: str, corpus: Corpus, device: str, seeds: list[int]) -> list[Job]:
    """Every job of the run (:func:`job_grid` order) with the rows it owes."""
    m = cfg.model
    es, stride = eval_set(cfg, corpus), eval_stride(cfg)
    commons: dict[str, dict[str, Any]] = {}
    jobs: list[Job] = []
    for kind, seed, pos, ft in job_grid(cfg, seeds):
        common = commons.get(kind)
        if common is None:
            common = commons[kind] = {
                "preset": preset, "config_id": config_id(cfg, corpus, kind), "train_len": m.train_len,
                "attention": m.attention, "norm": m.norm, "activation": m.activation, "n_kv_heads": m.n_kv_heads,
                "data": corpus.name if kind == "lm" else "passkey", "device": device}
        rows = (_finetune_rows(cfg, common, pos, seed, es, stride, ft) if ft is not None
                else _rows(cfg, kind, common, pos, seed, es, stride))
        jobs.append(Job(kind, pos, seed, rows, finetune=ft))
    return jobs


def _rows(cfg: ExtrapolationConfig, kind: str, common: dict[str, Any], pos: str, seed: int, es, stride
          ) -> list[RowSpec]:
    """The rows of a pre-trained model: every evaluated variant x eval_len x scale [x probe depth]."""
    rows = []
    for ev, L, (mode, scale) in ((ev, L, ms) for ev in evaluated_variants(cfg, pos) for L in cfg.eval_lens
                                 for ms in rope_scale_rows(cfg, pos, ev, L)):
        base = {**common, "trained_position": pos, "position": ev, "rope_scale": scale, "seed": seed,
                "eval_len": L, "scale_embeddings": scales_embeddings(cfg, pos)}
        if mode is not None:
            base["rope_scale_mode"] = mode
        if kind == "lm":
            key = {**base, "metric": METRIC_PPL, "mode": cfg.eval.mode, "stride": stride,
                   "tokens": es.tokens, "eval_set": es.hash, "pos_bins": cfg.eval.pos_bins, **bca_key(cfg)}
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
    if kind == "lm":  # StreamingLLM's modes on the trained model itself (stream.modes; none by default)
        base = {**common, "trained_position": pos, "position": pos, "rope_scale": 1.0, "seed": seed,
                "scale_embeddings": scales_embeddings(cfg, pos)}
        rows += [RowSpec(key, pos, L, 1.0) for key, L in stream_keys(cfg, base, es)]
    return rows


def _finetune_rows(cfg: ExtrapolationConfig, common: dict[str, Any], pos: str, seed: int, es, stride,
                   ft: FineTune) -> list[RowSpec]:
    """The rows of ``pos``'s model fine-tuned with ``ft``: its scaling at the fixed ``finetune.scale`` at every
    eval_len, keyed with ``finetune_steps``, ``finetune_len``, ``finetune_lr`` besides ``rope_scale_mode="fixed"``."""
    return [RowSpec({**common, "trained_position": pos, "position": ft.scaling, "rope_scale": ft.scale, "seed": seed,
                     "eval_len": L, "scale_embeddings": scales_embeddings(cfg, pos), "rope_scale_mode": "fixed",
                     **finetune_key(ft), "metric": METRIC_PPL, "mode": cfg.eval.mode, "stride": stride,
                     "tokens": es.tokens, "eval_set": es.hash, "pos_bins": cfg.eval.pos_bins, **bca_key(cfg)},
                    ft.scaling, L, ft.scale) for L in cfg.eval_lens]


def finetune_jobs(cfg: ExtrapolationConfig, common: dict[str, Any], pos: str, seed: int, es, stride) -> list[Job]:
    """One job per fine-tuning of ``pos``'s model (``finetune.scalings`` that rescale it)."""
    return [Job("lm", pos, seed, _finetune_rows(cfg, common, pos, seed, es, stride, ft), finetune=ft)
            for ft in finetunes(cfg) if POSITION.get(ft.scaling).supports.get("rescales") == pos]


def plan_caveats(cfg: ExtrapolationConfig) -> list[str]:
    """One line per degenerate or untrained setup in the plan (``ablate run`` prints them before training)."""
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
    closed-form lower bound of :func:`ablate.core.validate.estimate_memory_bytes`."""
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
    for ft in finetunes(cfg):
        check_fits(estimate_memory_bytes(job_model(cfg, POSITION.get(ft.scaling).supports["rescales"]),
                                         batch=ft.batch_size, seq_len=ft.seq_len, training=True, **db), device,
                   what=f"fine-tuning with {ft.scaling} at {ft.seq_len}", hint="finetune.scale or train.batch_size")


def validate_plan(cfg: ExtrapolationConfig, device: str) -> None:
    """Every model the plan builds or swaps to must be valid here, before any compute."""
    for pos in cfg.positions:
        validate_model(job_model(cfg, pos), device=device)
    for pos in cfg.positions:
        for s in evaluated_variants(cfg, pos)[1:]:
            for L in cfg.eval_lens:
                for _mode, scale in rope_scale_rows(cfg, pos, s, L):
                    validate_model(replace(cfg.model, position=s, rope_scale=scale), device=device)
    for ft in finetunes(cfg):
        validate_model(replace(cfg.model, position=ft.scaling, rope_scale=ft.scale), device=device)



def train_jobs(cfg: ExtrapolationConfig, seeds: list[int]) -> tuple[list[TrainJob], list[EvalWork]]:
    """What the run trains (the models of :func:`job_grid`, labelled with their task ids) and the forward passes that
    score them, for :mod:`ablate.plan.estimate` (``ablate run --dry-run``)."""
    tokens, stride = eval_tokens(cfg), eval_stride(cfg)
    jobs: list[TrainJob] = []
    evals: list[EvalWork] = []
    for pos in cfg.positions:  # the learning-rate sweep: once per variant, before its first seed
        sj, se = sweep_jobs(planned_vocab(job_model(cfg, pos), cfg.data.tokenizer), cfg.train, cfg.lr_sweep,
                            label=f"-{pos}")
        jobs, evals = jobs + sj, evals + se
    for kind, seed, pos, ft in job_grid(cfg, seeds):
        m = planned_vocab(job_model(cfg, pos), cfg.data.tokenizer)
        label = task_id(job_stem(kind, pos, ft), seed)
        if ft is not None:  # the fine-tuning stage: k steps at s x train_len, then every length
            jobs.append(TrainJob(m, ft.batch_size, ft.seq_len, ft.steps, label))
            for L in cfg.eval_lens:
                evals.append(EvalWork(m, L, tokens if stride is None else -(-tokens // min(stride, L)) * L))
            continue
        steps = cfg.train.steps if kind == "lm" else (cfg.probe.steps or cfg.train.steps)
        jobs.append(TrainJob(m, cfg.train.batch_size, cfg.train.seq_len, steps, label))
        for ev in evaluated_variants(cfg, pos):
            for L in cfg.eval_lens:
                if kind == "lm":  # sliding windows score `stride` new tokens per window of L
                    fwd = tokens if stride is None else -(-tokens // min(stride, L)) * L
                else:
                    fwd = cfg.probe.trials * len(cfg.probe.depths) * L
                # one forward per distinct scale: a fixed s equal to the ideal one is scored once
                for _scale in sorted({sc for _m, sc in rope_scale_rows(cfg, pos, ev, L)}):
                    evals.append(EvalWork(m, L, fwd))
        if kind == "lm":  # streaming: each token attends ~budget keys (recompute: a forward over budget tokens)
            c = stream_budget(cfg)
            for f in cfg.stream.factors if cfg.stream.modes else ():
                n = cfg.stream.sequences * f * cfg.model.train_len
                evals += [EvalWork(m, c, n * (c if mode == "recompute" else 1)) for mode in cfg.stream.modes]
    return jobs, evals
