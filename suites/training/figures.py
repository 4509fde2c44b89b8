"""The report's figures (no torch): validation-loss curves per baseline family and quality vs cost with its Pareto
front, each written as .png and .svg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from ablate.stats import pareto_front, t_ppf
from ablate.tables import plot_style, savefig

from .aggregate import _col, _num

import matplotlib.pyplot as plt  # noqa: E402,I001  (after ablate.tables, which picks the headless backend)


def _mean_curve(g, xcol: str, ycol: str):
    """Mean and 95% t-interval half-width of list-valued curve columns across seeds, on the x values all seeds
    share (half-width 0 with one seed)."""
    series = []
    for xs, ys in zip(_col(g, xcol), _col(g, ycol)):
        if isinstance(xs, (list, tuple)) and isinstance(ys, (list, tuple)) and len(xs) == len(ys) and xs:
            series.append({int(x): _num(y) for x, y in zip(xs, ys)})
    if not series:
        return None
    common = sorted(set.intersection(*[set(s) for s in series]))
    if not common:
        return None
    arr = np.array([[s[x] if s[x] is not None else np.nan for x in common] for s in series], dtype=float)
    mean = np.nanmean(arr, axis=0)
    if len(series) > 1:
        half = t_ppf(0.975, len(series) - 1) * np.nanstd(arr, axis=0, ddof=1) / np.sqrt(len(series))
    else:
        half = np.zeros_like(mean)
    return np.array(common), mean, half, len(series)



def _si(x: float, _pos: Any = None) -> str:
    """Tick label with an SI suffix: 250000 → 250k, 1.5e7 → 15M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"




def palette(names: list[str]) -> dict[str, Any]:
    """One colour per grid point."""
    return dict(zip(names, sns.color_palette("tab20" if len(names) > 10 else "tab10", n_colors=max(3, len(names)))))


def fig_curves(g, stats: list[dict], pal: dict[str, Any], folder: Path) -> list[Path]:
    """Figure 1: validation-loss curves, one panel per baseline family (``training_curves``); [] when no point has
    a curve."""
    names = [s["point"] for s in stats]
    families: list[tuple[str, list[str]]] = []
    baselines = list(dict.fromkeys(s["baseline"] for s in stats if s["baseline"]))
    for b in baselines:
        members = [b] + [s["point"] for s in stats if s["baseline"] == b]
        families.append((b, [m for m in members if m in names]))
    if not families:
        families = [("grid", names)]
    curves_ok = False
    with plot_style():
        fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 3.9), squeeze=False,
                                 sharey=True)
        finals: list[float] = []
        tops: list[float] = []
        for ax, (fam, members) in zip(axes[0], families):
            for m in members:
                sub = g[(g["point"] == m) & (g["status"].isin(["ok", "diverged"]))]
                c = _mean_curve(sub, "curve.val_step", "curve.val_loss")
                if c is None:
                    continue
                x, mean, std, n = c
                tps = _num(sub["tokens_per_step"].iloc[0]) if "tokens_per_step" in sub.columns else None
                xv = x * tps if tps else x
                lw = 2.2 if m == fam else 1.3
                ax.plot(xv, mean, color=pal[m], lw=lw, label=m + (f" (n={n})" if n > 1 else ""),
                        ls="-" if m == fam else "-")
                if n > 1:
                    ax.fill_between(xv, mean - std, mean + std, color=pal[m], alpha=0.18, lw=0)
                finals.append(float(mean[-1]))
                tops.append(float(np.nanmax(mean + std)))
                curves_ok = True
            ax.set_title(f"vs {fam}" if len(families) > 1 else "validation loss", fontsize=10)
            ax.set_xlabel("training tokens")
            ax.xaxis.set_major_formatter(FuncFormatter(_si))
            ax.legend(fontsize=6.5, frameon=False)
        axes[0][0].set_ylabel("validation loss (nats/token)")
        if finals:
            lo, hi = min(finals), max(finals)
            span = max(hi - lo, 0.05)
            axes[0][0].set_ylim(max(0.0, lo - 0.3 * span), min(max(tops) + 0.05, hi + 2.5 * span))
        fig.suptitle("Validation loss during training (mean over seeds; band: 95% CI)", fontsize=10)
        if curves_ok:
            return list(savefig(fig, folder / "training_curves"))
        plt.close(fig)
        return []


def fig_pareto(pts: list[dict], pal: dict[str, Any], folder: Path) -> tuple[list[Path], list[str]]:
    """Figure 2: quality vs cost, Pareto front (higher tokens/s and lower loss are better) of the points ``pts``
    (those with a mean val loss and a throughput): (files written, the Pareto-optimal points)."""
    xs = [s["tokens_per_s"] for s in pts]
    ys = [s["val"].mean for s in pts]
    front = pareto_front(xs, ys, x_better="high", y_better="low")
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.6, 4.6))
        for s, x, y, f in zip(pts, xs, ys, front):
            err = s["val"].std
            ax.errorbar([x], [y], yerr=[[err], [err]] if err else None, fmt="o" if f else "o",
                        ms=7 if f else 5, color=pal[s["point"]], mec="black" if f else "none",
                        mew=1.2 if f else 0, capsize=2, lw=1)
            ax.annotate(s["point"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6.5)
        fx = sorted((x, y) for x, y, f in zip(xs, ys, front) if f)
        if len(fx) > 1:
            ax.plot([p[0] for p in fx], [p[1] for p in fx], color="black", lw=1, ls="--",
                    label="Pareto front")
            ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("training throughput (tokens/s, higher is better)")
        ax.xaxis.set_major_formatter(FuncFormatter(_si))
        ax.set_ylabel("final validation loss (lower is better)")
        ax.set_title("Quality vs cost (outlined: Pareto-optimal; bars: ±1 std over seeds)", fontsize=10)
        written = list(savefig(fig, folder / "training_pareto"))
    return written, [s["point"] for s, f in zip(pts, front) if f]
