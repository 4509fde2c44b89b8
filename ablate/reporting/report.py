"""``ablate report RESULTS... --out DIR``: every table and figure, from JSONL alone, for one or many result files.

* Each suite present gets its own tables (Markdown + LaTeX booktabs) and figures (PNG + SVG) from its
  ``report(rows, out_dir)`` (see :func:`ablate.plan.runner.report_rows`); a suite's own index is then
  ``<suite>_index.md`` (training writes into ``<device>-<preset>/`` folders with their own ``index.md``).
* ``DIR/index.md`` links all of them, with the environment fingerprint (``env.*``) of the rows, the inputs (path,
  rows, sha256, run ids, time span), the exact command that regenerates the folder and, when recorded, the commands
  that produced the data. Its Environment section opens with one provenance line per commit x machine (commit,
  dirty yes/no/unknown, ``env.git_source``, rows), and a warning under the title counts the rows from a dirty tree,
  the rows without a recorded commit and the rows that do not say whether their tree was dirty.
* When the inputs span several commits or machines (several nights, several GPUs), a cross-run view is added:
  ``cross_run_runs`` (one line per commit x machine), ``cross_run_summary`` (geometric-mean ratio of each suite's
  primary metric against the oldest run, over the configurations -- same configuration, same config id -- every run
  of the trend measured), one ``cross_run_<suite>_<metric>`` table per primary metric (configurations x runs) and
  the ``cross_run`` figure. Runs that share no configuration are not compared: the index says so in one line.
* ``DIR/index.html`` (and ``SUB/index.html`` next to a suite's ``SUB/index.md``) is the same folder as one
  self-contained page: claims first, every table, every figure embedded, the provenance; ``python -m ablate.reporting.report
  index reports`` writes the root page linking them all (:mod:`ablate.reporting.html_report`).

Deterministic: the same inputs give byte-identical tables and index (nothing in them depends on the clock or on
the output folder); figures use :func:`ablate.reporting.tables.savefig` (no timestamps, fixed SVG ids).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ablate.store.atomic import write_text
from ablate.errors import ResultsFileError
from ablate.reporting.figure_jobs import parallel_figures
from ablate.reporting.cross_run import (PRIMARY_METRICS, cell_text, cross_run_figure, cross_run_tables,
                                        cross_run_view, run_groups)
from ablate.reporting.pathfree import path_free
from ablate.reporting.provenance import (distinct, env_section, link_list, md_table, provenance_lines,
                                         provenance_warnings, sha256_of)
from ablate.reporting.report_inputs import read_inputs
from ablate.store.paths import PathLike

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MARKER", "PRIMARY_METRICS", "FOLDER_SUITES", "Report", "build_report", "display_path",
           "report_command", "run_groups", "cross_run_tables", "cross_run_view", "report_units"]

MARKER = "<!-- ablate:report -->"
# Suites whose report() makes its own sub-folders (training: <device>-<preset>/): all their results files are
# reported together into reports/<suite>/; every other suite maps results/<suite>/<name>.jsonl to
# reports/<suite>/<name>/.
FOLDER_SUITES = ("training",)


@dataclass
class Report:
    out: Path
    index: Path
    files: dict[str, list[Path]] = field(default_factory=dict)  # per suite
    cross_run: list[Path] = field(default_factory=list)
    html: list[Path] = field(default_factory=list)  # index.html pages (ablate.reporting.html_report)

    def all_files(self) -> list[Path]:
        return [f for fs in self.files.values() for f in fs] + self.cross_run + [self.index] + self.html


# ---------------------------------------------------------------------------------------------------------------
# Commands and paths


def display_path(p: PathLike, cwd: Path | None = None) -> str:
    """``p`` relative to the working directory when it lies below it (so the command reads the same anywhere)."""
    path = Path(p)
    cwd = (cwd or Path.cwd()).resolve()
    try:
        rel = path.resolve().relative_to(cwd)
        return rel.as_posix() or "."
    except ValueError:
        return path.as_posix()


def report_command(inputs: Sequence[PathLike], out: PathLike) -> str:
    """The canonical ``ablate report`` command for these inputs and output folder."""
    return shlex.join(["ablate", "report", *[display_path(p) for p in inputs], "--out", display_path(out)])


_write = write_text  # atomic (ablate.store.atomic)


def build_report(inputs: Sequence[PathLike], out: PathLike, *, command: str | None = None,
                 data_commands: Sequence[str] = ()) -> Report:
    """Write every suite's tables and figures for the rows in ``inputs`` (files or folders) into ``out``, plus the
    cross-run view when the rows span several commits or machines, and ``out/index.md`` linking them.

    ``command`` is shown as the command that regenerates the folder (default: :func:`report_command`);
    ``data_commands`` are the commands that produced the results (e.g. from ``ablate nightly``), shown as given.
    """
    from ablate.plan.runner import check_out_dir, report_rows

    inputs = list(inputs)
    out = check_out_dir(out)  # empty, a file, unwritable: one line before anything is read or written
    got = read_inputs(inputs)  # one streaming pass; a missing path or an invalid row: one line
    raw = got.index_rows  # the provenance columns of every row (ablate.reporting.report_inputs)
    if not raw:
        raise ResultsFileError(f"no result rows in {', '.join(str(p) for p in inputs)}")
    df = got.frame
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.md"
    # Claim index.md first: the suites then write their own index as <suite>_index.md next to it.
    _write(index, MARKER + "\n")
    with parallel_figures():  # the figures' files are written by forked children, all done after the block
        written = report_rows(df, out)
        # while the last children save their figures: the parts of index.md that need no figure
        groups = run_groups(raw)
        commits = {g["commit"] for g in groups}
        machines = {g["machine"] for g in groups}
        spans = len(commits) > 1 or len(machines) > 1
        warnings = provenance_warnings(raw, groups)
        cmds = list(data_commands) or sorted({path_free(t) for t in {cell_text(r.get(c)) for r in distinct(raw)
                                                                      for c in ("command", "env.command")}} - {""})
        checksums = {fs.path: sha256_of(fs.path) for fs in got.files}
        env_lines = provenance_lines(raw, groups, labelled=spans)
        if spans:
            env_lines += ["Columns are the runs of the cross-run view (commit x machine, oldest first).", ""]
        env_lines += env_section(raw, groups if spans else [])
    rep = Report(out=out, index=index, files={k: list(v) for k, v in written.items()})

    cross: dict[str, Any] = {}
    cross_notes: list[str] = []
    if spans:
        from ablate.reporting.tables import write_table

        cross, cross_notes = cross_run_view(got.cross_rows, groups)
        captions = {"runs": "Runs in these results: one per commit x machine, oldest first.",
                    "summary": "Geometric mean, over the configurations every run of the trend measured (same "
                               "configuration and config id), of each run's primary metric divided by the oldest "
                               "run's (1 = unchanged; below 1 is faster / lower)."}
        for name, t in cross.items():
            cap = captions.get(name) or (f"{name.split('_', 1)[1]} by configuration and run "
                                         f"({name.split('_', 1)[0]}; runs as in cross_run_runs).")
            rep.cross_run += list(write_table(t, out / f"cross_run_{name}", caption=cap, floatfmt=".4g"))
        if "summary" in cross:
            rep.cross_run += cross_run_figure(cross["summary"], out / "cross_run")

    # ---- index.md
    lines = [MARKER, "# ablate report", ""]
    lines += warnings
    lines += ["Regenerate this folder from the results alone (no re-running):", "", "```",
              command or report_command(inputs, out), "```", ""]
    lines += ["## Data", ""]
    if cmds:
        lines += ["Produced by:", "", "```", *cmds, "```", ""]
    else:
        runs = sorted({cell_text(r.get("run_id")) for r in distinct(raw)} - {""})
        lines += [f"Produced by `ablate run` (run ids: {', '.join(f'`{x}`' for x in runs) or '—'}); the rows record "
                  "their full configuration in the `config.*` columns.", ""]
    frows = []
    for fs in got.files:
        suites = ", ".join(sorted(fs.suites - {""})) or "—"
        span = f"{fs.first[:19]} – {fs.last[:19]}".replace("T", " ") if fs.first else "—"
        st = ", ".join(f"{n} {k}" for k, n in sorted(fs.status.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
        frows.append([f"`{display_path(fs.path)}`", suites, str(fs.rows), st, span, f"`{checksums[fs.path][:16]}`"])
    lines += md_table(["results file", "suite", "rows", "status", "rows from – to (UTC)", "sha256"], frows) + [""]
    if len(df) != len(raw):
        lines += [f"{len(raw) - len(df)} older row(s) re-measured later on the same machine are left out of the suite "
                  f"tables (the newest row per measurement is used); the cross-run view uses every row.", ""]

    lines += ["## Environment", ""]
    lines += env_lines

    for suite in sorted(rep.files):
        fs = rep.files[suite]
        lines += [f"## {suite}", ""]
        own = [f for f in fs if f.name in (f"{suite}_index.md", "index.md") and f != index]
        for f in sorted(own, key=lambda p: p.as_posix()):
            rel = Path(os.path.relpath(f, out)).as_posix()
            lines.append(f"The suite's own index: [{rel}]({rel})")
        if own:
            lines.append("")
        lines += link_list([f for f in fs if f not in own], out) + [""]
    if spans:
        lines += ["## Across runs", "",
                  f"These results span {len(commits)} commit(s) and {len(machines)} machine(s).", ""]
        if "runs" in cross:
            from ablate.reporting.tables import to_markdown

            lines += [to_markdown(cross["runs"]).rstrip(), ""]
        if "summary" in cross:
            from ablate.reporting.tables import to_markdown

            lines += [to_markdown(cross["summary"], floatfmt=".4g").rstrip(), ""]
            if (out / "cross_run.png").exists():
                lines += ["![across runs](cross_run.png)", ""]
        if cross_notes:
            lines += [f"- {n}" for n in cross_notes] + [""]
        lines += link_list(rep.cross_run, out) + [""]
    _write(index, "\n".join(lines).rstrip() + "\n")
    # ---- index.html: the same folder as one self-contained page (and one per suite sub-folder index.md)
    from ablate.reporting.html_report import write_pages

    rep.html = write_pages(out)
    return rep


# ---------------------------------------------------------------------------------------------------------------
# The committed layout: results/ -> reports/ (scripts/regenerate_reports.sh, tests/reporting/test_committed_reports.py)


def report_units(files: Iterable[str]) -> list[tuple[list[str], str]]:
    """(inputs, output folder) for committed results files given as ``results/<suite>/<name>.jsonl``.

    ``results/<suite>/<name>.jsonl`` → ``reports/<suite>/<name>/``, except for :data:`FOLDER_SUITES` (training),
    whose files are reported together into ``reports/<suite>/`` (the suite's report makes the sub-folders).
    Anything else (``results/baselines/``, deeper paths, unknown suites) is left out.
    """
    from ablate.plan.runner import SUITES

    units: dict[str, list[str]] = {}
    for f in sorted({Path(f).as_posix().removeprefix("./") for f in files}):
        parts = f.split("/")
        if len(parts) != 3 or parts[0] != "results" or parts[1] not in SUITES or not parts[2].endswith(".jsonl"):
            continue
        suite, name = parts[1], parts[2][: -len(".jsonl")]
        out = f"reports/{suite}" if suite in FOLDER_SUITES else f"reports/{suite}/{name}"
        units.setdefault(out, []).append(f)
    return [(inputs, out) for out, inputs in sorted(units.items())]


def _main(argv: Sequence[str]) -> int:
    """``python -m ablate.reporting.report units [FILES...]``: one line per report folder, ``OUT<TAB>INPUT...``;
    ``index [ROOT]`` / ``html DIR...``: the HTML pages (:mod:`ablate.reporting.html_index`)."""
    args = list(argv)
    if args and args[0] in ("index", "html"):
        from ablate.reporting.html_index import main as html_main

        return html_main(args)
    if not args or args[0] != "units":
        sys.stderr.write("usage: python -m ablate.reporting.report units [results/<suite>/<name>.jsonl ...]\n"
                         "       python -m ablate.reporting.report index [ROOT]   (ROOT/index.html linking every report page)\n"
                         "       python -m ablate.reporting.report html DIR...    (rewrite the index.html of report folders)\n")
        return 2
    files = args[1:] or [p.as_posix() for p in sorted(Path("results").glob("*/*.jsonl"))]
    for inputs, out in report_units(files):
        sys.stdout.write("\t".join([out, *inputs]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
