"""The report's figures (no torch): validation-loss curves per baseline family and quality vs cost with its Pareto
front, each written as .png and .svg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ablate.analysis.distributions import t_ppf
from ablate.analysis.pareto import pareto_front
from ablate.reporting.style import BAND_CI, Style, annotate_points, band_note, styles
from ablate.reporting.tables import figure, plot_style, savefig
from ablate.reporting.tables import pyplot as plt

from .aggregate import column_values, to_float



def _mean_curve(g, xcol: str, ycol: str):
    """Mean and 95% t-interval half-width of list-valued curve columns across seeds, on the x values all seeds
    share (half-width 0 with one seed)."""
    series = []
    for xs, ys in zip(column_values(g, xcol), column_values(g, ycol)):
        if isinstance(xs, (list, tuple)) and isinstance(ys, (list, tuple)) and len(xs) == len(ys) and xs:
            series.append({int(x): to_float(y) for x, y in zip(xs, ys)})
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




def palette(names: list[str]) -> dict[str, Style]:
    """One colour, marker and line style per grid point (:func:`ablate.reporting.style.styles`: a point is styled by the
    variant key it changes, ``original+rope`` like ``rope`` everywhere), computed once for every figure of a report."""
    return styles(names)


def _curve_text(g) -> str:
    """Which text the curve points scored, in a few words (the index gives the full caption)."""
    first = g.iloc[0]
    ct, et = to_float(first.get("curve_eval_tokens")), to_float(first.get("eval_tokens"))
    cd = to_float(first.get("curve_eval_docs"))
    if ct is None or et is None:
        return "first tokens of the held-out split, not the final loss's text"
    if ct >= et:
        return "the final loss's test documents"
    return f"{int(cd or 0)} of the final loss's test documents, {int(ct):,} tokens"


@figure
def fig_curves(g, stats: list[dict], pal: dict[str, Style], folder: Path) -> list[Path]:
    """Figure 1: validation-loss curves, one panel per baseline family (``training_curves``), each the mean over
    seeds with its 95% t-interval band (none with one seed: the title then says n=1); [] when no point has a
    curve."""
    from matplotlib.ticker import FuncFormatter

    names = [s["point"] for s in stats]
    families: list[tuple[str, list[str]]] = []
    baselines = list(dict.fromkeys(s["baseline"] for s in stats if s["baseline"]))
    for b in baselines:
        members = [b] + [s["point"] for s in stats if s["baseline"] == b]
        families.append((b, [m for m in members if m in names]))
    if not families:
        families = [("grid", names)]
    ns: list[int] = []
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
                x, mean, half, n = c
                tps = to_float(sub["tokens_per_step"].iloc[0]) if "tokens_per_step" in sub.columns else None
                xv = x * tps if tps else x
                st = pal[m]
                ax.plot(xv, mean, color=st.color, ls=st.linestyle, lw=2.2 if m == fam else 1.3, marker=st.marker,
                        ms=3.5, markevery=max(1, len(xv) // 6), label=f"{m} (n={n})")
                if n > 1:
                    ax.fill_between(xv, mean - half, mean + half, color=st.color, alpha=0.18, lw=0)
                finals.append(float(mean[-1]))
                tops.append(float(np.nanmax(mean + half)))
                ns.append(n)
            ax.set_title(f"vs {fam}" if len(families) > 1 else "validation loss", fontsize=10)
            ax.set_xlabel("training tokens")
            ax.xaxis.set_major_formatter(FuncFormatter(_si))
            ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[0][0].set_ylabel("validation loss (nats/token)")
        if finals:
            lo, hi = min(finals), max(finals)
            span = max(hi - lo, 0.05)
            axes[0][0].set_ylim(max(0.0, lo - 0.3 * span), min(max(tops) + 0.05, hi + 2.5 * span))
        if ns:
            fig.suptitle(f"Validation loss during training ({_curve_text(g)}; mean over seeds; "
                         f"{band_note(min(ns), max(ns))})", fontsize=9)
            fig.tight_layout()
            return list(savefig(fig, folder / "training_curves"))
        plt.close(fig)
        return []


def _apart(a: dict, b: dict) -> bool:
    """Whether two points' 95% intervals separate on both axes (throughput and loss): a step of the front that the
    seeds can tell from noise. False without intervals (one seed)."""
    def sep(sa, sb) -> bool:
        if sa.half_width is None or sb.half_width is None:
            return False
        return sa.hi < sb.lo or sb.hi < sa.lo
    return sep(a["tps"], b["tps"]) and sep(a["val"], b["val"])


def front_segments(pts: list[dict], front: list[bool]) -> list[tuple[str, str]]:
    """Neighbouring Pareto-optimal points (by throughput) the front may join: those whose intervals separate on
    both axes (:func:`_apart`). Points that overlap are not a resolved trade-off, so no line is drawn through them."""
    on = sorted((p for p, f in zip(pts, front) if f), key=lambda p: p["tokens_per_s"])
    return [(a["point"], b["point"]) for a, b in zip(on, on[1:]) if _apart(a, b)]


def pareto_figure(pts: list[dict], pal: dict[str, Style]):
    """The quality-vs-cost figure (not saved): (figure, the Pareto-optimal points, the front's drawn segments).
    Each point is labelled next to its marker, labels moved apart so none overlaps another
    (:func:`ablate.reporting.style.annotate_points`); bars: 95% t-intervals over seeds of the loss *and* of the throughput
    (none with one seed; the throughput axis starts at 0, where a bar reaching below it ends). Pareto-optimal points
    (on the means) are outlined; the dashed front joins only neighbours whose intervals separate on both axes
    (:func:`front_segments`)."""
    from matplotlib.ticker import FuncFormatter

    xs = [s["tokens_per_s"] for s in pts]
    ys = [s["val"].mean for s in pts]
    front = pareto_front(xs, ys, x_better="high", y_better="low")
    ns = [s["val"].n for s in pts]
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    for s, x, y, f in zip(pts, xs, ys, front):
        hw = s["val"].half_width
        tps = s.get("tps")
        xw = tps.half_width if tps is not None else None
        st = pal[s["point"]]
        ax.errorbar([x], [y], yerr=[[hw], [hw]] if hw else None, xerr=[[xw], [xw]] if xw else None, fmt=st.marker,
                    ms=7 if f else 5, color=st.color, mec="black" if f else st.color, mew=1.2 if f else 0.5,
                    capsize=2, lw=1)
    segments = front_segments(pts, front) if all(s.get("tps") is not None for s in pts) else []
    by = {s["point"]: s for s in pts}
    handles = []
    for i, (a, b) in enumerate(segments):
        handles += ax.plot([by[a]["tokens_per_s"], by[b]["tokens_per_s"]], [by[a]["val"].mean, by[b]["val"].mean],
                           color="black", lw=1, ls="--", label="Pareto front (intervals apart)" if i == 0 else None)
    ax.set_xlabel("training throughput (tokens/s, higher is better)")
    ax.xaxis.set_major_formatter(FuncFormatter(_si))
    ax.set_ylabel("final validation loss (lower is better)")
    bars = band_note(min(ns), max(ns), what=BAND_CI).replace("band:", "bars (both axes):").replace("no band",
                                                                                                    "no bars")
    ax.set_title(f"Quality vs cost (outlined: Pareto-optimal on means; {bars})", fontsize=9)
    ax.margins(x=0.12, y=0.1)
    lo, hi = ax.get_xlim()
    if lo < 0:  # a throughput is never negative: an interval reaching below 0 ends on the axis
        ax.set_xlim(0, hi)
    handles = handles[:1]
    legend = ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0)) \
        if handles else None
    fig.tight_layout()
    annotate_points(ax, xs, ys, [s["point"] for s in pts], fontsize=6.5,
                    avoid=list(legend.get_texts()) if legend is not None else ())
    return fig, [s["point"] for s, f in zip(pts, front) if f], segments


def fig_pareto(pts: list[dict], pal: dict[str, Style], folder: Path) -> tuple[list[Path], list[str],
                                                                                list[tuple[str, str]]]:
    """Figure 2: quality vs cost, Pareto front (higher tokens/s and lower loss are better) of the points ``pts``
    (those with a mean val loss and a throughput): (files written, the Pareto-optimal points, the front's drawn
    segments)."""
    with plot_style():
        fig, front, segments = pareto_figure(pts, pal)
        written = list(savefig(fig, folder / "training_pareto"))
    return written, front, segments
