"""One run: train one grid point with one seed on MQAR generated on the fly, score it on the validation and test
sets at the answer positions only, and the row fields it writes (accuracy, loss, accuracy by query distance, the
decode state bytes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ablate.core.flops import cache_bytes, matmul_params
from ablate.core.model import Transformer
from ablate.core.train import train
from ablate.core.validate import validate_model
from ablate.plan.estimate import EvalWork, TrainJob, eval_flops, job_flops

from .config import RecallConfig, RecallPoint, steps_of, train_config
from .constants import CONVERGENCE_RISE, CONVERGENCE_WINDOW, SOLVED
from .data import IGNORE, MQAR, TEST_STREAM, TRAIN_STREAM, VAL_STREAM, answer_distance, multiquery_ar, row_hashes

__all__ = ["mqar_loss", "state_bytes", "EvalSets", "eval_sets", "train_stream", "score", "n_evals", "point_work",
           "run_point"]


def mqar_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the answer positions only (labels ``IGNORE`` elsewhere), in float32."""
    logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE)


def state_bytes(mcfg: Any, seq_len: int, el_bytes: int) -> tuple[int, str, str]:
    """(bytes one sequence's decode state holds after ``seq_len`` tokens, its form -- ``kv`` / ``window`` /
    ``recurrent`` --, what it is), asked of the attention layer's spec: a layer with a fixed-size recurrent state
    (:meth:`ablate.variants.attention.LayerSpec.recurrent_state`: linear attention's ``d_k x d_v + d_k`` per KV head,
    Based's Taylor-feature state and convolution) keeps that per layer; a windowed layer a rolling KV cache of
    ``window`` tokens; any other the KV cache of ``seq_len`` tokens (:func:`ablate.core.flops.cache_bytes`, the
    latency suite's count)."""
    from ablate.variants.attention import layer_spec

    rec = layer_spec(mcfg.attention).recurrent_state(mcfg)
    if rec is not None:
        return mcfg.n_layers * rec[0] * el_bytes, "recurrent", rec[1]
    if mcfg.window:
        return (cache_bytes(mcfg, seq_len, el_bytes, window=mcfg.window), "window",
                f"rolling KV cache ({mcfg.window} tokens)")
    return cache_bytes(mcfg, seq_len, el_bytes), "kv", f"KV cache ({seq_len} tokens)"


@dataclass
class EvalSets:
    val: MQAR
    test: MQAR
    held_out: set[bytes]  # every validation and test example, kept out of training


def eval_sets(cfg: RecallConfig, seq_len: int, kv: int) -> EvalSets:
    """The validation and test sets of one task: fixed by ``data.seed`` (the same for every point and model seed),
    from streams training never draws from."""
    d = cfg.data
    common = dict(power_a=d.power_a, random_non_queries=d.random_non_queries)
    val = multiquery_ar(d.vocab_size, d.val_examples, seq_len, kv, [VAL_STREAM, d.seed, seq_len, kv], **common)
    test = multiquery_ar(d.vocab_size, d.test_examples, seq_len, kv, [TEST_STREAM, d.seed, seq_len, kv], **common)
    return EvalSets(val, test, row_hashes(val.inputs) | row_hashes(test.inputs))


def train_stream(cfg: RecallConfig, point: RecallPoint, seed: int, held_out: set[bytes], device: str,
                 dropped: list[int]) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batches(step) -> (x, y)``: fresh examples per step, a pure function of (seed, step) so a run is
    reproducible; an example equal to a validation or test example is replaced (counted in ``dropped[0]``)."""
    d = cfg.data
    common = dict(power_a=d.power_a, random_non_queries=d.random_non_queries)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ident = [TRAIN_STREAM, seed, point.seq_len, point.kv_pairs, step]
        b = multiquery_ar(d.vocab_size, point.batch_size, point.seq_len, point.kv_pairs, ident, **common)
        x, y = b.inputs, b.labels
        for i in [i for i in range(len(x)) if x[i].tobytes() in held_out]:
            for retry in range(1, 1000):
                r = multiquery_ar(d.vocab_size, 1, point.seq_len, point.kv_pairs, ident + [i, retry], **common)
                if r.inputs[0].tobytes() not in held_out:
                    x[i], y[i] = r.inputs[0], r.labels[0]
                    dropped[0] += 1
                    break
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    return batches


@torch.no_grad()
def score(model: torch.nn.Module, block: MQAR, device: str, batch: int = 256) -> dict[str, Any]:
    """Accuracy and mean loss at the answer positions of ``block``, and correct/total per query distance."""
    was = model.training
    model.eval()
    correct, losses = [], []
    for s in range(0, len(block), batch):
        x = torch.from_numpy(block.inputs[s:s + batch]).to(device)
        y = torch.from_numpy(block.labels[s:s + batch]).to(device)
        logits = model(x).float()
        mask = y != IGNORE
        picked, target = logits[mask], y[mask]
        correct.append((picked.argmax(-1) == target).cpu().numpy())
        losses.append(F.cross_entropy(picked, target, reduction="none").cpu().numpy())
    model.train(was)
    ok, loss = np.concatenate(correct), np.concatenate(losses)
    dist = answer_distance(block)
    uniq = np.unique(dist)
    return {"accuracy": float(ok.mean()), "loss": float(loss.mean()), "correct": int(ok.sum()), "answers": len(ok),
            "dist": [int(v) for v in uniq], "dist_correct": [int(ok[dist == v].sum()) for v in uniq],
            "dist_total": [int((dist == v).sum()) for v in uniq]}


def n_evals(cfg: RecallConfig, point: RecallPoint) -> int:
    """Validation points of one run: every ``eval_every`` steps before the last, and once at the end."""
    tcfg = train_config(cfg, point, 0)
    return (tcfg.steps - 1) // tcfg.eval_every + 1


def point_work(cfg: RecallConfig, point: RecallPoint) -> tuple[TrainJob, EvalWork]:
    """What one model of ``point`` costs (:mod:`ablate.plan.estimate`): its training steps, and its evaluation
    forwards -- the validation set at every curve point (the last one is also the row's validation score), then the
    test set once."""
    n = cfg.data.val_examples * n_evals(cfg, point) + cfg.data.test_examples
    return (TrainJob(point.model, point.batch_size, point.seq_len, steps_of(cfg, point), point.name),
            EvalWork(point.model, point.seq_len, n * point.seq_len))


def _still_improving(curve: list[float]) -> bool:
    """Validation accuracy still rising over the last CONVERGENCE_WINDOW of the run (and not solved)."""
    if len(curve) < 2 or curve[-1] >= SOLVED:
        return False
    k = max(1, round(CONVERGENCE_WINDOW * (len(curve) - 1)))
    return curve[-1] - curve[-1 - k] > CONVERGENCE_RISE


def run_point(cfg: RecallConfig, point: RecallPoint, seed: int, sets: EvalSets, device: str, progress: Any = False,
              on_log: Any = None) -> tuple[str, str, dict[str, Any]]:
    """Train ``point`` with ``seed`` and score it: (status, reason, metrics). ``run_s`` / ``cpu_s``: wall and process
    CPU seconds of the whole run (training, every evaluation); ``train_flops`` / ``eval_flops``: its counted work
    (:func:`point_work`), which the dry run's estimate divides by measured seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    validate_model(point.model, device=device, backward=True)
    tcfg = train_config(cfg, point, seed)
    torch.manual_seed(seed)
    model = Transformer(point.model).to(device)
    dropped = [0]
    batches = train_stream(cfg, point, seed, sets.held_out, device, dropped)
    last_val: dict[str, Any] = {}

    def validate(m: torch.nn.Module) -> dict[str, float]:
        last_val.clear()
        last_val.update(score(m, sets.val, device))
        return {"val_accuracy": last_val["accuracy"]}

    res = train(model, tcfg, batches, device=device, loss_fn=mqar_loss, progress=progress, eval_fn=validate,
                description=f"{point.name} s{seed}", on_log=on_log)
    st = res.stats
    sb, form, what = state_bytes(point.model, point.seq_len, cfg.el_bytes)
    curve = [e["val_accuracy"] for e in res.evals]
    metrics: dict[str, Any] = {
        **point.describe(), "params": model.num_params(), "matmul_params": matmul_params(model),
        "state_bytes": sb, "state_form": form, "state_kind": what, "state_el_bytes": cfg.el_bytes,
        "kv_cache_bytes": cache_bytes(point.model, point.seq_len, cfg.el_bytes),
        "steps": res.steps, "steps_planned": tcfg.steps, "examples": res.steps * tcfg.batch_size,
        "tokens": st.get("tokens"), "answers_trained": res.steps * tcfg.batch_size * point.kv_pairs,
        "train_loss": st.get("final_train_loss"), "train_s": st.get("elapsed_s"),
        "tokens_per_s": st.get("steady_tokens_per_s") or st.get("tokens_per_s"),
        "threads": torch.get_num_threads() if device == "cpu" else None, "amp": st.get("amp"),
        "train_dupes_replaced": dropped[0], "diverged_step": res.diverged_step,
        "curve.step": [e["step"] for e in res.evals], "curve.val_accuracy": curve,
        "still_improving": _still_improving(curve),
        "val_examples": len(sets.val), "test_examples": len(sets.test),
        "metric": "accuracy", "value": None, "unit": "fraction",
    }
    if not res.ok:
        return "diverged", f"training diverged: {res.reason}", metrics
    # the final curve point scored the trained model on the validation set already (train's last evaluation)
    val = dict(last_val) if res.evals and res.evals[-1]["step"] == res.steps else score(model, sets.val, device)
    test = score(model, sets.test, device)
    job, work = point_work(cfg, point)
    metrics.update(train_flops=job_flops(job), eval_flops=eval_flops(work), run_s=time.perf_counter() - t0,
                   cpu_s=time.process_time() - c0)
    metrics.update(value=test["accuracy"], accuracy=test["accuracy"], loss=test["loss"], correct=test["correct"],
                   answers=test["answers"], val_accuracy=val["accuracy"], val_loss=val["loss"],
                   **{f"dist.{k}": test[k] for k in ("dist", "dist_correct", "dist_total")})
    if not np.isfinite(test["loss"]):
        return "diverged", "non-finite test loss after training", metrics
    return "ok", "", metrics
