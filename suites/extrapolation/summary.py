"""Summaries of the rows, torch-free (the report and the terminal print share them): perplexity per (variant,
length) with its 95% interval over seeds, effective length, per-seed perplexities for the claims, protocol groups,
and the retrieval probes pooled over depths and seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ablate.stats import summarize, t_ppf, wilson_interval

from .constants import METRIC_PPL, POSITIONS, PROTOCOL_COLS, ROPE_SCALINGS


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile for ``dof`` degrees of freedom."""
    return t_ppf(0.975, dof) if dof >= 1 else float("nan")


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) via :func:`ablate.stats.summarize`; NaNs when undefined."""
    s = summarize([None if v is None else float(v) for v in values], confidence=0.95)
    nan = float("nan")
    return (nan if s.mean is None else s.mean), (nan if s.half_width is None else s.half_width), s.n

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
    vals = [float(v) for v in pk.get("chance", []).tolist() if _number(v)] if "chance" in pk else []
    if vals:
        return max(vals)
    digits = int(pk["digits"].iloc[0]) if "digits" in pk and _number(pk["digits"].iloc[0]) else 2
    return 10.0 ** -digits


def probe_summary(pk):
    """Long frame: position, eval_len, correct, trials, acc, Wilson lo/hi -- pooled over depths and seeds."""
    pk = _probe_counts(pk)
    rows = []
    for (pos, L), g in pk.groupby(["position", "eval_len"], sort=False):
        k, n = int(g["correct_n"].sum()), int(g["trials_n"].sum())
        lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
        rows.append({"position": pos, "eval_len": int(L), "correct": k, "trials": n, "acc": k / n if n else
                     float("nan"), "lo": lo, "hi": hi, "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows)

