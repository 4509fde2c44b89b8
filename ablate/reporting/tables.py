"""Paper-style outputs: Markdown + LaTeX (booktabs) tables and PNG + SVG figures, all deterministic.

Same input → byte-identical files, so committed reports only change in review when the numbers change.

    from ablate.reporting.tables import write_table, savefig, plot_style
    write_table(df, Path("reports/extrapolation/ppl"), caption="Perplexity by length")
    with plot_style():
        fig, ax = plt.subplots()
        ...
        savefig(fig, Path("reports/extrapolation/ppl"))
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import re
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar, Union

from ablate.reporting.figure_jobs import submit
from ablate.store.atomic import write_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["write_table", "to_markdown", "to_latex", "latex_escape", "fmt_sig", "savefig", "plot_style", "SVG_HASHSALT",
           "figure", "no_figures", "figures_on", "pyplot"]

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


def fmt_sig(x: float, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept (``2.730``, ``12.16``, ``0.004706``; whole
    numbers of more digits print whole: ``12346``), so text cells built from several numbers (``lo–hi``) have one
    precision down a column."""
    x = float(x)
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    text = format(x, f"#.{digits}g")
    mant, _, exp = text.partition("e")
    if exp and int(exp) > 0:
        return format(x, ".0f")
    return mant.rstrip(".") + (f"e{exp}" if exp else "")


def _prepare(df: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = [" / ".join(str(p) for p in col if str(p) != "") for col in df.columns]
    return df


def _columns(df: "pd.DataFrame", floatfmt: FloatFmt) -> tuple[list[str], list[list[Any]], list[bool], list[str]]:
    """Header, each column's values, whether each column is numeric (right-aligned) and its float format."""
    import pandas as pd

    df = _prepare(df)
    headers = [str(c) for c in df.columns]
    numeric, columns, fmts = [], [], []
    for pos, name in enumerate(df.columns):
        col = df.iloc[:, pos]
        fmt = floatfmt.get(str(name), _DEFAULT_FLOATFMT) if isinstance(floatfmt, Mapping) else floatfmt
        is_num = bool(pd.api.types.is_numeric_dtype(col.dtype)) and not pd.api.types.is_bool_dtype(col.dtype)
        if not is_num and col.dtype == object:  # object column of numbers and missing values
            vals = [v for v in col.tolist() if not _is_missing(v)]
            is_num = bool(vals) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)
        numeric.append(is_num)
        columns.append(col.tolist())
        fmts.append(fmt)
    return headers, columns, numeric, fmts


def _cells(df: "pd.DataFrame", floatfmt: FloatFmt, na_rep: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, body cells as strings, and whether each column is numeric (right-aligned)."""
    headers, columns, numeric, fmts = _columns(df, floatfmt)
    cells = [[_fmt_cell(v, fmt, na_rep) for v in col] for col, fmt in zip(columns, fmts)]
    body = [list(r) for r in zip(*cells)] if cells else []
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
    "≈": r"$\approx$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$",
}


_NUMBER_AFTER = re.compile(r"\.?\d")


def latex_escape(s: str) -> str:
    """Escape LaTeX special characters (``& % $ # _ { } ~ ^ \\ < >``) so the text prints literally; a minus sign
    (``-`` starting a number, not inside a word, or ``−``) prints as a real minus, ``$-$``, not a hyphen."""
    s = str(s)
    out = []
    for i, ch in enumerate(s):
        if ch == "−" or (ch == "-" and _NUMBER_AFTER.match(s, i + 1) and not (i and (s[i - 1].isalnum() or
                                                                                      s[i - 1] in "._-"))):
            out.append("$-$")
        else:
            out.append(_LATEX_SPECIALS.get(ch, ch))
    return "".join(out)


_G_SPEC = re.compile(r"(?P<sign>[+ ]?)(?P<group>,?)(?:\.(?P<prec>\d+))?[gGn]?")
_MAX_DECIMALS = 6


def _latex_column_format(values: list[Any], fmt: str) -> tuple[str, int | None]:
    """How a numeric column prints in LaTeX, one precision for the whole column: ``fmt`` itself unless it is a
    general (``g``) spec, whose trailing-zero trimming gives ``0.5`` next to ``0.4821``; then fixed decimals (the
    largest value keeps the spec's significant digits, integers none) when every value keeps at least two
    significant digits that way, else the spec's significant digits everywhere (trailing zeros kept).
    Returns (format spec, decimals or None)."""
    m = _G_SPEC.fullmatch(fmt)
    if not m:
        return fmt, None  # f / e / % / d specs: already one precision per column
    sign, group = m["sign"], m["group"]
    prec = max(1, int(m["prec"])) if m["prec"] else 6
    xs = [abs(float(v)) for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)
          and not _is_missing(v) and math.isfinite(float(v))]
    nonzero = [x for x in xs if x > 0]
    if not nonzero or all(float(x).is_integer() for x in xs) and max(xs) < 1e15:
        return f"{sign}{group}.0f", 0
    hi, lo = max(nonzero), min(nonzero)
    d = max(0, prec - 1 - math.floor(math.log10(hi)))
    if d <= _MAX_DECIMALS and lo >= 10.0 ** (1 - d) and hi < 1e15:
        return f"{sign}{group}.{d}f", d
    return f"{sign}#.{prec}g", None


def _latex_number(v: Any, spec: str, na_rep: str) -> str:
    """One numeric cell in LaTeX (``spec`` from :func:`_latex_column_format`, ``"d"`` for a column of integers):
    a real minus sign, ``$\\times10^{k}$`` instead of ``e+k``, ``$\\infty$``, no ``-0.00``."""
    if _is_missing(v):
        return latex_escape(na_rep)
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "yes" if bool(v) else "no"
    if not isinstance(v, numbers.Real):
        return latex_escape(_fmt_cell(v, spec, na_rep))
    f = float(v)
    if math.isinf(f):
        return r"$\infty$" if f > 0 else r"$-\infty$"
    if spec == "d":
        text = str(int(v))
    else:
        text = format(int(v) if isinstance(v, numbers.Integral) and spec.endswith("f") else f, spec)
    if "#" in spec:
        mant, _, exp = text.partition("e")
        if exp and 0 < int(exp) < 15:  # 1.235e+04 -> 12346: whole numbers stay plain
            text = format(f, spec.replace("#", "").rsplit(".", 1)[0] + ".0f")
        else:
            text = mant.rstrip(".") + (f"$\\times10^{{{int(exp)}}}$" if exp else "")
    if text.startswith("-"):
        digits = text[1:].split("$")[0]
        text = text[1:] if not digits.strip("0.,") else "$-$" + text[1:]  # -0.00 prints as 0.00
    return text


# A number written as text: ``623,104``, ``10.41 ± 0.40``, ``-3.2%``, ``×1.5``, ``+0.012``, ``1.2e-05``, ``12.3*``.
_NUM_TEXT = re.compile(r"[+\-−×x]?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?(?:\s*±\s*\d[\d,]*(?:\.\d+)?"
                       r"(?:[eE][+-]?\d+)?)?\s*(?:%|x|×)?[*†]*")


def _numeric_text(values: list[Any], na_rep: str) -> bool:
    """A text column every present cell of which is a number (``10.41 ± 0.40``, ``623,104``): right-aligned in
    LaTeX like a numeric column."""
    present = [str(v).strip() for v in values if not _is_missing(v) and str(v).strip() not in (na_rep, "—", "-", "")]
    return bool(present) and all(_NUM_TEXT.fullmatch(v) for v in present)


def _label(stem: str) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9:.-]+", "-", stem).strip("-")


def to_latex(df: "pd.DataFrame", *, caption: str = "", label: str | None = None,
             floatfmt: FloatFmt = _DEFAULT_FLOATFMT, na_rep: str = "—") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); every cell and the caption escaped.

    Numbers print with a real minus sign (``$-$``) and one precision per column (see :func:`_latex_column_format`:
    a ``g`` spec becomes fixed decimals, or significant digits with trailing zeros, for the whole column); text cells
    get a real minus where a number starts with ``-``. Numeric columns are right-aligned, and so are text columns of
    numbers (``10.41 ± 0.40``, ``623,104``; :func:`_numeric_text`).
    """
    headers, columns, numeric, fmts = _columns(df, floatfmt)
    spec = "".join("r" if num or _numeric_text(col, na_rep) else "l" for num, col in zip(numeric, columns)) or "l"
    cells = []
    for col, num, fmt in zip(columns, numeric, fmts):
        if num:
            present = [v for v in col if not _is_missing(v)]
            ints = bool(present) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present)
            cfmt = "d" if ints else _latex_column_format(col, fmt)[0]  # integers print whole, as in Markdown
            cells.append([_latex_number(v, cfmt, na_rep) for v in col])
        else:
            cells.append([latex_escape(_fmt_cell(v, fmt, na_rep)) for v in col])
    body = [list(r) for r in zip(*cells)] if cells else []

    def line(cells: list[str]) -> str:
        return " & ".join(cells) + r" \\"

    out = ["% generated by ablate (ablate.reporting.tables); edit the code that makes it, not this file",
           r"\begin{table}[t]", r"\centering"]
    if caption:
        out.append(r"\caption{" + latex_escape(" ".join(caption.split())) + "}")
    if label:
        out.append(r"\label{" + label + "}")
    out += [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if headers:
        out.append(line([latex_escape(h) for h in headers]))
        out.append(r"\midrule")
    out += [line(r) for r in body]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Files


_write_text = write_text  # atomic, UTF-8, '\n' line endings: readers never see half a file


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


def _matplotlib() -> Any:
    """matplotlib, imported at first use (``ablate show`` makes no figure and never imports it), with the headless
    backend chosen before pyplot is imported: CI and GPU boxes have no display; notebooks keep their own."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules and "IPython" not in sys.modules \
            and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    return matplotlib


class _Pyplot:
    """``matplotlib.pyplot``, imported at its first use (after :func:`_matplotlib` chose the backend)."""

    def __getattr__(self, name: str) -> Any:
        _matplotlib()
        import matplotlib.pyplot as plt

        return getattr(plt, name)


pyplot: Any = _Pyplot()  # ``from ablate.reporting.tables import pyplot as plt`` in the figure modules


@contextlib.contextmanager
def plot_style(context: str = "paper", style: str = "whitegrid", font_scale: float = 1.0,
               **rc: Any) -> Iterator[None]:
    """Apply the ablate seaborn theme inside the block; global matplotlib settings are restored afterwards."""
    matplotlib = _matplotlib()
    import seaborn as sns

    with matplotlib.rc_context():
        sns.set_theme(context=context, style=style, font_scale=font_scale, palette="colorblind")
        matplotlib.rcParams.update({"svg.hashsalt": SVG_HASHSALT, "figure.dpi": 100, "savefig.bbox": "tight",
                                    "figure.autolayout": False, **rc})
        yield


_FIGURES: ContextVar[bool] = ContextVar("ablate_figures", default=True)
_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def no_figures() -> Iterator[None]:
    """Within the block no figure is made: a function marked :func:`figure` returns ``[]`` without computing
    anything, and :func:`savefig` closes the figure and writes nothing (``ablate show``: the tables alone)."""
    token = _FIGURES.set(False)
    try:
        yield
    finally:
        _FIGURES.reset(token)


def figures_on() -> bool:
    """False within :func:`no_figures`."""
    return _FIGURES.get()


def figure(fn: _F) -> _F:
    """Mark a function that makes figure files and returns their paths (a list): within :func:`no_figures` it
    returns ``[]`` at once (the data it would plot is not even computed)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if _FIGURES.get() else []

    return wrapper  # type: ignore[return-value]


def savefig(fig: Any, stem: Union[str, os.PathLike], *, dpi: int = 200, close: bool = True) -> tuple[Path, Path]:
    """Save ``fig`` (a Figure, or anything with ``.figure`` such as a seaborn FacetGrid) as ``stem.png`` and
    ``stem.svg``, without timestamps and with fixed SVG ids, so re-running gives identical files (within
    :func:`no_figures`: close it, write nothing and return ``()``; within
    :func:`ablate.reporting.figure_jobs.parallel_figures`: a forked child writes them, the block's end waits)."""
    figure = fig
    if not _FIGURES.get():
        if not hasattr(figure, "canvas") and hasattr(figure, "figure"):
            figure = figure.figure
        import matplotlib.pyplot as plt

        plt.close(figure)
        return ()  # type: ignore[return-value]
    if not hasattr(figure, "canvas") and hasattr(figure, "figure"):  # FacetGrid / Axes -> its Figure
        figure = figure.figure
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")

    def save() -> None:
        with _matplotlib().rc_context({"svg.hashsalt": SVG_HASHSALT}):
            figure.savefig(png, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
            figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")

    if not submit(save, stem.name):  # within figure_jobs.parallel_figures: a forked child saves it
        save()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return png, svg
