"""``ablate show RESULTS...``: the summary tables of results files, printed as Markdown.

The tables are the ones ``ablate report`` writes (each suite's ``report()``, through
:func:`ablate.plan.runner.report_rows`), made in a temporary folder and printed -- nothing is written beside the
results, and no table is computed twice in two places. No figure is made (:func:`ablate.reporting.tables.no_figures`:
the figure functions return at once), which was most of a report's time. The results are read once, streaming
(:func:`ablate.store.reader.iter_rows`): only the newest row of each measurement is kept, so memory follows the
measurements shown, not the size of the files.

By default each suite shows its summary tables (:data:`SUMMARY`): latency -- the fastest kernel per shape, position
hooks, training step, decode, prefill, streaming decode; extrapolation -- perplexity by length, effective length, the probe
accuracies; training -- the variant table. ``all_tables=True`` shows every table of the report (per-shape kernel
tables, TFLOP/s pivots, rows without a number, claims, findings). A suite without its own ``report()`` shows its
status counts. Each results file is listed first with its rows by status.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ablate.errors import ResultsFileError
from ablate.reporting.tables import no_figures
from ablate.store.frame import Kept
from ablate.store.parallel_read import read_into
from ablate.store.paths import PathLike, iter_files

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SUMMARY", "read", "summary_tables", "render"]

# Per suite, the report tables shown by default: a table file <stem>.md is shown when its stem is one of these or
# starts with one of these plus "_" (tables split per protocol / task carry a suffix).
SUMMARY: dict[str, tuple[str, ...]] = {
    "latency": ("latency_kernel_best", "latency_positions", "latency_train", "latency_decode", "latency_prefill",
                "latency_stream"),
    "extrapolation": ("extrapolation_ppl", "extrapolation_effective_length", "extrapolation_passkey",
                      "extrapolation_multikey"),
    "training": ("training_table",),
}


def _rank(suite: str, stem: str) -> int | None:
    """Position of table ``stem`` among ``suite``'s summary tables, or None when it is not one of them."""
    for i, name in enumerate(SUMMARY.get(suite, ())):
        if stem == name or stem.startswith(name + "_"):
            return i
    return None


def _is_index(path: Path) -> bool:
    return path.name == "index.md" or path.name.endswith("_index.md")


class _Reading:
    """What :func:`read` keeps, a row at a time; :meth:`merge` takes in another one's (rows read after this one's)."""

    def __init__(self) -> None:
        self.counts: dict[Path, dict[str, int]] = {}
        self.suites: dict[Path, set[str]] = {}
        self.kept = Kept()

    def add(self, f: Path, r: dict[str, Any]) -> None:
        c = self.counts.get(f)
        if c is None:
            c = self.counts[f] = {}
            self.suites[f] = set()
        st = str(r["status"])
        c[st] = c.get(st, 0) + 1
        self.suites[f].add(str(r["suite"]))
        self.kept.add(r)

    def merge(self, later: "_Reading") -> None:
        for f, o in later.counts.items():
            c = self.counts.setdefault(f, {})
            for st, n in o.items():
                c[st] = c.get(st, 0) + n
            self.suites.setdefault(f, set()).update(later.suites[f])
        self.kept.merge(later.kept)


def read(inputs: Sequence[PathLike]) -> tuple[list[str], "pd.DataFrame"]:
    """One streaming pass over ``inputs``: (a line per results file with its rows by status, the newest row of each
    measurement as a frame, as :func:`ablate.store.frame.to_frame` makes it). A large input is read in parts on
    every core (:func:`ablate.store.parallel_read.parallel_reduce`), to the same result."""
    files = iter_files(inputs)  # a missing path: one line
    got = read_into(files, _Reading)
    df = got.kept.frame()
    lines = []
    for f in files:
        c = got.counts.get(f, {})
        detail = ", ".join(f"{n} {s}" for s, n in sorted(c.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
        lines.append(f"{f}: {', '.join(sorted(got.suites.get(f, ()))) or 'no rows'}, {sum(c.values())} rows"
                     + (f" ({detail})" if detail else ""))
    return lines, df


def summary_tables(inputs: Sequence[PathLike], *, all_tables: bool = False,
                   frame: "pd.DataFrame | None" = None) -> list[tuple[str, str, str]]:
    """``(suite, title, markdown)`` of each table shown for ``inputs`` (files or folders), in display order;
    ``frame``: their rows, already read (:func:`read`)."""
    from ablate.plan.runner import report_rows

    df = read(inputs)[1] if frame is None else frame
    if df.empty:
        raise ResultsFileError(f"no result rows in {', '.join(str(p) for p in inputs)}")
    with tempfile.TemporaryDirectory(prefix="ablate-show-") as tmp:
        out = Path(tmp)
        try:
            with no_figures():
                written = report_rows(df, out)
        except Exception:  # a suite that needs its figures' files: make the report as `ablate report` does
            written = report_rows(df, out / "full")
            out = out / "full"
        shown: list[tuple[str, str, str]] = []
        for suite in sorted(written):
            tables = [f for f in written[suite] if f.suffix == ".md" and not _is_index(f) and f.exists()]
            ranked = []
            for order, f in enumerate(tables):
                stem = f.with_suffix("").relative_to(out).as_posix()
                rank = _rank(suite, f.stem) if suite in SUMMARY else 0
                if rank is None and not all_tables:
                    continue
                ranked.append((rank if rank is not None else len(SUMMARY.get(suite, ())), order, stem, f))
            for _, _, stem, f in sorted(ranked):
                title = stem[len(suite) + 1:] if stem.startswith(suite + "_") else stem
                shown.append((suite, title, f.read_text(encoding="utf-8").rstrip()))
    return shown


def render(inputs: Sequence[PathLike], *, all_tables: bool = False) -> str:
    """The text ``ablate show`` prints: one line per results file, then each table under a ``## suite: name``
    heading (Markdown)."""
    inputs = list(inputs)
    if not iter_files(inputs):  # a missing path: one line
        raise ResultsFileError(f"no results files (*.jsonl) in {', '.join(str(p) for p in inputs)}")
    lines, df = read(inputs)
    lines.append("")
    tables = summary_tables(inputs, all_tables=all_tables, frame=df)
    for suite, title, md in tables:
        lines += [f"## {suite}: {title}", "", md, ""]
    if not tables:
        lines += ["(no tables: no rows with a measured value)", ""]
    elif not all_tables:
        lines += ["More tables (per shape, status, claims): ablate show --all; tables and figures as files: "
                  "ablate report RESULTS --out DIR.", ""]
    return "\n".join(lines).rstrip() + "\n"
