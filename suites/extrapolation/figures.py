"""The report's figures (matplotlib / seaborn; no torch): perplexity vs evaluation length, loss vs token position in
the window, probe accuracy vs context length and by needle depth. One colour and marker per variant throughout."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.tables import plot_style, savefig

from .constants import POSITIONS, PROBE_TITLES, ROPE_SCALINGS

# After ablate.tables, which picks the headless backend (seaborn imports pyplot too).
import matplotlib.pyplot as plt  # noqa: E402,I001
import seaborn as sns  # noqa: E402


def variant_style() -> tuple[dict[str, Any], dict[str, str]]:
    """One colour (colour-blind palette) and one marker per position key, the same in every figure."""
    keys = list(POSITIONS) + list(ROPE_SCALINGS)
    colors = sns.color_palette("colorblind", n_colors=len(keys))
    marks = "osD^vP*Xph"
    return dict(zip(keys, colors)), {k: marks[i % len(marks)] for i, k in enumerate(keys)}


def fig_ppl_vs_length(summary, order: list[str], train_len: int, pal: dict, markers: dict, stem: Path) -> list[Path]:
    """Figure 1: perplexity vs evaluation length, 95% CI bands over seeds."""
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for pos in order:
            s = summary[(summary["position"] == pos) & np.isfinite(summary["mean"])].sort_values("eval_len")
            if s.empty:
                continue
            dashed = pos in ROPE_SCALINGS
            ax.plot(s["eval_len"], s["mean"], marker=markers.get(pos, "o"), ms=4, lw=1.6,
                    ls="--" if dashed else "-", color=pal.get(pos), label=pos)
            ci = s["ci"].fillna(0.0)
            if (ci > 0).any():
                ax.fill_between(s["eval_len"], s["mean"] - ci, s["mean"] + ci, color=pal.get(pos), alpha=0.15,
                                lw=0)
        ax.axvline(train_len, color="0.3", ls=":", lw=1.2)
        ax.text(train_len, 1.0, " train_len", transform=ax.get_xaxis_transform(), va="top", ha="left",
                fontsize=8, color="0.3")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        lens = sorted(summary["eval_len"].unique())
        ax.set_xticks(lens)
        ax.set_xticklabels([str(int(L)) for L in lens])
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("perplexity (log scale; 95% CI bands)")
        ax.set_title(f"Extrapolation: trained at {train_len}")
        ax.legend(fontsize=7, ncol=2, frameon=False)
        return list(savefig(fig, stem))


def fig_loss_vs_position(g, order: list[str], train_len: int, pal: dict, stem: Path) -> list[Path]:
    """Figure 2: loss vs token position inside the window, one panel per eval length (no files when no row has a
    per-position loss)."""
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
    with plot_style():
        fig, axes = plt.subplots(1, len(lens), figsize=(3.0 * len(lens), 3.2), sharey=True, squeeze=False)
        for ax, L in zip(axes[0], lens):
            sub = pdf[pdf["eval_len"] == L]
            for pos in order:
                s = sub[sub["position"] == pos]
                if s.empty:
                    continue
                m = s.groupby("token position", sort=True)["loss"].mean()
                ax.plot(m.index, m.values, lw=1.2, ls="--" if pos in ROPE_SCALINGS else "-",
                        color=pal.get(pos), label=pos)
            ax.axvline(train_len, color="0.3", ls=":", lw=1.0)
            ax.set_title(f"eval_len {L}", fontsize=9)
            ax.set_xlabel("token position in window")
        axes[0][0].set_ylabel("loss (nats/token, mean over seeds)")
        seen: dict[str, Any] = {}
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels = [p for p in order if p in seen]
        handles = [seen[p] for p in labels]
        fig.legend(handles, labels, loc="upper center", ncol=min(10, len(labels)), fontsize=7,
                   frameon=False, bbox_to_anchor=(0.5, 1.08))
        return list(savefig(fig, stem))


def fig_probe_vs_length(summ, task: str, order: list[str], chance: float, pal: dict, markers: dict,
                        stem: Path) -> list[Path]:
    """A probe's accuracy vs context length with 95% Wilson bands, and the chance level."""
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for pos in order:
            s = summ[summ["position"] == pos].sort_values("eval_len")
            ax.plot(s["eval_len"], s["acc"], marker=markers.get(pos, "o"), ms=4, lw=1.5, color=pal.get(pos),
                    ls="--" if pos in ROPE_SCALINGS else "-", label=pos)
            ax.fill_between(s["eval_len"], s["lo"], s["hi"], color=pal.get(pos), alpha=0.12, lw=0)
        ax.axhline(chance, color="0.3", ls=":", lw=1.2)
        ax.text(1.0, chance, " chance", transform=ax.get_yaxis_transform(), va="bottom", ha="right", fontsize=8,
                color="0.3")
        lens = sorted(summ["eval_len"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(lens)
        ax.set_xticklabels([str(int(L)) for L in lens])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy (95% Wilson band)")
        ax.set_title(PROBE_TITLES[task].split(" (")[0])
        ax.legend(fontsize=7, ncol=2, frameon=False)
        return list(savefig(fig, stem))


def _probe_heatmaps(pk, order: list[str], stem: Path) -> list[Path]:
    """A probe's accuracy by needle depth x context length, one heatmap per variant (mean over seeds)."""
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
            ax.set_yticklabels([f"{d:g}" for d in all_depths], fontsize=7)
            ax.grid(False)
            if i % cols == 0:
                ax.set_ylabel("needle depth")
            if i // cols == rows_ - 1 or i + cols >= n:
                ax.set_xlabel("eval_len")
        for j in range(n, rows_ * cols):
            axes[j // cols][j % cols].axis("off")
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
        return list(savefig(fig, stem))
