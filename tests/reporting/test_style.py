"""ablate.reporting.style: one colour-blind-safe colour and marker per variant key in every figure of every suite; bands that
say what they are; labels that do not overlap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pytest

from ablate.reporting import style as st
from ablate.store.results import to_frame
from ablate.reporting.style import KEYS, MARKERS, PALETTE, overlapping_texts, series_key, styles

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"

# Okabe & Ito (2008), "Color Universal Design": the eight colours safe for the common colour-vision deficiencies.
OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}


@pytest.fixture
def captured(monkeypatch):
    """Every figure a suite's figure function saves, kept open (savefig is replaced by a recorder)."""
    import matplotlib.pyplot as plt

    from ablate.suites.extrapolation import figures as ex
    from ablate.suites.latency import figures as lat
    from ablate.suites.training import figures as tr

    figs: dict[str, object] = {}

    def record(fig, stem, **_):
        figs[Path(stem).name] = fig
        return Path(f"{stem}.png"), Path(f"{stem}.svg")

    for mod in (ex, lat, tr):
        monkeypatch.setattr(mod, "savefig", record)
    yield figs
    for fig in figs.values():
        plt.close(fig)


def _hex(c) -> str:
    return mcolors.to_hex(c, keep_alpha=False).upper()


def _series(fig) -> dict[str, tuple[str, str]]:
    """label -> (colour, marker) of every labelled line in the figure (legend entries of reference lines left out)."""
    out = {}
    for ax in fig.axes:
        for ln in ax.get_lines():
            lab = ln.get_label()
            if lab.startswith("_") or lab.startswith(("train_len", "chance", "Pareto")):
                continue
            out[lab.split(" (n=")[0]] = (_hex(ln.get_color()), ln.get_marker())
    return out


# ---------------------------------------------------------------------------------------------------------------
# The table


def test_palette_is_okabe_ito_without_yellow_and_every_builtin_key_has_a_distinct_style():
    assert {c.upper() for c in PALETTE} == OKABE_ITO - {"#F0E442"}
    assert all(st.contrast_on_white(c) >= 2.0 for c in PALETTE)  # nothing pale on white
    assert st.contrast_on_white("#F0E442") < 2.0  # the check can fail: Okabe-Ito's yellow would
    triples = {k: st.style(k) for ks in KEYS.values() for k in ks}
    assert len(set(triples.values())) == len(triples)  # no two built-in keys look alike
    for keys in KEYS.values():  # the keys of one axis differ in colour first, then in line style, and in marker
        first = keys[: len(PALETTE)]
        assert len({st.style(k).color for k in first}) == len(first)
        assert len({(st.style(k).color, st.style(k).linestyle) for k in keys}) == len(keys)
    for keys in KEYS.values():  # up to 16 keys of one axis: 16 markers
        assert len({st.style(k).marker for k in keys}) == len(keys), keys


def test_sixteen_series_and_more_are_told_apart():
    """Any 16 labels of one figure: each its own (colour, line style) pair and its own marker; 28: their own pair."""
    for labels in ([f"plugin{i}" for i in range(16)], list(KEYS["position"]) + ["xpos", "my key", "p3"],
                   list(KEYS["attention"]) + ["a", "b", "c", "d", "e"]):
        s = styles(labels)
        assert len({(v.color, v.linestyle) for v in s.values()}) == len(labels), labels
        assert len({v.marker for v in s.values()}) == len(labels), labels
    s = styles([f"q{i}" for i in range(28)])
    assert len({(v.color, v.linestyle) for v in s.values()}) == 28
    assert all(v.linestyle in st.LINESTYLES and v.linestyle in st.LINESTYLE_NAMES for v in s.values())
    assert st.linestyle_note({"-": "trained", "--": "scaled"}) == "solid: trained; dashed: scaled"


def test_log_ticks_are_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for lo, hi in ((3.0, 60.0), (5.5, 9.0), (0.02, 400.0)):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [lo, hi])
        ax.set_yscale("log")
        st.plain_log_ticks(ax, "y")
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        plt.close(fig)
        assert len(labels) >= 2, (lo, hi, labels)
        assert all("10^" not in x and "times" not in x and "×" not in x for x in labels), labels
        assert all(float(x.replace("−", "-")) > 0 for x in labels)


def test_presentation_table_names_only_registered_keys():
    """The table orders and colours the keys it names; a stale name there is a mistake. A key it does not name (a
    new built-in or a plugin) still gets a style of its own from the fallback, so adding a variant stays one file."""
    from ablate.registry.keys import REGISTRIES

    for axis in ("position", "attention", "norm", "activation"):
        stale = set(KEYS[axis]) - set(REGISTRIES[axis].keys())
        assert not stale, f"ablate.reporting.style.KEYS[{axis!r}] names keys nobody registers: {sorted(stale)}"
    new = styles(list(KEYS["position"]) + ["xpos"])  # an unnamed key: a style no named key of the figure has
    assert len({(v.color, v.linestyle) for v in new.values()}) == len(new)


def test_style_module_imports_neither_torch_nor_matplotlib():
    code = ("import sys, ablate.reporting.style as s; s.styles(['rope', 'x']); "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_series_labels_take_the_style_of_the_key_they_change():
    assert series_key("original+rope") == "rope" and series_key("modern-swiglu→relu") == "relu"
    assert series_key("norm=layernorm") == "layernorm" and series_key("rmsnorm+swiglu") == "swiglu"
    assert series_key("rope") == "rope" and series_key("my_plugin") == "my_plugin"
    s = styles(["original", "original+rope", "alibi"])
    assert s["original+rope"] == st.style("rope") and s["alibi"] == st.style("alibi")


def test_styles_are_deterministic_and_distinct_within_a_figure():
    labels = ["rope", "original+rope", "my_plugin", "other plugin", "modern-swiglu→relu", "relu"] + \
        [f"p{i}" for i in range(14)]
    a, b = styles(labels), styles(list(reversed(labels)))
    assert len({(s.color, s.linestyle) for s in a.values()}) == len(labels)
    assert a["rope"] == b["rope"] == st.style("rope") and a["relu"] == st.style("relu")  # keys never move
    assert a["original+rope"] != a["rope"]  # a composite moves off the key it shares a figure with
    assert all(s.color.upper() in OKABE_ITO and s.marker in MARKERS for s in a.values())
    few = styles(["p1", "p2", "p3", "p4", "p5", "p6", "p7"])
    assert len({s.color for s in few.values()}) == 7  # up to seven series: seven colours, all solid
    assert {s.linestyle for s in few.values()} == {"-"}
    # the hash fallback is crc32, the same in every process (not Python's salted hash)
    code = "import ablate.reporting.style as s; print(s.style('my_plugin'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert outs == {str(st.style("my_plugin")) + "\n"}


def test_band_note_says_which_band_and_n():
    assert st.band_note(3) == "band: 95% CI (t-interval over seeds), n=3 seeds"
    assert st.band_note(1) == "n=1 seed, no band"
    assert st.band_note(5, 140, what="p20–p80", unit="repeat") == "band: p20–p80, n=5–140 repeats"


# ---------------------------------------------------------------------------------------------------------------
# Figures: same key, same look, in every suite


def _extrapolation_frame():
    return to_frame([RESULTS / "extrapolation" / "cpu-tiny.jsonl"])


def _training_frame():
    """The committed tiny rows of the default grid (the file also holds other grids' rows, e.g. the QK-norm LR sweep,
    which the report draws in figures of their own: one per ``grid_id``)."""
    g = to_frame([RESULTS / "training" / "cpu-tiny.jsonl"])
    return g[g["grid_id"] == g.loc[g["point"] == "original+rope", "grid_id"].iloc[0]]


def test_same_key_same_colour_and_marker_across_suites(captured, tmp_path):
    from ablate.suites.extrapolation.figures import fig_ppl_vs_length, variant_style
    from ablate.suites.extrapolation.summary import variant_order, ppl_summary
    from ablate.suites.latency.figures import fig_tflops
    from ablate.suites.latency.tables import kernel_frame
    from ablate.suites.training.aggregate import point_stats
    from ablate.suites.training.figures import fig_curves, palette

    df = _extrapolation_frame()
    summ = ppl_summary(df[df["metric"] == "ppl"])
    pal, marks = variant_style(summ["position"])
    fig_ppl_vs_length(summ, variant_order(summ), 64, pal, marks, tmp_path / "ppl")
    g = _training_frame()
    stats = point_stats(g)
    fig_curves(g, stats, palette([s["point"] for s in stats]), tmp_path)
    lat = to_frame([RESULTS / "latency" / "gpu.jsonl"])
    fig_tflops(kernel_frame(lat), "fwd", tmp_path / "tflops")

    ex, tr, la = _series(captured["ppl"]), _series(captured["training_curves"]), _series(captured["tflops"])
    assert {"rope", "alibi", "sinusoidal"} <= set(ex) and {"sdpa", "naive"} <= set(la)
    for series in (ex, la):  # a key looks as the table says, in every suite
        for key, (color, marker) in series.items():
            if " " in key:  # a series of a key (`rope_ntk s=4`: a fixed scale), not a key of its own
                continue
            assert (color, marker) == (st.style(key).color.upper(), st.style(key).marker), key
    # the training point that adds RoPE looks like RoPE in the extrapolation figure
    assert tr["original+rope"] == ex["rope"]
    for series in (ex, tr, la):
        assert {c for c, _ in series.values()} <= OKABE_ITO


def test_latency_legend_uses_the_same_styles(captured, tmp_path):
    from ablate.suites.latency.figures import fig_decode, fig_prefill

    lat = to_frame([RESULTS / "latency" / "gpu.jsonl"])
    fig_decode(lat, tmp_path / "decode")
    fig_prefill(lat, tmp_path / "prefill")
    for name in ("decode", "prefill"):
        series = _series(captured[name])
        for lab, (color, marker) in series.items():
            key = lab.split()[0].rstrip(",")
            assert color == st.style(key).color.upper()
            if "closed form" not in lab:
                assert marker == st.style(key).marker
        legend = captured[name].axes[0].get_legend()
        assert "p20–p80" in legend.get_title().get_text()
        assert not overlapping_texts(captured[name])


# ---------------------------------------------------------------------------------------------------------------
# Bands


def _bands(fig) -> int:
    from matplotlib.collections import PolyCollection

    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def _one_seed_training(g):
    return g[g["seed"] == g["seed"].min()]


def test_training_curves_band_with_seeds_and_none_with_one(captured, tmp_path):
    from ablate.suites.training.aggregate import point_stats
    from ablate.suites.training.figures import fig_curves, palette

    g = _training_frame()
    for name, frame in (("three", g), ("one", _one_seed_training(g))):
        stats = point_stats(frame)
        fig_curves(frame, stats, palette([s["point"] for s in stats]), tmp_path / name)
        fig = captured.pop("training_curves")
        title = fig._suptitle.get_text()
        if name == "three":
            assert _bands(fig) > 0 and "band: 95% CI" in title and "n=3" in title
        else:
            assert _bands(fig) == 0 and "n=1 seed, no band" in title
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_extrapolation_bands_say_which_and_n(captured, tmp_path):
    from ablate.suites.extrapolation.figures import fig_loss_vs_position, fig_ppl_vs_length, variant_style
    from ablate.suites.extrapolation.summary import variant_order, ppl_summary

    df = _extrapolation_frame()
    ppl = df[df["metric"] == "ppl"]
    for name, frame in (("three", ppl), ("one", ppl[ppl["seed"] == ppl["seed"].min()])):
        summ = ppl_summary(frame)
        pal, marks = variant_style(summ["position"])
        order = variant_order(summ)
        fig_ppl_vs_length(summ, order, 64, pal, marks, tmp_path / f"ppl_{name}")
        fig_loss_vs_position(frame, order, 64, pal, tmp_path / f"pos_{name}", marks)
        fig, pos = captured[f"ppl_{name}"], captured[f"pos_{name}"]
        title = fig.axes[0].get_legend().get_title().get_text()
        pos_title = pos.legends[0].get_title().get_text()
        if name == "three":
            assert _bands(fig) > 0 and title.startswith("band: 95% CI") and "n=3 seeds" in title
            assert _bands(pos) > 0 and "n=3 seeds" in pos_title
        else:
            assert _bands(fig) == 0 and title.split(";")[0] == "n=1 seed, no band"
            assert _bands(pos) == 0 and pos_title.split(";")[0] == "n=1 seed, no band"
        if any(p.startswith("rope_") for p in order):  # the legend says what the dashed lines are
            assert "dashed: rope model, RoPE scaled at inference" in title and "solid: trained" in pos_title
        lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
        for p in order:
            if p in lines:
                want = "--" if p in ("rope_pi", "rope_ntk", "rope_yarn", "rope_dynamic_ntk") else \
                    ":" if p.startswith("rope_") and " s=" in p and " ft" not in p else "-." if " ft" in p else "-"
                assert lines[p].get_linestyle() == want, p
        looks = [(_hex(ln.get_color()), ln.get_linestyle(), ln.get_marker()) for p, ln in lines.items() if p in order]
        assert len(set(looks)) == len(looks)  # no two series of the figure look alike
        # every curve spans the lengths on the axis: a length a variant has no value at is a gap, not a straight line
        lens = sorted(summ["eval_len"].unique())
        for p, ln in lines.items():
            if p in order:
                assert list(ln.get_xdata()) == lens, p
                have = set(summ.loc[(summ["position"] == p) & np.isfinite(summ["mean"]), "eval_len"])
                assert [bool(np.isfinite(y)) for y in ln.get_ydata()] == [L in have for L in lens], p


# ---------------------------------------------------------------------------------------------------------------
# No overlapping labels


def test_pareto_labels_do_not_overlap():
    import matplotlib.pyplot as plt

    from ablate.reporting.tables import plot_style
    from ablate.suites.training.aggregate import point_stats
    from ablate.suites.training.figures import palette, pareto_figure

    stats = point_stats(_training_frame())
    pts = [s for s in stats if s["val"].mean is not None and s["tokens_per_s"]]
    with plot_style():
        fig, front, _segments = pareto_figure(pts, palette([s["point"] for s in stats]))
        try:
            texts = [t.get_text() for t in fig.axes[0].texts]
            assert sorted(texts) == sorted(s["point"] for s in pts)  # every point labelled
            assert not overlapping_texts(fig)
            assert front
        finally:
            plt.close(fig)


def test_annotate_points_separates_a_tight_cluster():
    import matplotlib.pyplot as plt

    from ablate.reporting.style import annotate_points

    fig, ax = plt.subplots(figsize=(4, 3))
    rng = np.random.default_rng(0)
    xs, ys = 10 + rng.normal(0, 0.01, 12), 2 + rng.normal(0, 0.01, 12)
    ax.scatter(xs, ys)
    ax.set_xlim(9, 11)
    ax.set_ylim(1, 3)
    try:
        texts = annotate_points(ax, xs, ys, [f"grid point {i}" for i in range(12)])
        assert len(texts) == 12 and not overlapping_texts(fig)
        # the check can fail: two labels on the same spot overlap
        ax.annotate("same", (10, 2))
        ax.annotate("same too", (10, 2))
        assert ("same", "same too") in overlapping_texts(fig)
    finally:
        plt.close(fig)


def test_other_figures_have_no_overlapping_text(captured, tmp_path):
    from ablate.suites.extrapolation.figures import fig_ppl_vs_length, fig_probe_vs_length, variant_style
    from ablate.suites.extrapolation.summary import variant_order, ppl_summary, probe_chance, probe_summary
    from ablate.suites.latency.figures import fig_memory, fig_tflops
    from ablate.suites.latency.tables import kernel_frame
    from ablate.suites.training.aggregate import point_stats
    from ablate.suites.training.figures import fig_curves, palette

    df = _extrapolation_frame()
    summ = ppl_summary(df[df["metric"] == "ppl"])
    pal, marks = variant_style(summ["position"])
    fig_ppl_vs_length(summ, variant_order(summ), 64, pal, marks, tmp_path / "ppl")
    pk = df[(df["metric"] == "passkey_acc") & (df["status"] == "ok")]
    ps = probe_summary(pk)
    fig_probe_vs_length(ps, "passkey", variant_order(ps), probe_chance(pk), pal, marks, tmp_path / "probe")
    g = _training_frame()
    stats = point_stats(g)
    fig_curves(g, stats, palette([s["point"] for s in stats]), tmp_path)
    k = kernel_frame(to_frame([RESULTS / "latency" / "gpu.jsonl"]))
    fig_tflops(k, "fwd", tmp_path / "tflops")
    fig_memory(k, tmp_path / "memory")
    assert {"ppl", "probe", "training_curves", "tflops", "memory"} <= set(captured)
    for name, fig in captured.items():
        assert not overlapping_texts(fig), name


def test_figures_are_still_deterministic(tmp_path):
    """Same rows, same bytes (the label placement included)."""
    from ablate.reporting.tables import plot_style, savefig
    from ablate.suites.training.aggregate import point_stats
    from ablate.suites.training.figures import palette, pareto_figure

    stats = point_stats(_training_frame())
    pts = [s for s in stats if s["val"].mean is not None and s["tokens_per_s"]]
    out = []
    for i in range(2):
        with plot_style():
            fig, _, _ = pareto_figure(pts, palette([s["point"] for s in stats]))
            out.append(savefig(fig, tmp_path / str(i) / "p")[1].read_bytes())
    assert out[0] == out[1]

