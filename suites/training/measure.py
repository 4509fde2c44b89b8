"""One run: train and score one grid point with one seed (:func:`run_point`), and the row fields it writes."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ablate.launchers import distributed
from ablate.io.corpus import Corpus
from ablate.io.data import Batches
from ablate.core.evalset import EvalSet, draw
from ablate.core.evaluate import evaluate
from ablate.core.flops import matmul_params, peak_tflops
from ablate.plan.grid import GridPoint
from ablate.core.lr_sweep import SweepResult, tune_set
from ablate.registry.keys import ACTIVATION
from ablate.core.model import Transformer
from ablate.core.train import TrainConfig, lm_loss, train
from ablate.core.validate import validate_model
from ablate.variants.attention.layer import MultiHeadAttention
from ablate.variants.attention.logits import max_attention_logit

from .budget import Budget, flops_per_step
from .config import TrainingConfig, point_train
from .constants import VARIANT_COLUMNS


def unigram_loss(corpus: Corpus, es: EvalSet) -> float:
    """Loss (nats/token) of the training split's add-one-smoothed unigram distribution on the scored test targets
    ``es.stream[1:]``: what a model that ignores context reaches. A run near it learned nothing else."""
    counts = np.bincount(np.asarray(corpus.train, dtype=np.int64), minlength=corpus.vocab_size).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    tgt = np.asarray(es.stream[1:es.tokens + 1], dtype=np.int64)
    return float(-np.log(p[tgt]).mean())


def eval_sets(cfg: TrainingConfig, corpus: Corpus) -> tuple[EvalSet, EvalSet, EvalSet | None]:
    """(test set, its curve subsample, tune set or None): the final loss scores whole test documents drawn across the
    held-out split (:func:`ablate.core.evalset.draw`, role "test", ``eval.tokens``); the curve points score the first of
    them holding ``eval.curve_tokens`` (:meth:`EvalSet.subsample`); a learning-rate sweep scores tune documents
    the test set never holds (role "tune", ``lr_sweep.tokens``, drawn at the test set's cap)."""
    ev, sw = cfg.eval, cfg.lr_sweep
    test = draw(corpus, ev.tokens, role="test", reserve=sw.tokens if sw.enabled else 0)
    tune = tune_set(corpus, sw, test_tokens=ev.tokens, max_doc_tokens=test.max_doc_tokens) if sw.enabled else None
    return test, test.subsample(ev.curve_tokens), tune


def row_key_fields(point: GridPoint, preset: str, cid: str, seed: int, device: str, corpus: Corpus) -> dict:
    return {"point": point.name, "preset": preset, "config_id": cid, "seed": seed, "device": device,
            "data": corpus.name}


def describe(point: GridPoint, gid: str, declared: list[dict] | None = None) -> dict[str, Any]:
    d = {k: v for k, v in point.describe().items() if k != "point"}
    d["grid_id"] = gid
    d["grid_points"] = declared or []
    for c in VARIANT_COLUMNS:
        d[c] = getattr(point.model, c)
    return d


def _curve(res) -> dict[str, list]:
    return {"step": [h["step"] + 1 for h in res.history], "tokens": [h["tokens"] for h in res.history],
            "train_loss": [h["train_loss"] for h in res.history],
            "val_step": [e["step"] for e in res.evals if "val_loss" in e],
            "val_loss": [e["val_loss"] for e in res.evals if "val_loss" in e]}


def run_point(cfg: TrainingConfig, point: GridPoint, seed: int, corpus: Corpus, device: str, budget: Budget,
              progress: Any = False, unigram: float | None = None, on_log: Any = None, *,
              sets: tuple[EvalSet, EvalSet, Any] | None = None,
              sweep: SweepResult | None = None) -> tuple[str, str, dict[str, Any], TrainConfig]:
    """Train and score one grid point with one seed: (status, reason, metrics, the TrainConfig used).
    ``on_log``: :func:`ablate.core.train.train`'s live-logging callback (``--log-to``; None: none). ``sets``:
    :func:`eval_sets` (drawn here when None). ``sweep``: the point's learning-rate sweep (its rate replaces
    ``train.lr``, ``min_lr`` scaled with it)."""
    validate_model(point.model, device=device)
    test, curve, _ = sets if sets is not None else eval_sets(cfg, corpus)
    tcfg = point_train(cfg, point, seed)
    if sweep is not None:
        tcfg = replace(tcfg, lr=sweep.lr, min_lr=sweep.min_lr)
    torch.manual_seed(seed)  # same initialisation stream per seed for every point
    model = Transformer(point.model).to(device)
    steps, info = budget.steps(model, point.model, tcfg)
    tcfg = replace(tcfg, steps=steps)
    amp = tcfg.amp if device == "cuda" else None
    ev = cfg.eval
    seq = tcfg.seq_len

    def curve_eval(m) -> dict:
        r = evaluate(m, curve.stream, seq, tokens=curve.tokens, batch_tokens=ev.batch_tokens,
                     byte_level=corpus.byte_level, device=device, amp=amp)
        return {"val_loss": r.loss}

    batches = Batches(corpus.train, tcfg.batch_size, seq, seed=seed, device=device)
    res = train(model, tcfg, batches, device=device, loss_fn=lm_loss, eval_fn=curve_eval, progress=progress,
                description=f"{point.name} s{seed}", on_log=on_log)
    st = res.stats
    fps = flops_per_step(model, point.model, tcfg)
    tps = st.get("steady_tokens_per_s") or st.get("tokens_per_s")
    per_step_tokens = tcfg.batch_size * seq
    tflops = fps / per_step_tokens * tps / 1e12 if tps else None
    peak = peak_tflops() if device == "cuda" else None
    metrics: dict[str, Any] = {
        **info,
        "params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
        "matmul_params": matmul_params(model),
        "activation_glu": ACTIVATION[point.model.activation].supports_("glu"),  # the report reads it, torch-free
        # whether the attention layer normalises q and k (its q_norm / k_norm): the LR-sensitivity claim reads it
        "attention_qk_norm": all(hasattr(b.attn, "q_norm") and hasattr(b.attn, "k_norm") for b in model.blocks),
        # whether it is the standard layer over its kernel (the DIFF and MLA claims compare against it)
        "attention_standard": all(type(b.attn) is MultiHeadAttention for b in model.blocks),
        "steps": res.steps, "steps_planned": steps, "tokens": st.get("tokens"), "tokens_per_step": per_step_tokens,
        "train_loss": st.get("final_train_loss"), "tokens_per_s": tps,
        "step_ms": 1000.0 * per_step_tokens / tps if tps else None,
        "train_s": st.get("elapsed_s"), "first_step_s": st.get("first_step_s"),
        "flops_per_step": fps, "flops": fps * res.steps, "tflops": tflops,
        "mfu": (tflops / peak.tflops) if (peak is not None and peak.tflops and tflops) else None,
        "mfu_peak_tflops": peak.tflops if peak is not None else None,
        "mfu_peak": peak.source if peak is not None else "no peak for CPU (MFU n/a)",
        "peak_mem_bytes": st.get("peak_mem_bytes"), "peak_mem_kind": st.get("peak_mem_kind"),
        "amp": st.get("amp"), "compile": st.get("compile"),
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "diverged_step": res.diverged_step, "curve": _curve(res),
        "world_size": st.get("world_size"), "dist_backend": st.get("dist_backend"),
        "val_loss": None, "val_ppl": None, "val_bpb": None, "eval_s": None,
        **test.describe(), "eval_tokens": test.tokens,
        "curve_eval_tokens": curve.tokens, "curve_eval_docs": len(curve.ids),  # the first docs of the test set
        "lr": tcfg.lr, "lr_sweep": sweep.as_row() if sweep is not None else None,
        "unigram_loss": unigram,
        "metric": "val_loss", "value": None, "unit": "nats/token",  # the one convention every suite's rows share
    }
    if not res.ok:
        return "diverged", f"training diverged: {res.reason}", metrics, tcfg
    if not distributed.current().is_main:  # rank 0 scores the model and writes the row
        return "ok", "", metrics, tcfg
    n_seq = max(1, min(4, test.tokens // seq))  # Wortsman et al.'s instability signal, on the first test tokens
    probe = torch.as_tensor(np.asarray(test.stream[:n_seq * seq], dtype=np.int64), device=device).view(n_seq, -1)
    metrics["max_attn_logit"] = max_attention_logit(model, probe)
    final = evaluate(model, test.stream, seq, tokens=test.tokens, batch_tokens=ev.batch_tokens,
                     byte_level=corpus.byte_level, device=device, amp=amp, units=test.bounds)
    nbytes = test.scored_bytes(corpus)
    metrics.update(val_loss=final.loss, value=final.loss, val_ppl=final.ppl,
                   val_bpb=final.loss * final.tokens / (nbytes * math.log(2)) if nbytes else None,
                   eval_bytes=nbytes, eval_s=final.elapsed_s,
                   doc_loss=[round(x, 4) for x in final.unit_loss] if final.unit_loss is not None else None)
    if not math.isfinite(final.loss):
        return "diverged", "non-finite validation loss after training", metrics, tcfg
    return "ok", "", metrics, tcfg
