"""Figures for a paper: per-position loss as small multiples (one panel per series, shared axes), Pareto plots with
interval bars and labels whose rendered boxes never overlap, even on a crowded front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.analysis.stats import summarize
from ablate.reporting.style import overlapping_texts
from ablate.store.results import to_frame

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured(monkeypatch):
    """The figures the suites' figure functions save, kept open (savefig replaced by a recorder)."""
    import matplotlib.pyplot as plt

    from ablate.suites.extrapolation import figures as ex
    from ablate.suites.recall import figures as rc

    figs: dict[str, object] = {}

    def record(fig, stem, **_):
        figs[Path(stem).name] = fig
        return Path(f"{stem}.png"), Path(f"{stem}.svg")

    for mod in (ex, rc):
        monkeypatch.setattr(mod, "savefig", record)
    yield figs
    for fig in figs.values():
        plt.close(fig)


def _boxes(fig, texts):
    """Each label's rendered box (its glyphs, from ``get_window_extent``; an annotation's leader line apart)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) for t in texts]


def _leaders(fig, texts) -> list:
    """The leader lines drawn, in display coordinates (``get_window_extent`` of their paths' vertices)."""
    fig.canvas.draw()
    out = []
    for t in texts:
        patch = getattr(t, "arrow_patch", None)
        if patch is not None:
            verts = patch.get_path().vertices
            out.append((t.get_text(), verts[0], verts[-1]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Per-position loss: small multiples


def test_loss_vs_position_is_one_panel_per_series_on_shared_axes(captured, tmp_path):
    from matplotlib.colors import to_rgb

    from ablate.suites.extrapolation.figures import fig_loss_vs_position, variant_style
    from ablate.suites.extrapolation.labels import relabel
    from ablate.suites.extrapolation.summary import ppl_summary, variant_order

    df = to_frame([ROOT / "results" / "extrapolation" / "cpu-small.jsonl"])
    ppl = df[df["metric"] == "ppl"]
    summ = ppl_summary(ppl)
    pal, marks = variant_style(summ["position"])
    order = variant_order(summ)
    assert fig_loss_vs_position(ppl, order, 128, pal, tmp_path / "pos", marks)
    fig = captured["pos"]
    with_curve = relabel(ppl)
    with_curve = with_curve[with_curve["pos_loss"].map(lambda v: isinstance(v, list)) & (with_curve["status"] == "ok")]
    series = [p for p in order if p in set(with_curve["position"])]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in panels] == series and len(series) >= 10  # one panel per series, in order
    first = panels[0]
    for ax in panels[1:]:  # shared axes: panels compare at a glance
        assert first.get_shared_x_axes().joined(first, ax) and first.get_shared_y_axes().joined(first, ax)
    lens = sorted(with_curve["eval_len"].unique())
    for ax, pos in zip(panels, series):
        own = [ln for ln in ax.get_lines() if ln.get_zorder() == 3]  # its curves, above the others' grey ones
        assert all(np.allclose(_hue(ln.get_color()), _hue(pal[pos]), atol=0.02) for ln in own), pos
        have = sorted(with_curve.loc[with_curve["position"] == pos, "eval_len"].unique())
        assert len(own) == len(have), pos  # one line per eval length, in the series' colour
        widths = sorted(max(ln.get_xdata()) for ln in own)
        assert widths[-1] > widths[0] or len(have) == 1  # shorter windows end earlier
        assert [ln.get_label() for ln in own if not ln.get_label().startswith("_")] == [pos]
        # lighter = shorter: the longest line is the series' colour itself, the others mixed with white
        longest = max(own, key=lambda ln: max(ln.get_xdata()))
        assert np.allclose(to_rgb(longest.get_color()), to_rgb(pal[pos]), atol=1e-6)
    title = fig.legends[0].get_title().get_text()
    assert "one line per eval_len, lighter = shorter" in title and "n=3 seeds" in title
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {f"eval_len {L}" for L in lens}
    assert not overlapping_texts(fig)


def _hue(color):
    """Hue and saturation direction of a colour, independent of how much white it is mixed with."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(color))
    w = 1.0 - rgb  # distance from white: mixing with white scales it
    n = np.linalg.norm(w)
    return w / n if n > 0 else w


# ---------------------------------------------------------------------------------------------------------------
# Pareto: intervals and labels that do not overlap


def _crowded_front(n: int = 16) -> list[dict]:
    """``n`` grid points on one tight trade-off curve (every one Pareto-optimal on the means), three seeds each."""
    pts = []
    for i in range(n):  # faster and worse step by step: every mean on the front; intervals reach across it
        tps = [10_000 + 40 * i + d for d in (-700, 0, 700)]
        val = [2.50 + 0.004 * i + d for d in (-0.012, 0, 0.012)]
        s_tps, s_val = summarize(tps), summarize(val)
        pts.append({"point": f"modern+variant_{i:02d}", "tokens_per_s": s_tps.mean, "val": s_val, "tps": s_tps})
    return pts


def test_crowded_pareto_front_labels_do_not_overlap():
    import matplotlib.pyplot as plt

    from ablate.reporting.tables import plot_style
    from ablate.suites.training.figures import palette, pareto_figure

    pts = _crowded_front()
    with plot_style():
        fig, front, _ = pareto_figure(pts, palette([p["point"] for p in pts]))
        try:
            ax = fig.axes[0]
            labels = [t for t in ax.texts if t.get_text()]
            assert sorted(t.get_text() for t in labels) == sorted(p["point"] for p in pts)  # every point labelled
            boxes = _boxes(fig, labels)
            clashes = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                       for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
            assert clashes == []
            # no leader line runs through another label
            from ablate.reporting.style import crosses

            for name, a, b in _leaders(fig, labels):
                for t, box in zip(labels, boxes):
                    assert t.get_text() == name or not crosses(a, b, box), (name, t.get_text())
            assert len(front) == len(pts)  # the front is crowded indeed
            bars = [c for c in ax.containers if c.has_xerr and c.has_yerr]
            assert len(bars) == len(pts)  # 95% intervals on both axes, from the seeds
            assert ax.get_xlim()[0] >= 0  # a throughput axis never shows negative tokens/s
        finally:
            plt.close(fig)


def test_label_repel_can_fail_and_is_deterministic():
    """Two labels forced onto one spot do overlap (the check can fail); the placement repeats exactly."""
    import matplotlib.pyplot as plt

    from ablate.reporting.style import annotate_points

    def place():
        fig, ax = plt.subplots(figsize=(3, 2))
        xs, ys = np.full(30, 1.0), np.full(30, 1.0)
        ax.scatter(xs, ys)
        texts = annotate_points(ax, xs, ys, [f"a rather long label {i}" for i in range(30)])
        return fig, texts, [t.get_position() for t in texts]

    fig, texts, pos = place()
    fig2, _, pos2 = place()
    try:
        assert len(texts) == 30 and pos == pos2  # every label drawn, none dropped; same spots twice
        assert not overlapping_texts(fig)
        fig.axes[0].annotate("x", (1, 1))
        fig.axes[0].annotate("x too", (1, 1))
        assert ("x", "x too") in overlapping_texts(fig)
    finally:
        plt.close(fig)
        plt.close(fig2)


def test_recall_pareto_has_interval_bars(captured, tmp_path):
    from ablate.suites.recall.figures import fig_memory

    rows = []
    for att, state, acc in (("sdpa", 4096, 0.95), ("sliding_window", 512, 0.6), ("linear", 256, 0.3)):
        for d in (64, 128):
            rows.append({"attention": att, "window": 16.0 if att == "sliding_window" else np.nan, "n_kv_heads": None,
                         "n_heads": 2, "seq_len": 256, "kv_pairs": 16, "d_model": d, "state_bytes": state * d,
                         "accuracy": acc, "lo": acc - 0.05, "hi": min(1.0, acc + 0.05)})
    assert fig_memory(pd.DataFrame(rows), tmp_path / "mem")
    ax = captured["mem"].axes[0]
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 3  # one series each, with its accuracy interval
    assert "95% interval" in ax.get_legend().get_title().get_text()
