"""The measurement: train (or load from its checkpoint) one job's model, then score its rows: perplexity by length
(:func:`ablate.core.evaluate.evaluate`) and the retrieval probes (:func:`ablate.core.evaluate.probe_correct`)."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ablate.core.config import flatten
from ablate.core.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from ablate.io.corpus import Corpus
from ablate.io.data import Batches
from ablate.errors import PositionRangeError
from ablate.plan.estimate import TrainJob, job_flops
from ablate.core.evalset import unigram_loss
from ablate.core.evaluate import PasskeyBatches, evaluate, passkey_loss, probe_correct
from ablate.core.lr_sweep import sweep as lr_sweep, tune_set
from ablate.core.model import Transformer
from ablate.store.results import ResultWriter, status_from_exception
from ablate.analysis.stats import wilson_interval
from ablate.core.train import lm_loss, log_entry, train
from ablate.registry.keys import POSITION
from ablate.variants.positions import ROPE_TEMPERATURE, position_caveats, rope_attention_factor

from .config import ExtrapolationConfig, config_id, decodes_incrementally, eval_set, eval_stride, probe_of
from .finetune import run_finetune
from .constants import METRIC_STREAM
from .plan import Job, RowSpec, job_model, scales_embeddings
from .stream import score_stream


def _cfg_dict(mcfg) -> dict[str, Any]:
    """A model's settings as saved with (and checked against) its checkpoint: those :func:`flatten` keeps (a setting
    added later, at its default, leaves earlier checkpoints valid)."""
    kept = flatten(mcfg)
    return {k: v for k, v in dataclasses.asdict(mcfg).items() if k in kept}


def _ckpt_path(ckpt_dir: Path, job: Job, cid: str, scaled: bool = False) -> Path:
    return ckpt_dir / f"{job.name}{'-xemb' if scaled else ''}-{cid}.pt"


def _save(path: Path, payload: dict) -> None:
    save_checkpoint(path, payload)


def _task_identity(job: Job, ckpt: Path) -> dict[str, Any]:
    """What a checkpoint is saved for besides its model settings (checked when it is loaded): the job (its kind,
    variant, seed) and the file name that carries the config id."""
    return {"kind": job.kind, "position": job.position, "seed": job.seed, "file": ckpt.name}


def _lr_sweep(cfg: ExtrapolationConfig, mcfg, corpus: Corpus, device: str, folder: Path):
    """The learning rate of one position variant (:mod:`ablate.core.lr_sweep`; None when the sweep is off): swept once
    per variant with the first seed's initialisation and data order, scored on tune documents the test sample never
    holds, cached in ``folder/lr_sweep.json`` so the other seeds and resumed runs reuse it."""
    if not cfg.lr_sweep.enabled:
        return None
    es = eval_set(cfg, corpus)
    tune = tune_set(corpus, cfg.lr_sweep, test_tokens=es.tokens, seed=cfg.eval.doc_seed,
                    max_doc_tokens=es.max_doc_tokens)
    return lr_sweep(mcfg, cfg.train, corpus, cfg.lr_sweep, test_tokens=es.tokens, device=device,
                    cache=folder / "lr_sweep.json", tune=tune)


def _train_job(cfg: ExtrapolationConfig, job: Job, corpus: Corpus, device: str, ckpt: Path,
               progress: Any, reuse: bool = True, on_log: Any = None) -> tuple[Any, dict]:
    """(model or None, training info); loads the checkpoint when there is one (and ``reuse``). ``on_log``: the
    live-logging callback of :func:`ablate.core.train.train` (``--log-to``); a model loaded from its checkpoint replays
    the training curve stored there."""
    mcfg = job_model(cfg, job.position)
    task = _task_identity(job, ckpt)
    if reuse and ckpt.is_file():
        try:
            # saved for this model and task, or retrained: another variant's weights (same shapes) never load
            payload = load_checkpoint(ckpt, expect={"model_cfg": _cfg_dict(mcfg)},
                                      expect_if_saved={"task": task})
            info = payload["info"]
            if on_log is not None:
                for h in payload.get("history") or []:
                    on_log(log_entry(h))
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
        swept = _lr_sweep(cfg, mcfg, corpus, device, ckpt.parent)
        if swept is not None:
            tcfg = replace(tcfg, lr=swept.lr, min_lr=swept.min_lr)
    res = train(model, tcfg, batches, device=device, progress=progress, description=f"train {job.name}",
                **({"loss_fn": loss_fn} if loss_fn is not lm_loss else {}),
                **({"on_log": on_log} if on_log is not None else {}))
    info = {"train_status": res.status, "train_reason": res.reason, "diverged_step": res.diverged_step,
            "train_steps": res.steps, "train_loss": res.stats.get("final_train_loss"),
            "train_s": res.stats.get("elapsed_s"), "train_tokens_per_s": res.stats.get("tokens_per_s"),
            "peak_mem_bytes": res.stats.get("peak_mem_bytes"), "n_params": model.num_params(),
            "train_flops": job_flops(TrainJob(mcfg, tcfg.batch_size, tcfg.seq_len, res.steps)),
            "from_checkpoint": False, "lr": tcfg.lr}
    if job.kind == "lm" and cfg.lr_sweep.enabled:
        info["lr_sweep"] = swept.as_row()
    _save(ckpt, {"info": info, "state_dict": model.state_dict() if res.ok else None,
                 "model_cfg": _cfg_dict(mcfg), "task": task, "history": res.history})
    return (model if res.ok else None), info



def train_and_score(cfg, job: Job, todo: list[RowSpec], corpus: Corpus, device: str, writer: ResultWriter,
                     ckpt_dir: Path, opts, prog, overall, run_cfg, on_log) -> int:
    try:
        model, info = _train_or_finetune(cfg, job, corpus, device, ckpt_dir, prog, opts.resume, on_log)
    except Exception as exc:  # OOM, a kernel that fails: every row of this job says so
        if _is_oom(exc) and device == "cuda":
            torch.cuda.empty_cache()
        for r in todo:
            writer.write_exception(exc, r.key, {"value": None, "unit": row_unit(r)}, config=run_cfg)
        if prog:
            prog.update(overall, advance=len(todo))
        return 0
    trained = 0 if info.get("from_checkpoint") else 1
    if model is None:  # diverged
        reason = f"training diverged at step {info.get('diverged_step')}: {info.get('train_reason')}"
        for r in todo:
            writer.write("diverged", r.key, {"value": None, "unit": row_unit(r), **info}, config=run_cfg,
                         reason=reason)
        if prog:
            prog.update(overall, advance=len(todo))
        return trained
    _evaluate_job(cfg, job, todo, model, corpus, device, writer, run_cfg, info, prog, overall)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return trained


def _train_or_finetune(cfg, job: Job, corpus: Corpus, device: str, ckpt_dir: Path, prog, reuse: bool, on_log):
    """(model or None, info): the job's pre-trained model; for a fine-tuning job (``job.finetune``), the pre-trained
    model of the same variant and seed (its checkpoint, trained first when missing) fine-tuned or loaded from the
    fine-tuned checkpoint (suites/extrapolation/finetune.py)."""
    cid = config_id(cfg, corpus, job.kind)
    base = Job(job.kind, job.position, job.seed, [])
    base_ckpt = _ckpt_path(ckpt_dir, base, cid, scaled=scales_embeddings(cfg, job.position))
    if job.finetune is None:
        return _train_job(cfg, job, corpus, device, base_ckpt, prog, reuse=reuse, on_log=on_log)
    model, info = _train_job(cfg, base, corpus, device, base_ckpt, prog, reuse=reuse)
    if model is None:
        return None, info
    ft = job.finetune
    ft_ckpt = ckpt_dir / f"{job.name}-{cid}-{ft.id}.pt"
    # the fine-tuned weights load only for this fine-tuning of this base model and task (saved with them)
    ident = {"finetune": dataclasses.asdict(ft), "base_model_cfg": _cfg_dict(job_model(cfg, job.position)),
             "task": _task_identity(job, ft_ckpt)}
    return run_finetune(cfg, ft, model, corpus, job.seed, device, ft_ckpt, prog, reuse, info, job.name,
                        lambda path: _load_payload(path, expect={"finetune": ident["finetune"]},
                                                   expect_if_saved={k: ident[k] for k in ("base_model_cfg", "task")}),
                        lambda path, payload: _save(path, {**payload, **ident}))


def _load_payload(path: Path, expect: dict | None = None, expect_if_saved: dict | None = None) -> dict | None:
    """A checkpoint's payload, or None when there is none or it is unusable or saved for another model or task
    (removed, with a warning)."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, expect=expect, expect_if_saved=expect_if_saved)
    except CorruptCheckpoint as exc:
        sys.stderr.write(f"ablate: warning: checkpoint {path} is unusable ({' '.join(exc.why.split())[:200]}); "
                         "fine-tuning again\n")
        path.unlink(missing_ok=True)
        return None


def _scaling_fields(cfg, job: Job, r: RowSpec) -> dict[str, Any]:
    """What a RoPE row really ran: the attention factor on q and k, whether YaRN's temperature was on, and the
    fine-tuning steps behind the model (0: none; fine-tuned rows carry theirs in the key)."""
    entry = POSITION.get(r.evaluated)
    if entry.supports.get("kind") != "rotary":
        return {}
    mcfg = replace(job_model(cfg, job.position), position=r.evaluated, rope_scale=r.scale)
    out: dict[str, Any] = {"attention_factor": rope_attention_factor(r.evaluated, mcfg),
                           "rope_temperature": ROPE_TEMPERATURE[entry.supports.get("scaling", "default")]}
    if "finetune_steps" not in r.key:
        out["finetune_steps"] = 0
    return out


def row_unit(r: RowSpec) -> str:
    return "fraction" if r.depth is not None else "ppl"


def _is_oom(exc: BaseException) -> bool:
    return status_from_exception(exc)[0] == "oom"


def _caveats(cfg: ExtrapolationConfig, job: Job, r: RowSpec) -> dict[str, Any]:
    """The degenerate-setup caveats of this row's evaluated variant (codes and one-line messages)."""
    mcfg = replace(job_model(cfg, job.position), position=r.evaluated, rope_scale=r.scale)
    found = position_caveats(r.evaluated, mcfg, [r.eval_len], incremental=decodes_incrementally(r.evaluated))
    return {"caveats": [c.code for c in found], "caveat": "; ".join(c.message for c in found)} if found else {}


def _evaluate_job(cfg, job: Job, todo: list[RowSpec], model, corpus: Corpus, device: str, writer: ResultWriter,
                  run_cfg, info: dict, prog, overall) -> None:
    current = (job.position, 1.0)
    amp = cfg.train.amp if device == "cuda" else None
    es, stride = eval_set(cfg, corpus), eval_stride(cfg)
    scored: dict[tuple, Any] = {}  # (evaluated, scale, eval_len) -> result: a fixed s equal to the ideal one runs once
    for r in todo:
        want = (r.evaluated, r.scale)
        metrics: dict[str, Any] = {"unit": row_unit(r), "scale_factor": r.eval_len / cfg.model.train_len, **info,
                                   **_caveats(cfg, job, r), **_scaling_fields(cfg, job, r)}
        if job.kind == "lm":
            metrics.update({k: v for k, v in {**corpus.describe(), **es.describe()}.items() if k not in r.key})
        try:
            if want != current:
                model.set_position(r.evaluated, rope_scale=r.scale)
                current = want
            if r.key.get("metric") == METRIC_STREAM:
                metrics.update(score_stream(cfg, model, es, r.key, device))
            elif r.depth is None:
                chunk = cfg.eval.decode_chunk if decodes_incrementally(r.evaluated) else None
                same = (r.evaluated, r.scale, r.eval_len)
                res = scored.get(same) or evaluate(model, es.stream, r.eval_len, tokens=es.tokens, mode=cfg.eval.mode,
                                                   stride=stride, batch_tokens=cfg.eval.batch_tokens,
                                                   byte_level=corpus.byte_level, device=device, amp=amp,
                                                   pos_bins=cfg.eval.pos_bins, decode_chunk=chunk,
                                                   prefill=cfg.model.train_len, units=es.bounds,
                                                   block=cfg.eval.bca_block)
                scored[same] = res
                nbytes = es.scored_bytes(corpus)
                metrics.update(value=res.ppl, loss=res.loss, ppl=res.ppl,
                               bpb=res.loss * res.tokens / (nbytes * math.log(2)) if nbytes else None,
                               eval_bytes=nbytes, windows=res.windows, pos_loss=res.pos_loss, pos_bin=res.pos_bin,
                               eval_s=res.elapsed_s, doc_loss=[round(x, 4) for x in res.unit_loss],
                               unigram_loss=unigram_loss(corpus, es))
                if "decode" not in r.key:
                    metrics["decode"] = "full"
            else:
                probe = probe_of(cfg, job.kind)
                k = probe_correct(model, probe, r.eval_len, r.depth, trials=cfg.probe.trials, seed=job.seed,
                                  device=device, amp=amp, batch_tokens=cfg.eval.batch_tokens)
                lo, hi = wilson_interval(k, cfg.probe.trials)
                metrics.update(value=k / cfg.probe.trials, correct=k, chance=probe.chance_at(r.eval_len, r.depth),
                               ci_lo=lo, ci_hi=hi)  # chance: of this length and depth, from the generator
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

