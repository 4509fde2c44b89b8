"""The recall figures (no torch; seaborn theme): accuracy vs d_model per length, the recall-memory scatter with its
Pareto front, accuracy vs query distance (sliding windows against full attention)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.analysis.stats import pareto_front
from ablate.reporting.style import styles
from ablate.reporting.tables import figure, plot_style, pyplot as plt, savefig

from .aggregate import chosen_rows


def series(r) -> str:
    """A figure series: the attention key, its window and KV heads where set."""
    w = r.get("window")
    label = str(r.get("attention"))
    if w is not None and w == w:
        label += f" W={int(w)}"
    if r.get("n_kv_heads") is not None and r.get("n_heads") is not None and r["n_kv_heads"] != r["n_heads"]:
        label += f" kv={int(r['n_kv_heads'])}"
    return label


def _lengths(pt: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted({(int(a), int(b)) for a, b in zip(pt["seq_len"], pt["kv_pairs"])})


@figure
def fig_accuracy(pt: pd.DataFrame, stem: Path) -> list[Path]:
    """Accuracy vs d_model, one panel per (length, pairs); bars: 95% interval over seeds."""
    if pt.empty:
        return []
    pt = pt.assign(series=pt.apply(series, axis=1))
    st = styles(pt["series"])
    lens = _lengths(pt)
    with plot_style():
        fig, axes = plt.subplots(1, len(lens), figsize=(3.4 * len(lens), 3.0), sharey=True, squeeze=False)
        for ax, (t, kv) in zip(axes[0], lens):
            sub = pt[(pt["seq_len"] == t) & (pt["kv_pairs"] == kv)]
            for name, g in sub.groupby("series", sort=False):
                g = g.sort_values("d_model")
                err = [g["accuracy"] - g["lo"], g["hi"] - g["accuracy"]]
                ax.errorbar(g["d_model"], g["accuracy"], yerr=err, label=name, color=st[name].color,
                            marker=st[name].marker, capsize=2, lw=1.2, ms=4)
            ax.set_xscale("log", base=2)
            ax.set_title(f"seq_len {t}, {kv} KV pairs", fontsize=9)
            ax.set_xlabel("d_model")
            ax.set_ylim(-0.02, 1.02)
        axes[0][0].set_ylabel("MQAR accuracy")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        return list(savefig(fig, stem))


@figure
def fig_memory(pt: pd.DataFrame, stem: Path) -> list[Path]:
    """Accuracy vs decode state bytes per sequence (log), one panel per length, bars: the 95% interval of each
    point's accuracy (as in the points table); the Pareto front on the means (less state, more recall) drawn in
    black."""
    pt = pt[pt["state_bytes"].notna()] if not pt.empty else pt
    if pt.empty:
        return []
    pt = pt.assign(series=pt.apply(series, axis=1))
    st = styles(pt["series"])
    lens = _lengths(pt)
    with plot_style():
        fig, axes = plt.subplots(1, len(lens), figsize=(3.6 * len(lens), 3.0), sharey=True, squeeze=False)
        for ax, (t, kv) in zip(axes[0], lens):
            sub = pt[(pt["seq_len"] == t) & (pt["kv_pairs"] == kv)]
            for name, g in sub.groupby("series", sort=False):
                err = None
                if {"lo", "hi"} <= set(g.columns) and g[["lo", "hi"]].notna().all().all():
                    err = [(g["accuracy"] - g["lo"]).clip(lower=0), (g["hi"] - g["accuracy"]).clip(lower=0)]
                ax.errorbar(g["state_bytes"], g["accuracy"], yerr=err, label=name, color=st[name].color,
                            fmt=st[name].marker, ms=4.5, capsize=2, lw=0.9, zorder=3)
            front = pareto_front(list(sub["state_bytes"]), list(sub["accuracy"]), x_better="low", y_better="high")
            f = sub[front].sort_values("state_bytes")
            ax.plot(f["state_bytes"], f["accuracy"], color="black", lw=0.8, ls="--", zorder=2, label="Pareto front")
            ax.set_xscale("log", base=2)
            ax.set_title(f"seq_len {t}, {kv} KV pairs", fontsize=9)
            ax.set_xlabel("decode state bytes per sequence")
            ax.set_ylim(-0.02, 1.02)
        axes[0][0].set_ylabel("MQAR accuracy")
        axes[0][-1].legend(fontsize=7, loc="lower right", title="bars: 95% interval", title_fontsize=7)
        return list(savefig(fig, stem))


def distance_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per query distance (pooled over seeds) at each point's chosen learning rate."""
    rows = []
    for _, r in chosen_rows(df).iterrows():
        d, c, t = r.get("dist.dist"), r.get("dist.dist_correct"), r.get("dist.dist_total")
        if not isinstance(d, (list, tuple)):
            continue
        for di, ci, ti in zip(d, c, t):
            rows.append({"series": series(r), "d_model": int(r["d_model"]), "seq_len": int(r["seq_len"]),
                         "kv_pairs": int(r["kv_pairs"]), "window": r.get("window"), "n_layers": int(r["n_layers"]),
                         "distance": int(di), "correct": int(ci), "total": int(ti)})
    if not rows:
        return pd.DataFrame()
    f = pd.DataFrame(rows).groupby(["series", "d_model", "seq_len", "kv_pairs", "distance"], sort=False,
                                   dropna=False).agg(correct=("correct", "sum"), total=("total", "sum"),
                                                     window=("window", "first"), n_layers=("n_layers", "first"))
    f = f.reset_index()
    return f.assign(accuracy=f["correct"] / f["total"])


@figure
def fig_distance(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Accuracy vs the distance from query to key at the largest d_model, one panel per length; dotted lines at
    each window W and dashed at its stacked reach layers x (W - 1)."""
    f = distance_frame(df)
    if f.empty:
        return []
    st = styles(f["series"])
    lens = sorted({(int(a), int(b)) for a, b in zip(f["seq_len"], f["kv_pairs"])})
    with plot_style():
        fig, axes = plt.subplots(1, len(lens), figsize=(3.6 * len(lens), 3.0), sharey=True, squeeze=False)
        for ax, (t, kv) in zip(axes[0], lens):
            sub = f[(f["seq_len"] == t) & (f["kv_pairs"] == kv)]
            sub = sub[sub["d_model"] == sub["d_model"].max()]
            for name, g in sub.groupby("series", sort=False):
                g = g[g["total"] >= 5].sort_values("distance")
                ax.plot(g["distance"], g["accuracy"], label=name, color=st[name].color, marker=st[name].marker,
                        ms=3, lw=1.0)
                w = g["window"].iloc[0] if len(g) else None
                if w is not None and w == w:
                    ax.axvline(w, color=st[name].color, ls=":", lw=0.8)
                    ax.axvline(g["n_layers"].iloc[0] * (w - 1), color=st[name].color, ls="--", lw=0.8)
            ax.set_title(f"seq_len {t}, {kv} KV pairs, d_model {int(sub['d_model'].max())}", fontsize=9)
            ax.set_xlabel("query distance to its key (tokens)")
            ax.set_ylim(-0.02, 1.02)
        axes[0][0].set_ylabel("MQAR accuracy")
        axes[0][-1].legend(fontsize=7, loc="upper right")
        return list(savefig(fig, stem))
