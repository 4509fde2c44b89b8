"""Paper-style outputs: Markdown + LaTeX (booktabs) tables and PNG + SVG figures, all deterministic.

Same input → byte-identical files, so committed reports only change in review when the numbers change.

    from ablate.tables import write_table, savefig, plot_style
    write_table(df, Path("reports/extrapolation/ppl"), caption="Perplexity by length")
    with plot_style():
        fig, ax = plt.subplots()
        ...
        savefig(fig, Path("reports/extrapolation/ppl"))
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Union

import matplotlib

if "ipykernel" not in sys.modules and "IPython" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless: CI and GPU boxes have no display; notebooks keep their own backend

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["write_table", "to_markdown", "to_latex", "latex_escape", "savefig", "plot_style", "SVG_HASHSALT"]

SVG_HASHSALT = "ablate"
FloatFmt = Union[str, Mapping[str, str]]
_DEFAULT_FLOATFMT = ".4g"


# ---------------------------------------------------------------------------------------------------------------
# Cell formatting


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(v)) if not isinstance(v, (list, tuple, dict, str)) else False
    except (TypeError, ValueError, ImportError):
        return False


def _fmt_cell(v: Any, fmt: str, na_rep: str) -> str:
    if _is_missing(v):
        return na_rep
    if isinstance(v, (bool,)) or type(v).__name__ == "bool_":
        return "yes" if bool(v) else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return format(f, fmt)
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_cell(x, fmt, na_rep) for x in v)
    return " ".join(str(v).split())  # one line per cell


def _prepare(df: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = [" / ".join(str(p) for p in col if str(p) != "") for col in df.columns]
    return df


def _cells(df: "pd.DataFrame", floatfmt: FloatFmt, na_rep: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, body cells as strings, and whether each column is numeric (right-aligned)."""
    import pandas as pd

    df = _prepare(df)
    headers = [str(c) for c in df.columns]
    numeric = []
    columns = []
    for pos, name in enumerate(df.columns):
        col = df.iloc[:, pos]
        fmt = floatfmt.get(str(name), _DEFAULT_FLOATFMT) if isinstance(floatfmt, Mapping) else floatfmt
        is_num = bool(pd.api.types.is_numeric_dtype(col.dtype)) and not pd.api.types.is_bool_dtype(col.dtype)
        if not is_num and col.dtype == object:  # object column of numbers and missing values
            vals = [v for v in col.tolist() if not _is_missing(v)]
            is_num = bool(vals) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)
        numeric.append(is_num)
        columns.append([_fmt_cell(v, fmt, na_rep) for v in col.tolist()])
    body = [list(r) for r in zip(*columns)] if columns else []
    return headers, body, numeric


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(df: "pd.DataFrame", *, caption: str = "", floatfmt: FloatFmt = _DEFAULT_FLOATFMT,
                na_rep: str = "—") -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned), padded for reading as plain text."""
    headers, body, numeric = _cells(df, floatfmt, na_rep)
    headers = [_md_escape(h) for h in headers]
    body = [[_md_escape(c) for c in row] for row in body]
    if not headers:
        return (f"{caption}\n\n" if caption else "") + "(empty table)\n"
    widths = [max([3, len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else (":" + "-" * (w + 1))
                          for w, num in zip(widths, numeric)) + "|"
    out = [line(headers), rule] + [line(r) for r in body]
    text = "\n".join(out) + "\n"
    if caption:
        text += f"\nTable: {' '.join(caption.split())}\n"
    return text


# ---------------------------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "—": "---", "–": "--", "\n": " ", "→": r"$\rightarrow$", "Δ": r"$\Delta$", "±": r"$\pm$",
    "≈": r"$\approx$", "×": r"$\times$",
}


def latex_escape(s: str) -> str:
    """Escape LaTeX special characters (``& % $ # _ { } ~ ^ \\ < >``) so the text prints literally."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(s))


def _label(stem: str) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9:.-]+", "-", stem).strip("-")


def to_latex(df: "pd.DataFrame", *, caption: str = "", label: str | None = None,
             floatfmt: FloatFmt = _DEFAULT_FLOATFMT, na_rep: str = "—") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); every cell and the caption escaped."""
    headers, body, numeric = _cells(df, floatfmt, na_rep)
    spec = "".join("r" if num else "l" for num in numeric) or "l"

    def line(cells: list[str]) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    out = ["% generated by ablate (ablate.tables); edit the code that makes it, not this file",
           r"\begin{table}[t]", r"\centering"]
    if caption:
        out.append(r"\caption{" + latex_escape(" ".join(caption.split())) + "}")
    if label:
        out.append(r"\label{" + label + "}")
    out += [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if headers:
        out.append(line(headers))
        out.append(r"\midrule")
    out += [line(r) for r in body]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Files


def _write_text(path: Path, text: str) -> None:
    """Write atomically (temp file + rename) with '\\n' line endings and UTF-8, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_table(df: "pd.DataFrame", stem: Union[str, os.PathLike], caption: str = "",
                floatfmt: FloatFmt = _DEFAULT_FLOATFMT, *, na_rep: str = "—") -> tuple[Path, Path]:
    """Write ``stem.md`` (Markdown) and ``stem.tex`` (LaTeX booktabs); returns both paths.

    ``floatfmt`` is a format spec for floats (``".4g"``, ``".2f"``) or a dict column → spec. A non-default index
    becomes leading columns. Missing values print as ``na_rep``. Deterministic: same frame → same bytes.
    """
    stem = Path(stem)
    md, tex = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".tex")
    _write_text(md, to_markdown(df, caption=caption, floatfmt=floatfmt, na_rep=na_rep))
    _write_text(tex, to_latex(df, caption=caption, label=_label(stem.name), floatfmt=floatfmt, na_rep=na_rep))
    return md, tex


# ---------------------------------------------------------------------------------------------------------------
# Figures


@contextlib.contextmanager
def plot_style(context: str = "paper", style: str = "whitegrid", font_scale: float = 1.0,
               **rc: Any) -> Iterator[None]:
    """Apply the ablate seaborn theme inside the block; global matplotlib settings are restored afterwards."""
    import seaborn as sns

    with matplotlib.rc_context():
        sns.set_theme(context=context, style=style, font_scale=font_scale, palette="colorblind")
        matplotlib.rcParams.update({"svg.hashsalt": SVG_HASHSALT, "figure.dpi": 100, "savefig.bbox": "tight",
                                    "figure.autolayout": False, **rc})
        yield


def savefig(fig: Any, stem: Union[str, os.PathLike], *, dpi: int = 200, close: bool = True) -> tuple[Path, Path]:
    """Save ``fig`` (a Figure, or anything with ``.figure`` such as a seaborn FacetGrid) as ``stem.png`` and
    ``stem.svg``, without timestamps and with fixed SVG ids, so re-running gives identical files."""
    figure = fig
    if not hasattr(figure, "canvas") and hasattr(figure, "figure"):  # FacetGrid / Axes -> its Figure
        figure = figure.figure
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASHSALT}):
        figure.savefig(png, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return png, svg
