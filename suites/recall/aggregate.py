"""Per-point statistics of recall rows (no torch): the learning rate chosen per point on validation accuracy (the
reference keeps the best of its sweep), the test accuracy's 95% interval over seeds, accuracy by query distance."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.analysis.stats import clustered_proportion, pareto_front

from .constants import POINT_COLUMNS


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def point_key(r: pd.Series) -> tuple:
    """A row's point (:data:`POINT_COLUMNS`; missing values as None)."""
    return tuple(None if (isinstance(r.get(c), float) and math.isnan(r.get(c))) else r.get(c)
                 for c in POINT_COLUMNS)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "status" not in df.columns:
        return df.iloc[0:0]
    return df[(df["status"] == "ok") & df["accuracy"].notna()] if "accuracy" in df.columns else df.iloc[0:0]


def best_lr(df: pd.DataFrame) -> dict[tuple, float]:
    """Point (:data:`POINT_COLUMNS`) -> the learning rate of the highest mean validation accuracy over seeds (ties:
    the lower mean validation loss)."""
    ok = ok_rows(df)
    out: dict[tuple, tuple[float, float, float]] = {}
    for (key, lr), g in ok.groupby([ok.apply(point_key, axis=1), "lr"], sort=False):
        acc = g["val_accuracy"].astype(float).mean()
        loss = g["val_loss"].astype(float).mean() if "val_loss" in g else 0.0
        cur = out.get(key)
        if cur is None or (acc, -loss) > (cur[1], -cur[2]):
            out[key] = (float(lr), acc, loss)
    return {k: v[0] for k, v in out.items()}


def chosen_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows at each point's chosen learning rate (one per seed)."""
    ok = ok_rows(df)
    if ok.empty:
        return ok
    best = best_lr(ok)
    keep = ok.apply(lambda r: best.get(point_key(r)) == float(r["lr"]), axis=1)
    return ok[keep]


def per_seed(df: pd.DataFrame, column: str = "accuracy") -> dict[tuple, dict[int, float]]:
    """Point -> {seed: ``column``} at the chosen learning rate."""
    out: dict[tuple, dict[int, float]] = {}
    for _, r in chosen_rows(df).iterrows():
        v = _num(r.get(column))
        if v is not None:
            out.setdefault(point_key(r), {})[int(r["seed"])] = v
    return out


def far_near(r: pd.Series, window: int, n_layers: int) -> tuple[float | None, float | None, int, int]:
    """(accuracy on answers whose key is inside the window (distance < W), accuracy on answers beyond the stacked
    window's reach (distance > n_layers x (W - 1)), their counts) from a row's ``dist.*`` lists."""
    d, c, t = r.get("dist.dist"), r.get("dist.dist_correct"), r.get("dist.dist_total")
    if not isinstance(d, (list, tuple)) or not d:
        return None, None, 0, 0
    reach = n_layers * (window - 1)
    nc = sum(ci for di, ci in zip(d, c) if di < window)
    nt = sum(ti for di, ti in zip(d, t) if di < window)
    fc = sum(ci for di, ci in zip(d, c) if di > reach)
    ft = sum(ti for di, ti in zip(d, t) if di > reach)
    return (nc / nt if nt else None), (fc / ft if ft else None), nt, ft


def point_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point at its chosen learning rate: accuracy (mean over seeds, 95% interval), state bytes,
    parameters, steps, the convergence flag."""
    rows = []
    ok, chosen = ok_rows(df), chosen_rows(df)
    if chosen.empty:
        return pd.DataFrame()
    for key, g in chosen.groupby(chosen.apply(point_key, axis=1), sort=False):
        p = dict(zip(POINT_COLUMNS, key))
        c = clustered_proportion([int(x) for x in g["correct"]], [int(x) for x in g["answers"]])
        same = ok.apply(point_key, axis=1).map(lambda k, key=key: k == key)
        lrs = sorted({float(x) for x in ok[same]["lr"]})
        rows.append({**p, "lr": float(g["lr"].iloc[0]), "lrs tried": len(lrs), "seeds": len(g),
                     "accuracy": c.mean, "lo": c.lo, "hi": c.hi,
                     "val accuracy": float(g["val_accuracy"].astype(float).mean()),
                     "state_bytes": _num(g["state_bytes"].iloc[0]), "state_form": g["state_form"].iloc[0],
                     "state": g["state_kind"].iloc[0],
                     "params": _num(g["params"].iloc[0]), "n_layers": int(g["n_layers"].iloc[0]),
                     "steps": _num(g["steps"].iloc[0]),
                     "still improving": int(g["still_improving"].fillna(False).astype(bool).sum())})
    out = pd.DataFrame(rows)
    return out.sort_values(["seq_len", "kv_pairs", "attention", "window", "n_heads", "n_kv_heads", "d_model"],
                           kind="stable", na_position="first").reset_index(drop=True)


def front_table(pt: pd.DataFrame) -> pd.DataFrame:
    """The recall-memory Pareto front of each (length, pairs): the points of :func:`point_table` that no other point
    of the same task beats on both accuracy (higher) and decode state bytes (lower), by state bytes."""
    if pt.empty or "state_bytes" not in pt.columns:
        return pd.DataFrame()
    out = []
    for _, g in pt.groupby(["seq_len", "kv_pairs"], sort=True):
        on = pareto_front(list(g["state_bytes"]), list(g["accuracy"]), x_better="low", y_better="high")
        out.append(g[on])
    cols = ["seq_len", "kv_pairs", "attention", "window", "n_heads", "n_kv_heads", "d_model", "state_bytes", "state",
            "accuracy", "lo", "hi"]
    f = pd.concat(out) if out else pd.DataFrame(columns=cols)
    return f[[c for c in cols if c in f.columns]].sort_values(["seq_len", "kv_pairs", "state_bytes"],
                                                              kind="stable").reset_index(drop=True)


def status_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that did not run, with their reason (one line per point and status)."""
    if df.empty or "status" not in df.columns:
        return pd.DataFrame()
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    cols = [c for c in ("point", "status", "reason") if c in bad.columns]
    return bad[cols].drop_duplicates().reset_index(drop=True)
