"""The report's figures (matplotlib / seaborn; no torch): perplexity vs evaluation length, loss vs token position in
the window, probe accuracy vs context length and by needle depth. One colour and marker per variant throughout, the
same as in every other suite's figures (:mod:`ablate.reporting.style`); legends sit outside the axes, clear of the text on
them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.analysis.distributions import t_ppf
from ablate.reporting.style import BAND_CI, MARKERS, band_note, linestyle_note, plain_log_ticks, styles
from ablate.reporting.tables import figure, plot_style, savefig
from ablate.reporting.tables import pyplot as plt

from .constants import POSITIONS, PROBE_TITLES, ROPE_SCALINGS
from .labels import relabel



_LINE_MEANING = {"-": "trained position encoding", "--": "rope model, RoPE scaled at inference (ideal scale)",
                 ":": "the same at a fixed scale s", "-.": "fixed scale s, fine-tuned first"}


def line_style(label: str) -> str:
    """How a series was made, as its line style: solid a trained position encoding, dashed the ``rope`` model
    with an inference-time RoPE scaling at the ideal scale, dotted at one fixed scale (``rope_ntk s=4``),
    dash-dot fine-tuned with that scale first (``rope_ntk s=4 ft40@256``)."""
    parts = str(label).split()
    if not parts or parts[0] not in ROPE_SCALINGS:
        return "-"
    if any(p.startswith("ft") for p in parts[1:]):
        return "-."
    return ":" if any(p.startswith("s=") for p in parts[1:]) else "--"


def variant_style(keys=()) -> tuple[dict[str, Any], dict[str, str]]:
    """One colour (Okabe–Ito) and one marker per position key (the built-in ones and any other in ``keys``), the
    same in every figure of every report (:func:`ablate.reporting.style.styles`). A series of a scaling key
    (``rope_ntk s=4``, ``... ft40@256``) keeps its key's colour, is told apart by its line style
    (:func:`line_style`) and takes a marker no series of the same colour and line style has (one unused by the
    keys present, where there is one)."""
    keys = sorted({str(k) for k in keys})
    series = [k for k in keys if k.split()[0] in ROPE_SCALINGS and k != k.split()[0]]
    st = styles(list(POSITIONS) + list(ROPE_SCALINGS) + [k for k in keys if k not in series])
    pal = {k: v.color for k, v in st.items()}
    marks = {k: v.marker for k, v in st.items()}
    present = {marks[k] for k in keys if k in marks}
    for k in series:
        pal[k] = pal[k.split()[0]]
        same = {marks[j] for j in keys if j in marks and pal[j] == pal[k] and line_style(j) == line_style(k)}
        free = [m for m in MARKERS if m not in same]
        marks[k] = next((m for m in free if m not in present), free[0] if free else marks[k.split()[0]])
        present.add(marks[k])
    return pal, marks


def scaling_note(order) -> str:
    """What the line styles of these series mean, for a legend title ("" when every curve is solid)."""
    used = {line_style(p) for p in order}
    if used <= {"-"}:
        return ""
    return linestyle_note({ls: what for ls, what in _LINE_MEANING.items() if ls in used}).replace("; ", ";\n")


def _legend_outside(ax, title: str = "", ncol: int = 1):
    """The legend to the right of the axes (never over a curve or the axes' own labels)."""
    return ax.legend(fontsize=7, ncol=ncol, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     title=title or None, title_fontsize=7, alignment="left")


@figure
def fig_ppl_vs_length(summary, order: list[str], train_len: int, pal: dict, markers: dict, stem: Path) -> list[Path]:
    """Figure 1: perplexity vs evaluation length, 95% t-interval bands over seeds (none with one seed; the legend
    title says which, and n)."""
    lens = sorted(summary["eval_len"].unique())
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for pos in order:
            s = summary[(summary["position"] == pos) & np.isfinite(summary["mean"])].sort_values("eval_len")
            if s.empty:
                continue
            # every length on the axis: the line breaks where this variant has no value (never drawn across)
            s = s.drop_duplicates("eval_len").set_index("eval_len").reindex(lens).reset_index()
            ax.plot(s["eval_len"], s["mean"], marker=markers.get(pos, "o"), ms=4, lw=1.6,
                    ls=line_style(pos), color=pal.get(pos), label=pos)
            ci = s["ci"].fillna(0.0)
            if (ci > 0).any():
                ax.fill_between(s["eval_len"], s["mean"] - ci, s["mean"] + ci, color=pal.get(pos), alpha=0.15,
                                lw=0)
        ax.axvline(train_len, color="0.3", ls=":", lw=1.2, label=f"train_len ({train_len})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
        ax.set_xticks(lens)
        ax.set_xticklabels([str(int(L)) for L in lens])
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("perplexity (log scale)")
        ax.set_title(f"Extrapolation: trained at {train_len}")
        ns = [int(n) for n in summary.loc[np.isfinite(summary["mean"]), "n"]] if "n" in summary else [1]
        note = scaling_note(order)
        _legend_outside(ax, band_note(min(ns or [1]), max(ns or [1]), what=BAND_CI) + (f";\n{note}" if note else ""))
        return list(savefig(fig, stem))


def _shade(color: Any, frac: float) -> tuple[float, float, float]:
    """``color`` mixed with white: ``frac`` 1 the colour itself, smaller lighter."""
    from matplotlib.colors import to_rgb

    return tuple(frac * c + (1.0 - frac) for c in to_rgb(color))  # type: ignore[return-value]


def _position_curves(g) -> pd.DataFrame:
    """Per-position loss as long records: series (``position`` after :func:`relabel`), eval_len, seed, token
    position (bin centre), loss; empty when no ``ok`` row has one."""
    ok = g[(g["status"] == "ok")] if "pos_loss" in g.columns else g.iloc[0:0]
    recs = []
    for r in ok.itertuples():
        pl, width = getattr(r, "pos_loss"), getattr(r, "pos_bin")
        if not isinstance(pl, (list, tuple)):
            continue
        for b, v in enumerate(pl):
            if v is not None and np.isfinite(v):
                recs.append({"position": r.position, "eval_len": int(r.eval_len), "seed": r.seed,
                             "token position": (b + 0.5) * float(width), "loss": float(v)})
    return pd.DataFrame(recs)


def _mean_band(s: pd.DataFrame) -> tuple[Any, Any, Any]:
    """Mean loss per token position over seeds, its 95% t-interval half-width (0 with one seed), and n."""
    by = s.groupby("token position", sort=True)["loss"]
    m, sd, n = by.mean(), by.std(ddof=1), by.count()
    half = np.array([t_ppf(0.975, k - 1) * v / math.sqrt(k) if k > 1 and np.isfinite(v) else 0.0
                     for v, k in zip(sd.values, n.values)])
    return m, half, n


@figure
def fig_loss_vs_position(g, order: list[str], train_len: int, pal: dict, stem: Path,
                         markers: dict | None = None) -> list[Path]:
    """Figure 2: loss vs token position inside the window, as small multiples: one panel per series (a position
    key, or a RoPE scaling at a scale), all on the same axes (token position on a log scale). In each panel one
    line per evaluation length in the series' colour, lighter the shorter the window, mean over seeds; the
    longest carries the series' marker and its 95% t-interval band (none with one seed; the legend title says
    which, and n). Behind it, every other series at the longest length in light grey, for comparison; a dashed
    grey line at the loss of a context-free unigram model on the same documents; dotted at train_len. No files
    when no row has a per-position loss."""
    markers = markers or {}
    g = relabel(g)  # fixed-scale and fine-tuned RoPE rows are series of their own, never averaged into the key's
    pdf = _position_curves(g)
    if pdf.empty:
        return []
    ok = g[g["status"] == "ok"]
    lens = sorted(pdf["eval_len"].unique())
    longest = lens[-1]
    series = [p for p in order if p in set(pdf["position"])]
    curves = {(p, L): _mean_band(s) for (p, L), s in pdf.groupby(["position", "eval_len"], sort=False)}
    ncol = min(4, len(series))
    nrow = math.ceil(len(series) / ncol)
    shades = {L: 0.35 + 0.65 * (i / (len(lens) - 1) if len(lens) > 1 else 1.0) for i, L in enumerate(lens)}
    uni = _unigram(ok, longest)
    ns: list[int] = []
    with plot_style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(2.9 * ncol, 2.2 * nrow + 0.9), sharex=True, sharey=True,
                                 squeeze=False)
        for i, pos in enumerate(series):
            ax = axes[i // ncol][i % ncol]
            for other in series:  # the others at the longest length, for comparison
                if other != pos and (other, longest) in curves:
                    m, _, _ = curves[(other, longest)]
                    ax.plot(m.index, m.values, color="0.86", lw=0.6, zorder=1)
            for L in lens:
                if (pos, L) not in curves:
                    continue
                m, half, n = curves[(pos, L)]
                top = L == max(LL for (p, LL) in curves if p == pos)
                color = _shade(pal.get(pos, "0.3"), shades[L])
                ax.plot(m.index, m.values, color=color, ls=line_style(pos), lw=1.3 if top else 0.9, zorder=3,
                        marker=markers.get(pos, "o") if top else None, ms=3, markevery=max(1, len(m) // 5),
                        label=pos if top else "_nolegend_")
                if top and (half > 0).any():
                    ax.fill_between(m.index, m.values - half, m.values + half, color=color, alpha=0.15, lw=0,
                                    zorder=2)
                ns += [int(k) for k in n.values] if top else []
            ax.axvline(train_len, color="0.3", ls=":", lw=0.9)
            if uni is not None:  # reference: a context-free model on the same documents
                ax.axhline(uni, color="0.45", ls=(0, (4, 2)), lw=0.9)
            ax.set_title(pos, fontsize=8.5, pad=3)
            ax.set_xscale("log", base=2)
            if i % ncol == 0:
                ax.set_ylabel("loss (nats/token)", fontsize=8)
            if i // ncol == nrow - 1 or i + ncol >= len(series):
                ax.set_xlabel("token position in window", fontsize=8)
                ax.xaxis.set_tick_params(labelbottom=True)
        for j in range(len(series), nrow * ncol):
            axes[j // ncol][j % ncol].axis("off")
        lo = float(pdf["token position"].min())
        powers = [2 ** k for k in range(max(0, math.ceil(math.log2(lo))), int(math.log2(max(lens))) + 1)]
        ticks = powers[::-1][::max(1, math.ceil(len(powers) / 6))][::-1]  # at most 6, the longest length kept
        axes[0][0].set_xticks(ticks)
        axes[0][0].set_xticklabels([str(int(t)) for t in ticks], fontsize=7)
        for ax in axes.flat:
            ax.tick_params(axis="x", which="minor", bottom=False)
            ax.tick_params(axis="y", labelsize=7)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=_shade("0.25", shades[L]), lw=1.3 if L == longest else 0.9,
                          label=f"eval_len {L}") for L in lens]
        handles += [Line2D([], [], color="0.86", lw=0.6, label=f"other series at {longest}"),
                    Line2D([], [], color="0.3", ls=":", lw=0.9, label=f"train_len ({train_len})")]
        if uni is not None:
            handles.append(Line2D([], [], color="0.45", ls=(0, (4, 2)), lw=0.9, label="unigram (no context)"))
        note = scaling_note(series).replace(";\n", "; ")
        many = max(ns or [1]) > 1
        title = (f"{band_note(min(ns or [1]), max(ns or [1]))}; one line per eval_len, lighter = shorter window"
                 + (" (band on the longest)" if many else "") + (f";\n{note}" if note else ""))
        rows = 3 if note else 2
        top = 1 - (0.32 * rows + 0.35) / fig.get_figheight()
        fig.tight_layout(rect=(0, 0, 1, top), h_pad=0.6, w_pad=0.4)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, top), title=title, title_fontsize=7)
        return list(savefig(fig, stem))


def _unigram(rows, L: int) -> float | None:
    """The unigram reference loss the rows at eval length ``L`` carry (the same for every row of a document
    sample), or None for rows made before it was recorded."""
    if "unigram_loss" not in rows.columns:
        return None
    v = pd.to_numeric(rows.loc[rows["eval_len"] == L, "unigram_loss"], errors="coerce").dropna()
    return float(v.median()) if len(v) else None


@figure
def fig_probe_vs_length(summ, task: str, order: list[str], chance: float | None, pal: dict, markers: dict,
                        stem: Path) -> list[Path]:
    """A probe's accuracy vs context length with 95% bands (t-interval over seeds with two seeds or more, Wilson
    with one: :func:`probe_summary`), and the chance level at each length as the generator computed it (the
    summary's ``chance`` column; ``chance``: a level for summaries without one)."""
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for pos in order:
            s = summ[summ["position"] == pos].sort_values("eval_len")
            ax.plot(s["eval_len"], s["acc"], marker=markers.get(pos, "o"), ms=4, lw=1.5, color=pal.get(pos),
                    ls=line_style(pos), label=pos)
            ax.fill_between(s["eval_len"], s["lo"], s["hi"], color=pal.get(pos), alpha=0.12, lw=0)
        lens = sorted(summ["eval_len"].unique())
        if "chance" in summ and summ["chance"].notna().any():
            ch = summ.groupby("eval_len")["chance"].mean().reindex(lens)
            lo_c, hi_c = float(ch.min()), float(ch.max())
            what = f"{lo_c:.2g}" if math.isclose(lo_c, hi_c, rel_tol=1e-3) else f"{lo_c:.2g}–{hi_c:.2g}"
            ax.plot(lens, ch.to_numpy(dtype=float), color="0.3", ls=":", lw=1.2, drawstyle="steps-mid",
                    label=f"chance ({what})")
        elif chance is not None:
            ax.axhline(chance, color="0.3", ls=":", lw=1.2, label=f"chance ({chance:.2g})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lens)
        ax.set_xticklabels([str(int(L)) for L in lens])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(PROBE_TITLES[task].split(" (")[0])
        seeds = int(summ["seeds"].max()) if "seeds" in summ and len(summ) else 1
        band = (f"band: 95% t-interval over n={seeds} seeds" if seeds >= 2 else
                "band: 95% Wilson interval, n=1 seed")
        note = scaling_note(order)
        _legend_outside(ax, band + ";\naccuracy pooled over depths" + (f";\n{note}" if note else ""))
        return list(savefig(fig, stem))


def _chance_label(chance: dict, depth: float) -> str:
    c = chance.get(float(depth))
    return "—" if c is None or not np.isfinite(c) else (f"{c:.2f}" if c >= 0.01 else f"{c:.2g}")


@figure
def probe_heatmaps(pk, order: list[str], stem: Path, chance: dict | None = None) -> list[Path]:
    """A probe's accuracy by needle depth x context length, one heatmap per variant (mean over seeds). ``chance``:
    ``{depth: chance level}`` (:func:`probe_chance_by_depth`), printed beside each depth's label."""
    pk = pk.copy()
    pk["acc"] = pd.to_numeric(pk["value"], errors="coerce")
    agg = pk.groupby(["position", "eval_len", "depth"], sort=False)["acc"].mean().reset_index()
    n = len(order)
    cols = min(5, n)
    rows_ = math.ceil(n / cols)
    all_lens = sorted(int(L) for L in agg["eval_len"].unique())
    all_depths = sorted(float(d) for d in agg["depth"].unique())
    with plot_style():
        fig, axes = plt.subplots(rows_, cols, figsize=(2.5 * cols + 0.8, 2.4 * rows_), squeeze=False,
                                 constrained_layout=True)
        im = None
        for i, pos in enumerate(order):
            ax = axes[i // cols][i % cols]
            h = agg[agg["position"] == pos].pivot_table(index="depth", columns="eval_len", values="acc")
            h = h.reindex(index=all_depths, columns=all_lens)
            im = ax.imshow(h.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper")
            ax.set_title(pos, fontsize=9)
            ax.set_xticks(range(len(all_lens)))
            ax.set_xticklabels([str(L) for L in all_lens], fontsize=7, rotation=45)
            ax.set_yticks(range(len(all_depths)))
            ax.set_yticklabels([f"{d:g}" if chance is None else f"{d:g} ({_chance_label(chance, d)})"
                                for d in all_depths], fontsize=7)
            ax.grid(False)
            if i % cols == 0:
                ax.set_ylabel("needle depth" if chance is None else "needle depth (chance)")
            if i // cols == rows_ - 1 or i + cols >= n:
                ax.set_xlabel("eval_len")
        for j in range(n, rows_ * cols):
            axes[j // cols][j % cols].axis("off")
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
        return list(savefig(fig, stem))
