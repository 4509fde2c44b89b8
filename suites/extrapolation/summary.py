"""Summaries of the rows, torch-free (the report and the terminal print share them): perplexity per (variant,
length) with its 95% interval over seeds, effective length, per-seed perplexities for the claims, protocol groups,
and the retrieval probes (pooled over depths, intervals clustered by seed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ablate.analysis.stats import clustered_proportion, summarize, t_ppf
from ablate.reporting.pathfree import data_text

from .constants import METRIC_PPL, POSITIONS, PROTOCOL_COLS, ROPE_SCALINGS
from .labels import SERIES_FIELDS, relabel


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile for ``dof`` degrees of freedom."""
    return t_ppf(0.975, dof) if dof >= 1 else float("nan")


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) via :func:`ablate.analysis.stats.summarize`; NaNs when undefined."""
    s = summarize([None if v is None else float(v) for v in values], confidence=0.95)
    nan = float("nan")
    return (nan if s.mean is None else s.mean), (nan if s.half_width is None else s.half_width), s.n

def variant_order(df) -> list[str]:
    present = list(dict.fromkeys(df["position"].tolist()))
    order = [p for p in POSITIONS if p in present] + [s for s in ROPE_SCALINGS if s in present]
    return order + sorted(p for p in present if p not in order)


def protocol_groups(df):
    df = relabel(df)  # fixed-scale and fine-tuned RoPE rows are series of their own (labels.series)
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
    """One line naming a protocol group (``p``: :func:`protocol_groups`' keys, and ``data.hash`` when known); the
    corpus without its machine path (:func:`ablate.reporting.pathfree.data_text`)."""
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
             f"blockwise causal attention past {int(g('bca_block'))} tokens" if g("bca_block") is not None else None,
             f"data {data_text(p)}" if g("data") else None,
             f"preset {g('preset')}" if g("preset") else None,
             f"device {g('device')}" if g("device") else None]
    return "; ".join(x for x in parts if x)


def ppl_summary(df):
    """Long frame: protocol columns, position, eval_len, mean, ci, n, status (of the non-ok rows), reason, the
    trained variant, its parameter count and the row caveats."""
    rows = []
    sub = df[df.get("metric", pd.Series(dtype=str)) == METRIC_PPL]
    # the columns read below (the protocol, the series, the cell's values): each cell's filters then copy a few
    # columns, not every column of the rows
    sub = sub[[c for c in dict.fromkeys((*PROTOCOL_COLS, *SERIES_FIELDS, "rope_scale", "eval_len", "status", "value",
                                         "reason", "n_params", "caveat", "trained_position")) if c in sub.columns]]
    for pdict, g in protocol_groups(sub):
        for (pos, L), cell in g.groupby(["position", "eval_len"], sort=False):
            ok = cell[cell["status"] == "ok"]
            mean, ci, n = mean_ci(ok["value"].tolist())
            bad = cell[cell["status"] != "ok"]
            params = [v for v in cell.get("n_params", pd.Series(dtype=float)).tolist() if is_number(v)]
            caveat = [c for c in cell.get("caveat", pd.Series(dtype=str)).tolist() if isinstance(c, str) and c]
            rows.append({**pdict, "position": pos, "eval_len": int(L), "mean": mean, "ci": ci, "n": n,
                         "seeds": len(cell), "status": "ok" if len(bad) == 0 else str(bad["status"].iloc[0]),
                         "reason": "" if len(bad) == 0 else str(bad["reason"].iloc[0]),
                         "trained": str(cell["trained_position"].iloc[0]) if "trained_position" in cell else pos,
                         "params": int(params[0]) if params else None, "caveat": caveat[0] if caveat else ""})
    return pd.DataFrame(rows)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def claim_cells(df) -> dict[tuple[str, int], Any]:
    """``{(position, eval_len): ablate.analysis.claims.Cell}`` over the ok perplexity rows: per-seed perplexity, and the
    per-document losses where the rows carry them (rows made before they existed give seed-only cells)."""
    from ablate.analysis.claims import cells_from_rows

    sub = df[(df["metric"] == METRIC_PPL) & (df["status"] == "ok")] if "metric" in df.columns else df.iloc[0:0]
    return cells_from_rows(sub.to_dict("records"), lambda r: (str(r["position"]), int(r["eval_len"])))


def per_seed_ppl(df) -> dict[tuple[str, int], dict[int, float]]:
    """``{(position, eval_len): {seed: perplexity}}`` over the ok perplexity rows (claims are paired by seed)."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    sub = df[(df["metric"] == METRIC_PPL) & (df["status"] == "ok")] if "metric" in df.columns else df.iloc[0:0]
    for r in sub.itertuples():
        if is_number(r.value):
            out.setdefault((str(r.position), int(r.eval_len)), {})[int(r.seed)] = float(r.value)
    return out



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


def _probe_counts(pk) -> Any:
    """Rows with integer ``correct`` / ``trials`` (older rows have only the accuracy)."""
    pk = pk.copy()
    trials = pd.to_numeric(pk["trials"], errors="coerce")
    acc = pd.to_numeric(pk["value"], errors="coerce")
    correct = pd.to_numeric(pk["correct"], errors="coerce") if "correct" in pk else acc * trials
    pk["trials_n"] = trials.fillna(0).astype(int)
    pk["correct_n"] = correct.fillna(acc * trials).round().fillna(0).astype(int)
    return pk


def probe_chance(pk) -> float:
    """The highest chance level of the rows (older rows without a ``chance`` column: a random number)."""
    vals = [float(v) for v in pk.get("chance", []).tolist() if is_number(v)] if "chance" in pk else []
    if vals:
        return max(vals)
    digits = int(pk["digits"].iloc[0]) if "digits" in pk and is_number(pk["digits"].iloc[0]) else 2
    return 10.0 ** -digits


def _chance_of(g, fallback: float) -> float:
    """Mean chance level of a group of rows (each depth has the same number of trials, so the chance of the
    accuracy pooled over depths is the mean of the per-depth chances); ``fallback`` for rows without one."""
    vals = [float(v) for v in g["chance"].tolist() if is_number(v)] if "chance" in g else []
    return float(np.mean(vals)) if vals else fallback


def probe_summary(pk):
    """Long frame: position, eval_len, acc, lo, hi, correct, trials, seeds, seed_correct / seed_trials (per seed,
    pooled over depths), chance (from the rows: per depth, averaged over the depths) and ``interval``.

    Trials of one trained model are not independent of each other, so the interval is clustered by seed
    (:func:`ablate.analysis.stats.clustered_proportion`): with two seeds or more, ``acc`` is the mean of the per-seed
    accuracies and ``lo``/``hi`` the 95% t-interval over seeds (at least as wide as the pooled Wilson interval);
    with one seed, the 95% Wilson interval of its trials."""
    pk = _probe_counts(pk)
    fallback = probe_chance(pk)
    # one pass over plain lists (a pandas groupby per cell was most of the time): cells in the order they first
    # appear, seeds sorted, rows without a position, length or seed left out as a groupby leaves them out
    chance = pk["chance"].tolist() if "chance" in pk else None
    cells: dict[tuple, tuple[dict, list]] = {}
    for i, (pos, L, seed, c, t) in enumerate(zip(pk["position"].tolist(), pk["eval_len"].tolist(),
                                                  pk["seed"].tolist(), pk["correct_n"].tolist(),
                                                  pk["trials_n"].tolist())):
        if _missing(pos) or _missing(L):
            continue
        per, ch = cells.setdefault((pos, L), ({}, []))
        if chance is not None and is_number(chance[i]):
            ch.append(float(chance[i]))
        if _missing(seed):
            continue
        tot = per.setdefault(seed, [0, 0])
        tot[0] += c
        tot[1] += t
    rows = []
    for (pos, L), (per, ch) in cells.items():
        seeds = sorted(per)
        correct, trials = [int(per[s][0]) for s in seeds], [int(per[s][1]) for s in seeds]
        c = clustered_proportion(correct, trials)
        nan = float("nan")
        rows.append({"position": pos, "eval_len": int(L), "correct": c.correct, "trials": c.trials,
                     "acc": nan if c.mean is None else c.mean, "lo": nan if c.lo is None else c.lo,
                     "hi": nan if c.hi is None else c.hi, "seeds": len(seeds),
                     "seed_correct": correct, "seed_trials": trials,
                     "interval": c.method, "chance": float(np.mean(ch)) if ch else fallback})
    return pd.DataFrame(rows)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def probe_chance_by_depth(pk) -> dict[float, float]:
    """``{depth: chance}`` of the rows (averaged over lengths; the multikey placement makes it the same at every
    length and depth, the rows carry what the generator computed)."""
    fallback = probe_chance(pk)
    return {float(d): _chance_of(g, fallback) for d, g in pk.groupby("depth", sort=True)}


def interval_note(summ) -> str:
    """The caption's words for the intervals of a :func:`probe_summary`."""
    seeds = int(summ["seeds"].max()) if len(summ) else 1
    if seeds >= 2:
        return (f"mean of the {seeds} per-seed accuracies (each pooled over depths) with the 95% t-interval over seeds, "
                "widened to at least the pooled Wilson interval (clustered by seed, not pooled)")
    return "accuracy pooled over depths with the 95% Wilson interval of the one seed's trials"

