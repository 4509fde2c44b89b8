"""The tables (no torch): the paper-style summary table, the setup lines of a report and the terminal cells."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.reporting.pathfree import data_text

from .aggregate import column_values, to_float, compare_points, point_stats
from .constants import STUCK_MARGIN


def _delta_cell(v) -> str:
    """``-0.0312 better`` / ``+0.0021 equivalent (±0.02)`` / ``-0.0100 inconclusive (Δ ≥ 0.041 detectable)``."""
    if v is None or v.delta is None:
        return "—"
    if v.label == "n/a":
        return f"{v.delta:+.4f} (1 seed)"
    if v.label == "equivalent":
        return f"{v.delta:+.4f} equivalent (±{v.margin:g})"
    if v.label == "inconclusive":
        return f"{v.delta:+.4f} inconclusive (Δ ≥ {v.mde:.3f} detectable)" if v.mde is not None and \
            math.isfinite(v.mde) else f"{v.delta:+.4f} inconclusive"
    return f"{v.delta:+.4f} {v.label}" + (f" (within ±{v.margin:g})" if v.within_margin else "")


def summary_table(df):
    """The paper-style table: rows = grid points; val loss ± 95% CI, Δ vs baseline (with its verdict), cost."""
    stats = point_stats(df)
    by_name = {s["point"]: s for s in stats}
    rows = []
    for s in stats:
        base = by_name.get(s["baseline"]) if s["baseline"] else None
        comp = compare_points(base, s) if base else None
        if s["n_ok"] == s["n"]:
            seeds = str(s["n"])
        else:
            notes = []
            if s["n_diverged"]:
                notes.append(f"{s['n_diverged']} diverged" + (f" @ step {', '.join(map(str, s['diverged_steps']))}"
                                                             if s["diverged_steps"] else ""))
            if s["other_status"]:
                notes.append("/".join(s["other_status"]))
            seeds = f"{s['n_ok']}/{s['n']} ({'; '.join(notes)})"
        rows.append({
            "variant": s["point"], "change": s["change"], "seeds": seeds, "val loss": s["val"].fmt(".4f"),
            "Δ vs baseline": _delta_cell(comp), "vs": s["baseline"] or "—",
            "bpb": s["bpb"], "params": int(s["params"]) if s["params"] is not None else None,
            "tokens/s": s["tokens_per_s"], "± tokens/s": s["tps"].half_width,
            "lr": _lr_cell(s),
            "last 20%": _drop_cell(s),
            "peak mem (MiB)": s["peak_mem_bytes"] / 2 ** 20 if s["peak_mem_bytes"] is not None else None,
            "MFU (%)": 100.0 * s["mfu"] if s["mfu"] is not None else None,
            "note": f"≈ unigram ({s['unigram']:.3f}): no context learned" if s["stuck"] else "",
        })
    df = pd.DataFrame(rows)
    if not df.empty and not df["note"].astype(bool).any():
        df = df.drop(columns=["note"])
    if not df.empty and df["± tokens/s"].isna().all():
        df = df.drop(columns=["± tokens/s"])
    return df


def _lr_cell(s: dict) -> str:
    """The learning rate the point trained with (``*`` = chosen by the sweep; ``edge`` = at the edge of its
    candidates, so the best rate may lie outside them)."""
    if s["lr"] is None:
        return "/".join(f"{v:g}" for v in s["lrs_used"]) or "—"
    mark = "*" if s["sweep"] else ""
    edge = " (edge)" if s["sweep"] and s["sweep"]["at_edge"] else ""
    return f"{s['lr']:g}{mark}{edge}"


def _drop_cell(s: dict) -> str:
    """Change of the validation loss over the last 20% of the steps, flagged when still improving."""
    if s["drop"] is None:
        return "—"
    return f"{-s['drop']:+.3f}" + (" still improving" if s["still_improving"] else "")

def setup_lines(g) -> list[str]:
    first = g.iloc[0]

    def get(c, default="?"):
        v = first.get(c, default)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    seeds = sorted({int(s) for s in column_values(g, "seed") if to_float(s) is not None})
    swept = any(isinstance(v, list) for v in column_values(g, "lr_sweep.lrs"))
    lrs = sorted({to_float(v) for v in column_values(g, "config.train.lr") if to_float(v) is not None})
    lr = "lr chosen per point by a sweep (see *Learning rate per point*)" if swept else \
        f"lr {'/'.join(f'{v:g}' for v in lrs) or '?'}"
    min_lr = "the preset's min_lr / lr ratio" if swept else get("config.train.min_lr")
    nodecay = ", nor on T5's bias table" if to_float(first.get("eval_docs")) is not None else ""  # rows since PROTOCOL 3
    docs = to_float(first.get("eval_docs"))
    scales = {v for v in column_values(g, "config.model.scale_embeddings") if isinstance(v, bool)}
    embed = ("x sqrt(d_model) on every point (fairseq init), the same treatment for all" if scales == {True} else
             "unscaled on every point" if scales == {False} else
             "scaled on some points only" + (" (a grid factor)" if "axis.scale_embeddings" in g.columns else
                                             " (sinusoidal points: rows from before one treatment for all)"))
    hw = get("env.gpu", None) if get("device") == "cuda" else f"{get('env.cpu')} ({get('env.cpu_count')} CPUs)"
    lines = [
        f"- device: **{get('device')}** — {hw}; torch {get('env.torch')}; git {str(get('env.git_commit'))[:10]}"
        f"{' (dirty)' if get('env.git_dirty', False) is True else ''}",
        f"- preset **{get('preset')}**: d_model {get('config.model.d_model')}, {get('config.model.n_layers')} layers, "
        f"{get('config.model.n_heads')} heads, context {get('config.train.seq_len')}, batch "
        f"{get('config.train.batch_size')}, AdamW {lr} (warm-up {get('config.train.warmup')}, cosine to "
        f"{min_lr}), weight decay {get('config.train.weight_decay')} on matrices (none on norms and biases"
        f"{nodecay}), clip {get('config.train.grad_clip')}, amp {get('config.train.amp', None) or 'none (fp32)'}",
        f"- budget: equal **{get('budget_kind')}** per run = {float(get('budget_value', float('nan'))):.4g}"
        f" ({'tokens' if get('budget_kind') == 'tokens' else 'FLOPs' if get('budget_kind') == 'flops' else 's'})",
        f"- data: `{data_text({'data': get('data'), 'data.hash': get('data.hash', None)})}` (byte-level vocab {get('config.model.vocab_size')}); validation loss on "
        + (f"{get('eval_tokens')} tokens of {int(docs)} test document{'s' if docs != 1 else ''} drawn across the "
           f"held-out split (eval set `{get('eval_set')}`), the same for every run" if docs is not None else
           f"{get('eval_tokens')} held-out tokens (the start of the held-out split), the same for every run"),
        f"- embeddings: {embed}",
        f"- seeds: {', '.join(map(str, seeds))} ({len(seeds)}); rows: {len(g)}; grid_id `{get('grid_id')}`",
    ]
    uni = next((to_float(v) for v in column_values(g, "unigram_loss") if to_float(v) is not None), None)
    if uni is not None:
        lines.append(f"- reference: the training split's unigram distribution scores {uni:.4f} nats/token on the "
                     f"same held-out tokens (a run within {STUCK_MARGIN} of it learned no context)")
    return lines

def cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
