"""Aggregation of the rows (shared by the terminal print and the report; no torch): the rows of one grid, one
report folder per (device, preset, grid), per-point statistics over seeds and the verdict of a point vs its
baseline."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.analysis.claims import LOSS_MARGIN
from ablate.analysis.stats import summarize, verdict

from .constants import CONVERGENCE_DROP, CONVERGENCE_WINDOW, STUCK_MARGIN, SUITE


def to_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def column_values(df, name: str) -> list:
    return df[name].tolist() if name in df.columns else [None] * len(df)


def last_drop(steps: Any, losses: Any, total: Any = None, window: float = CONVERGENCE_WINDOW) -> float | None:
    """How much the validation curve still falls over the last ``window`` of the run: minus the least-squares slope
    (nats per step) of the curve points with ``step >= (1 - window) * total``, times ``window * total`` steps
    (positive = still improving). Fewer than two points in the window: the last two points of the curve. None
    without a curve of two finite points."""
    if not isinstance(steps, (list, tuple)) or not isinstance(losses, (list, tuple)) or len(steps) != len(losses):
        return None
    pts = [(float(a), to_float(b)) for a, b in zip(steps, losses) if to_float(a) is not None and to_float(b) is not None]
    if len(pts) < 2:
        return None
    end = to_float(total) or pts[-1][0]
    tail = [p for p in pts if p[0] >= (1.0 - window) * end - 1e-9]
    if len(tail) < 2:
        tail = pts[-2:]
    n = len(tail)
    mx, my = sum(p[0] for p in tail) / n, sum(p[1] for p in tail) / n
    sxx = sum((p[0] - mx) ** 2 for p in tail)
    if sxx <= 0:
        return None
    slope = sum((p[0] - mx) * (p[1] - my) for p in tail) / sxx
    return -slope * window * end


def undertrained_note(name: str, drop: float, where: str = "") -> str:
    """The caveat of a point (``name``, ``where`` it was read) whose curve still fell by ``drop`` nats at its end."""
    return (f"undertrained: {name} still improving{where} ({-drop:+.3f} nats over the last {CONVERGENCE_WINDOW:.0%} "
            f"of its steps)")


def row_drop(row: Any) -> float | None:
    """:func:`last_drop` of a row's validation curve (``curve.val_step`` / ``curve.val_loss``)."""
    return last_drop(row.get("curve.val_step"), row.get("curve.val_loss"), row.get("steps"))


def point_stats(df) -> list[dict[str, Any]]:
    """One dict per grid point (grid order): seeds, statuses, per-seed val losses and the means of the metrics."""
    if df.empty:
        return []
    d = df.copy()
    d["_order"] = [(to_float(v) if to_float(v) is not None else 1e9) for v in column_values(d, "point_index")]
    out = []
    for name in sorted(d["point"].unique(), key=lambda n: (d[d["point"] == n]["_order"].min(), str(n))):
        g = d[d["point"] == name]
        ok = g[g["status"] == "ok"]
        by_seed = {int(s): to_float(v) for s, v in zip(column_values(ok, "seed"), column_values(ok, "val_loss")) if to_float(v) is not None}
        first = g.iloc[0]

        def mean(col: str, frame=ok):
            return summarize([to_float(v) for v in column_values(frame, col)]).mean

        div = g[g["status"] == "diverged"]
        other = g[~g["status"].isin(["ok", "diverged"])]
        params = [to_float(v) for v in column_values(g, "params") if to_float(v) is not None]
        drops = [row_drop(r) for _, r in ok.iterrows()]
        drop = summarize(drops).mean
        lrs = sorted({to_float(v) for v in (column_values(ok, "lr") if "lr" in ok.columns else column_values(ok, "config.train.lr"))
                      if to_float(v) is not None})
        sweep_row = next((r for _, r in ok.iterrows() if isinstance(r.get("lr_sweep.lrs"), list)), None)
        out.append({
            "point": name, "baseline": first.get("baseline") if isinstance(first.get("baseline"), str) else None,
            "change": first.get("change"), "group": first.get("group"), "n": len(g), "n_ok": len(ok),
            "n_diverged": len(div),
            "diverged_steps": [int(v) for v in column_values(div, "diverged_step") if to_float(v) is not None],
            "other_status": sorted(set(other["status"])) if len(other) else [],
            "other_reason": (other["reason"].iloc[0] if len(other) else ""),
            "val_by_seed": by_seed, "val": summarize(list(by_seed.values())),
            "bpb": mean("val_bpb"), "ppl": mean("val_ppl"), "params": params[0] if params else None,
            "tokens_per_s": mean("tokens_per_s"), "step_ms": mean("step_ms"), "mfu": mean("mfu"),
            "tokens": mean("tokens"), "steps": mean("steps"),
            "peak_mem_bytes": mean("peak_mem_bytes") if set(column_values(ok, "peak_mem_kind")) == {"cuda_max_allocated"}
            else None,
            "mfu_peak": next((v for v in column_values(ok, "mfu_peak") if isinstance(v, str)), None),
            "unigram": next((to_float(v) for v in column_values(g, "unigram_loss") if to_float(v) is not None), None),
            "tps": summarize([to_float(v) for v in column_values(ok, "tokens_per_s")]),
            "drop": drop, "still_improving": drop is not None and drop > CONVERGENCE_DROP,
            "lr": lrs[0] if len(lrs) == 1 else None, "lrs_used": lrs,
            "sweep": None if sweep_row is None else {
                "lrs": list(sweep_row["lr_sweep.lrs"]), "losses": list(sweep_row.get("lr_sweep.losses") or []),
                "at_edge": bool(sweep_row.get("lr_sweep.at_edge")), "chosen_by": sweep_row.get("lr_sweep.chosen_by"),
                "steps": sweep_row.get("lr_sweep.steps"), "tune_tokens": sweep_row.get("lr_sweep.tune_tokens")},
        })
    for s in out:
        s["stuck"] = _stuck(s)
    return out


def _stuck(s: dict) -> bool:
    m, u = s["val"].mean, s["unigram"]
    return m is not None and u is not None and m > u - STUCK_MARGIN


def compare_points(base: dict, other: dict):
    """Δ = other - base as an :class:`ablate.analysis.stats.Verdict` (better / worse / equivalent within ±LOSS_MARGIN /
    inconclusive): paired over the seeds both ran when they share >= 2, else Welch over all seeds."""
    a, b = base["val_by_seed"], other["val_by_seed"]
    common = sorted(set(a) & set(b))
    if len(common) >= 2:  # paired on the seeds both ran (same data order and init stream per seed)
        return verdict([a[s] for s in common], [b[s] for s in common], margin=LOSS_MARGIN, paired=True)
    return verdict(list(a.values()), list(b.values()), margin=LOSS_MARGIN)


DESCRIPTIVE = ("baseline", "change", "group", "point_index")


def grid_rows(df, gid: str):
    """The rows of grid ``gid``: its own rows plus rows of the same (point, config_id, device) written by another
    grid (a resumed run skips a point another grid already measured); those take this grid's description."""
    if "grid_id" not in df.columns or "config_id" not in df.columns:
        return df.iloc[0:0]
    own = df[df["grid_id"] == gid]
    if own.empty:
        return own
    declared: dict[str, dict] = {}
    for decl in column_values(own, "grid_points"):
        if isinstance(decl, list):
            for d in decl:
                if isinstance(d, dict) and d.get("point") is not None:
                    declared.setdefault(d["point"], d)
    for _, r in own.drop_duplicates("point").iterrows():  # rows written before grid_points existed
        declared.setdefault(r["point"], {"point": r["point"], "config_id": r["config_id"],
                                         **{c: r.get(c) for c in DESCRIPTIVE}})
    ident = pd.DataFrame([{"point": d["point"], "config_id": d.get("config_id")} for d in declared.values()])
    devices = set(own["device"]) if "device" in own.columns else set()
    rest = df[(df["grid_id"] != gid) & (df["device"].isin(devices) if devices else True)]
    other = rest.merge(ident, on=["point", "config_id"], how="inner")
    if other.empty:
        return own
    other = other.copy()
    for c in DESCRIPTIVE:
        if c in own.columns:
            other[c] = other["point"].map(lambda n, c=c: declared[n].get(c))
    for c in sorted({k for d in declared.values() for k in d if k.startswith("axis.")} |
                    {c for c in other.columns if c.startswith("axis.")}):
        other[c] = other["point"].map(lambda n, c=c: declared[n].get(c))
    other["grid_id"] = gid
    return pd.concat([own, other], ignore_index=True)


def group_dirs(df) -> list[tuple[str, Any]]:
    """(folder name, rows) per (device, preset, grid_id): ``<device>-<preset>``; when one device-preset holds
    several grids, one keeps the plain name -- the default grid (no ``grid.axes``), then the one with most rows, then
    the newest -- and the others get ``-<grid_id[:6]>``."""
    for c in ("device", "preset", "grid_id", "timestamp", "config.grid.axes"):
        if c not in df.columns:
            df = df.assign(**{c: ""})
    groups = [(k, grid_rows(df, k[2])) for k, _ in df.groupby(["device", "preset", "grid_id"], sort=True,
                                                              dropna=False)]
    best: dict[tuple, tuple] = {}
    for (dev, pre, gid), g in groups:
        axes = g["config.grid.axes"].iloc[0]
        rank = (not (isinstance(axes, str) and axes.strip()), len(g), str(g["timestamp"].max()), str(gid))
        if (dev, pre) not in best or rank > best[(dev, pre)]:
            best[(dev, pre)] = rank
    out = []
    for (dev, pre, gid), g in groups:
        name = f"{dev}-{pre}" if (dev or pre) else SUITE
        if str(gid) != best[(dev, pre)][-1]:
            name += f"-{str(gid)[:6]}"
        out.append((name, g))
    return out
