"""Deterministic Markdown/LaTeX tables and figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.reporting.tables import latex_escape, plot_style, savefig, to_latex, to_markdown, write_table


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "position": ["rope", "alibi", "t5_bias"],
        "ppl@512": [12.3456, np.nan, 1.5e6],
        "params": [1000, 2000, 3000],
        "extrapolates": [True, False, True],
    })


def test_write_table_is_byte_identical(tmp_path):
    md1, tex1 = write_table(_frame(), tmp_path / "a" / "ppl", caption="Perplexity")
    md2, tex2 = write_table(_frame(), tmp_path / "b" / "ppl", caption="Perplexity")
    assert (md1.name, tex1.name) == ("ppl.md", "ppl.tex")
    assert md1.read_bytes() == md2.read_bytes()
    assert tex1.read_bytes() == tex2.read_bytes()
    before = md1.read_bytes(), tex1.read_bytes()
    write_table(_frame(), tmp_path / "a" / "ppl", caption="Perplexity")  # overwrite in place
    assert (md1.read_bytes(), tex1.read_bytes()) == before
    assert b"\r" not in md1.read_bytes() and md1.read_bytes().endswith(b"\n")


def test_markdown_layout():
    md = to_markdown(_frame(), caption="Perplexity at 512", floatfmt=".2f")
    lines = md.splitlines()
    assert lines[0].startswith("| position") and lines[0].endswith("|")
    assert lines[1].startswith("|:") and "---:|" in lines[1]  # text left, numbers right
    assert "12.35" in md and "1500000.00" in md and "—" in md  # NaN shown as a dash
    assert "| yes" in md and "| no " in md
    assert md.rstrip().endswith("Table: Perplexity at 512")
    assert len({len(l) for l in lines[:5]}) == 1  # padded columns line up


def test_markdown_escapes_pipes_and_newlines():
    md = to_markdown(pd.DataFrame({"a|b": ["x|y", "two\nlines"]}))
    assert "a\\|b" in md and "x\\|y" in md and "two lines" in md


def test_latex_escaping():
    assert latex_escape("a_b & 50% $x$ #1 {y} ~ ^ \\") == (
        r"a\_b \& 50\% \$x\$ \#1 \{y\} \textasciitilde{} \textasciicircum{} \textbackslash{}")
    df = pd.DataFrame({"rope_yarn": ["t5&co"], "loss%": [1.0]})
    tex = to_latex(df, caption="PPL_at 50%", label="tab:x")
    assert r"rope\_yarn & loss\% \\" in tex
    assert r"t5\&co & 1 \\" in tex
    assert r"\caption{PPL\_at 50\%}" in tex and r"\label{tab:x}" in tex
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lr}"):
        assert cmd in tex


def test_latex_file_has_label_and_booktabs(tmp_path):
    _, tex = write_table(_frame(), tmp_path / "extrap ppl", floatfmt={"ppl@512": ".1f"})
    text = tex.read_text()
    assert r"\label{tab:extrap-ppl}" in text and r"\begin{tabular}{lrrl}" in text
    assert "12.3 & 1000" in text and "---" in text  # NaN → em dash in TeX


def test_index_and_multiindex_columns():
    df = pd.DataFrame({"ppl": [1.0, 2.0]}, index=pd.Index(["rope", "alibi"], name="position"))
    md = to_markdown(df)
    assert md.splitlines()[0].split("|")[1].strip() == "position"
    piv = pd.DataFrame({("ppl", "512"): [1.0], ("ppl", "1024"): [2.0]})
    assert "ppl / 512" in to_markdown(piv)


def _figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    xs = np.arange(10)
    ax.plot(xs, np.sqrt(xs), marker="o", label="rope")
    ax.set_xlabel("length")
    ax.legend()
    return fig


def test_savefig_is_deterministic(tmp_path):
    with plot_style():
        png1, svg1 = savefig(_figure(), tmp_path / "a" / "fig")
        png2, svg2 = savefig(_figure(), tmp_path / "b" / "fig")
    assert png1.suffix == ".png" and svg1.suffix == ".svg"
    assert png1.read_bytes() == png2.read_bytes()
    assert svg1.read_bytes() == svg2.read_bytes()
    svg = svg1.read_text()
    assert "<dc:date>" not in svg


def test_plot_style_restores_rc():
    import matplotlib

    before = dict(matplotlib.rcParams)
    with plot_style():
        assert matplotlib.rcParams["svg.hashsalt"] == "ablate"
    after = dict(matplotlib.rcParams)
    assert {k: v for k, v in after.items() if before[k] != v and not (isinstance(v, float) and math.isnan(v))} == {}


def test_headless_backend():
    import os

    import matplotlib

    if os.environ.get("MPLBACKEND"):
        pytest.skip("MPLBACKEND chosen by the user")

    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("fmt", [".3g", ".1f"])
def test_floatfmt(fmt):
    df = pd.DataFrame({"x": [math.pi]})
    assert format(math.pi, fmt) in to_markdown(df, floatfmt=fmt)


# ---------------------------------------------------------------------------------------------------------------
# LaTeX: real minus signs, one precision per column


def _tex_body(tex: str) -> list[list[str]]:
    lines = tex.splitlines()
    body = lines[lines.index(r"\midrule") + 1: lines.index(r"\bottomrule")]
    return [[c.strip() for c in ln.removesuffix(r" \\").split(" & ")] for ln in body]


def _decimals(cell: str) -> int:
    num = cell.replace("$-$", "").split("$")[0]
    return len(num.split(".", 1)[1]) if "." in num else 0


def test_latex_negative_numbers_print_a_real_minus():
    df = pd.DataFrame({"delta": [-0.0312, 0.5], "n": [-3, 4], "note": ["-0.0312 better", "non-causal, x-1 [-2, 3]"],
                       "tiny": [-1e-8, 2e-7], "edge": [-math.inf, -0.0]})
    rows = _tex_body(to_latex(df))
    assert rows[0][:2] == ["$-$0.0312", "$-$3"] and rows[1][0] == "0.5000" and rows[0][2] == "$-$0.0312 better"
    assert rows[1][2] == r"non-causal, x-1 [$-$2, 3]"  # hyphens inside words stay hyphens
    assert rows[0][3] == r"$-$1.000$\times10^{-8}$" and rows[0][4] == r"$-\infty$" and rows[1][4] == "0"
    for row in rows:
        for cell in row:
            assert not cell.startswith("-") and "e-" not in cell
    assert latex_escape("−0.5 and -1") == "$-$0.5 and $-$1"
    assert latex_escape("Δ ≥ 0.7, 2·L") == r"$\Delta$ $\geq$ 0.7, 2$\cdot$L"  # no bare Unicode maths in TeX
    assert "| -0.0312 |" in to_markdown(df)  # Markdown stays plain text


@pytest.mark.parametrize("fmt", [".4g", ".3g", {"x": ".4g"}])
def test_latex_column_has_one_precision(fmt):
    df = pd.DataFrame({"x": [0.5, 0.48213, 0.031, 0.1], "ms": [14.26, 2.6081, 40.234, 11.0],
                       "wide": [1.93e-7, 3e-7, 4.1e-6, 1e-7], "int-like": [1.0, 2.0, 3.0, np.nan],
                       "ints": [1, 20, 300, 4000]})
    rows = _tex_body(to_latex(df, floatfmt=fmt))
    for j, name in enumerate(df.columns):
        cells = [r[j] for r in rows if r[j] != "---"]
        if name == "wide":  # four orders of magnitude: the same significant digits, as a power of ten
            assert all(r"\times10^" in c for c in cells) and len({len(c.split("$")[0]) for c in cells}) == 1
        else:
            assert len({_decimals(c) for c in cells}) == 1, (name, cells)
    assert [r[0] for r in rows][:2] == (["0.500", "0.482"] if fmt == ".3g" else ["0.5000", "0.4821"])
    assert [r[3] for r in rows] == ["1", "2", "3", "---"] and [r[4] for r in rows] == ["1", "20", "300", "4000"]


def test_latex_fixed_specs_are_kept():
    df = pd.DataFrame({"tokens/s": [11003.4, 9895.0], "bpb": [3.25481, -1.0]})
    rows = _tex_body(to_latex(df, floatfmt={"tokens/s": ",.0f", "bpb": ".4f"}))
    assert rows == [["11,003", "3.2548"], ["9,895", "$-$1.0000"]]


def test_latex_numbers_written_as_text_are_right_aligned():
    """A column of numbers written as text (``10.41 ± 0.40``, ``623,104``, ``×1.79``, missing as ``—``) is
    right-aligned like a numeric column; a column with any word in it stays left-aligned."""
    df = pd.DataFrame({"variant": ["rope", "alibi"], "params": ["623,104", "639,488"],
                       "128 (train)": ["10.41 ± 0.40", "—"], "ratio": ["×1.79", "-3.2%"], "n": [3, 2],
                       "note": ["undertrained (×1.79)", ""]})
    tex = to_latex(df)
    assert r"\begin{tabular}{lrrrrl}" in tex
