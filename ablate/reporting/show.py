"""``ablate show RESULTS...``: the summary tables of results files, printed as Markdown.

The tables are the ones ``ablate report`` writes (each suite's ``report()``, through
:func:`ablate.plan.runner.report_rows`), made in a temporary folder and printed -- nothing is written beside the
results, and no table is computed twice in two places. Figures are skipped (``ablate.reporting.tables.savefig`` does nothing
while the tables are made), which is most of a report's time.

By default each suite shows its summary tables (:data:`SUMMARY`): latency -- the fastest kernel per shape, position
hooks, training step, decode, prefill; extrapolation -- perplexity by length, effective length, the probe
accuracies; training -- the variant table. ``all_tables=True`` shows every table of the report (per-shape kernel
tables, TFLOP/s pivots, rows without a number, claims, findings). A suite without its own ``report()`` shows its
status counts. Each results file is listed first with its rows by status.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from ablate.errors import ResultsFileError
from ablate.store.results import PathLike, iter_files, read_rows, to_frame

__all__ = ["SUMMARY", "summary_tables", "render"]

# Per suite, the report tables shown by default: a table file <stem>.md is shown when its stem is one of these or
# starts with one of these plus "_" (tables split per protocol / task carry a suffix).
SUMMARY: dict[str, tuple[str, ...]] = {
    "latency": ("latency_kernel_best", "latency_positions", "latency_train", "latency_decode", "latency_prefill"),
    "extrapolation": ("extrapolation_ppl", "extrapolation_effective_length", "extrapolation_passkey",
                      "extrapolation_multikey"),
    "training": ("training_table",),
}


@contextlib.contextmanager
def _no_figures() -> Iterator[None]:
    """Within the block, :func:`ablate.reporting.tables.savefig` closes the figure and writes nothing.

    The suites' figure modules import it by name (``from ablate.reporting.tables import savefig``), so it is swapped in every
    module holding it, after importing those modules: one first imported inside the block would otherwise keep the
    stand-in for good, and every later report in the process (``ablate run`` prints these tables, then a test or a
    notebook makes a report) would write no figure."""
    from ablate.reporting import tables

    def skip(fig: Any, stem: Any, **_: Any) -> tuple:
        import matplotlib.pyplot as plt

        figure = fig if hasattr(fig, "canvas") or not hasattr(fig, "figure") else fig.figure
        plt.close(figure)
        return ()

    real = tables.savefig
    for suite in SUMMARY:
        try:
            importlib.import_module(f"ablate.suites.{suite}.figures")
        except ImportError:
            pass  # no such module, or matplotlib missing: the report says so itself
    holders = [m for m in list(sys.modules.values()) if getattr(m, "__dict__", {}).get("savefig") is real]
    for m in holders:
        m.savefig = skip
    try:
        yield
    finally:
        for m in holders:
            m.savefig = real


def _rank(suite: str, stem: str) -> int | None:
    """Position of table ``stem`` among ``suite``'s summary tables, or None when it is not one of them."""
    for i, name in enumerate(SUMMARY.get(suite, ())):
        if stem == name or stem.startswith(name + "_"):
            return i
    return None


def _is_index(path: Path) -> bool:
    return path.name == "index.md" or path.name.endswith("_index.md")


def summary_tables(inputs: Sequence[PathLike], *, all_tables: bool = False) -> list[tuple[str, str, str]]:
    """``(suite, title, markdown)`` of each table shown for ``inputs`` (files or folders), in display order."""
    from ablate.plan.runner import report_rows

    df = to_frame(inputs)
    if df.empty:
        raise ResultsFileError(f"no result rows in {', '.join(str(p) for p in inputs)}")
    with tempfile.TemporaryDirectory(prefix="ablate-show-") as tmp:
        out = Path(tmp)
        try:
            with _no_figures():
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


def _status_line(path: Path) -> str:
    rows = read_rows(path)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    suites = ", ".join(sorted({str(r.get("suite")) for r in rows})) or "no rows"
    return f"{path}: {suites}, {len(rows)} rows" + (f" ({detail})" if detail else "")


def render(inputs: Sequence[PathLike], *, all_tables: bool = False) -> str:
    """The text ``ablate show`` prints: one line per results file, then each table under a ``## suite: name``
    heading (Markdown)."""
    inputs = list(inputs)
    files = iter_files(inputs)  # a missing path: one line
    if not files:
        raise ResultsFileError(f"no results files (*.jsonl) in {', '.join(str(p) for p in inputs)}")
    lines = [_status_line(f) for f in files] + [""]
    tables = summary_tables(inputs, all_tables=all_tables)
    for suite, title, md in tables:
        lines += [f"## {suite}: {title}", "", md, ""]
    if not tables:
        lines += ["(no tables: no rows with a measured value)", ""]
    elif not all_tables:
        lines += ["More tables (per shape, status, claims): ablate show --all; tables and figures as files: "
                  "ablate report RESULTS --out DIR.", ""]
    return "\n".join(lines).rstrip() + "\n"
