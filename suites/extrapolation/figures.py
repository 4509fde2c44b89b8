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


@figure
def fig_loss_vs_position(g, order: list[str], train_len: int, pal: dict, stem: Path,
                         markers: dict | None = None) -> list[Path]:
    """Figure 2: loss vs token position inside the window, one panel per eval length, mean over seeds with its 95%
    t-interval band (no band with one seed; the legend title says which, and n); a dashed grey line at the loss of a
    context-free unigram model on the same documents, and ``none`` (NoPE) among the curves as the no-position
    reference; no files when no row has a per-position loss."""
    markers = markers or {}
    g = relabel(g)  # fixed-scale and fine-tuned RoPE rows are series of their own, never averaged into the key's
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
    if not recs:
        return []
    pdf = pd.DataFrame(recs)
    lens = sorted(pdf["eval_len"].unique())
    ns: list[int] = []
    with plot_style():
        fig, axes = plt.subplots(1, len(lens), figsize=(3.0 * len(lens), 3.2), sharey=True, squeeze=False)
        for ax, L in zip(axes[0], lens):
            sub = pdf[pdf["eval_len"] == L]
            for pos in order:
                s = sub[sub["position"] == pos]
                if s.empty:
                    continue
                by = s.groupby("token position", sort=True)["loss"]
                m, sd, n = by.mean(), by.std(ddof=1), by.count()
                ax.plot(m.index, m.values, lw=1.2, ls=line_style(pos), color=pal.get(pos),
                        marker=markers.get(pos, "o"), ms=3, markevery=max(1, len(m) // 5), label=pos)
                half = np.array([t_ppf(0.975, k - 1) * v / math.sqrt(k) if k > 1 and np.isfinite(v) else 0.0
                                 for v, k in zip(sd.values, n.values)])
                if (half > 0).any():
                    ax.fill_between(m.index, m.values - half, m.values + half, color=pal.get(pos), alpha=0.12, lw=0)
                ns += [int(k) for k in n.values]
            ax.axvline(train_len, color="0.3", ls=":", lw=1.0)
            uni = _unigram(ok, L)
            if uni is not None:  # reference: a context-free model on the same documents
                ax.axhline(uni, color="0.45", ls=(0, (4, 2)), lw=1.0, label="unigram (no context)")
            ax.set_title(f"eval_len {L}", fontsize=9)
            ax.set_xlabel("token position in window")
        axes[0][0].set_ylabel("loss (nats/token, mean over seeds)")
        seen: dict[str, Any] = {}
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels = [p for p in order if p in seen] + [x for x in ("unigram (no context)",) if x in seen]
        handles = [seen[p] for p in labels]
        ncol = min(10, len(labels))
        rows = math.ceil(len(labels) / ncol) + 1
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.07 * rows))
        note = scaling_note(labels).replace(";\n", "; ")
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.07 * rows), title=band_note(min(ns or [1]), max(ns or [1]))
                   + (f"; {note}" if note else ""), title_fontsize=7)
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
