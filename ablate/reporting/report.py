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

import hashlib
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ablate.store.atomic import write_text
from ablate.errors import ResultsFileError
from ablate.reporting.pathfree import path_free
from ablate.reporting.report_inputs import read_inputs
from ablate.store.paths import PathLike

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MARKER", "PRIMARY_METRICS", "FOLDER_SUITES", "Report", "build_report", "display_path",
           "report_command", "run_groups", "cross_run_tables", "cross_run_view", "report_units"]

MARKER = "<!-- ablate:report -->"
# The metric each suite's cross-run view follows (all lower-is-better except where METRICS says otherwise).
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {"latency": ("time_ms",), "extrapolation": ("ppl",),
                                               "training": ("val_loss",)}
# Suites whose report() makes its own sub-folders (training: <device>-<preset>/): all their results files are
# reported together into reports/<suite>/; every other suite maps results/<suite>/<name>.jsonl to
# reports/<suite>/<name>/.
FOLDER_SUITES = ("training",)
ENV_ORDER = ("gpu", "gpu_count", "driver", "cuda", "cudnn", "hip", "cpu", "cpu_count", "hostname", "platform",
             "python", "torch", "triton", "flash_attn", "flash_attn_4", "xformers", "numpy", "pandas", "ablate",
             "git_commit", "git_dirty", "git_source")


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


# ---------------------------------------------------------------------------------------------------------------
# Run groups (commit x machine)


def _s(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _machine(r: Mapping[str, Any]) -> str:
    host = _s(r.get("env.hostname")) or "?"
    hw = _s(r.get("env.gpu")) or _s(r.get("env.cpu")) or "?"
    return f"{host} ({hw})"


def run_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct (commit, machine) pairs of ``rows``, oldest first, each with a label ``r1``, ``r2`` ..."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (_s(r.get("env.git_commit")), _machine(r))
        g = groups.setdefault(key, {"commit": key[0], "machine": key[1], "first": None, "last": None, "rows": 0,
                                    "ok": 0, "suites": set(), "dirty": set(), "torch": set(), "gpu": set(),
                                    "cpu": set(), "runs": set()})
        ts = _s(r.get("timestamp"))
        if ts:
            g["first"] = ts if g["first"] is None else min(g["first"], ts)
            g["last"] = ts if g["last"] is None else max(g["last"], ts)
        g["rows"] += 1
        g["ok"] += r.get("status") == "ok"
        g["suites"].add(_s(r.get("suite")))
        g["dirty"].add(_s(r.get("env.git_dirty")))
        g["torch"].add(_s(r.get("env.torch")))
        g["gpu"].add(_s(r.get("env.gpu")))
        g["cpu"].add(_s(r.get("env.cpu")))
        g["runs"].add(_s(r.get("run_id")))
    out = sorted(groups.values(), key=lambda g: (g["first"] or "", g["commit"], g["machine"]))
    for i, g in enumerate(out, start=1):
        g["label"] = f"r{i}"
    return out


def _group_of(r: Mapping[str, Any]) -> tuple[str, str]:
    return (_s(r.get("env.git_commit")), _machine(r))


def _shared_runs(vals: Mapping[tuple[str, tuple], float], labels: Sequence[str]) -> tuple[list[str], set, list[str]]:
    """The runs a trend may compare and the configurations it compares them on: oldest first, each run joins while
    it measured some of the configurations every earlier run in the trend measured (the set shrinks to those);
    a run sharing none is left out. Returns (runs in the trend, their shared configurations, runs left out)."""
    measured = {lab: {i for (lab_, i) in vals if lab_ == lab} for lab in labels}
    present = [lab for lab in labels if measured[lab]]
    if not present:
        return [], set(), []
    runs, common, left_out = [present[0]], set(measured[present[0]]), []
    for lab in present[1:]:
        shared = common & measured[lab]
        if shared:
            runs.append(lab)
            common = shared
        else:
            left_out.append(lab)
    return runs, common, left_out


def cross_run_view(rows: list[dict[str, Any]], groups: list[dict[str, Any]]
                   ) -> tuple[dict[str, "pd.DataFrame"], list[str]]:
    """(tables, notes): ``runs``, ``summary`` and one ``<suite>_<metric>`` pivot per primary metric, compared only
    on matching configurations (the same :func:`ablate.regress.compare.identity`: suite, config id where rows have one, and
    every key field but the hardware name); a metric no two runs measured on a shared configuration gets no pivot
    and no trend, only a one-line note, and so does a run left out of a trend (see :func:`_shared_runs`)."""
    import pandas as pd

    from ablate.regress.compare import METRICS, describe, identity, metric_values

    label = {(g["commit"], g["machine"]): g["label"] for g in groups}
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    tables["runs"] = pd.DataFrame([{
        "run": g["label"], "commit": g["commit"][:10] or "—", "dirty": ", ".join(sorted(x for x in g["dirty"] if x))
        or "—", "machine": g["machine"], "torch": ", ".join(sorted(x for x in g["torch"] if x)) or "—",
        "first row (UTC)": (g["first"] or "—")[:19].replace("T", " "), "suites": ", ".join(sorted(g["suites"])),
        "rows": g["rows"], "ok": g["ok"]} for g in groups])
    # newest ok value per (group, identity, metric)
    values: dict[tuple[str, str], dict[tuple, tuple[str, float]]] = {}
    configs: dict[tuple, str] = {}
    for r in sorted(rows, key=lambda r: _s(r.get("timestamp"))):
        if r.get("status") != "ok":
            continue
        suite = _s(r.get("suite"))
        metrics = metric_values(r)
        for m in PRIMARY_METRICS.get(suite, ()):
            if m not in metrics:
                continue
            ident = identity(r)
            configs[ident] = describe(r)
            values.setdefault((suite, m), {})[(label[_group_of(r)], ident)] = metrics[m]
    summary_rows: list[dict[str, Any]] = []
    labels = [g["label"] for g in groups]
    for (suite, m), vals in sorted(values.items()):
        idents = sorted({i for _, i in vals}, key=lambda i: configs[i])
        runs, common, left_out = _shared_runs(vals, labels)
        if len(runs) < 2:
            notes.append(f"{suite} {m}: not compared across runs -- no configuration was measured by two runs "
                         f"(their configurations / config ids differ).")
            continue
        pivot = pd.DataFrame([{"configuration": configs[i], **{lab: vals.get((lab, i)) for lab in labels}}
                              for i in idents])
        pivot = pivot[["configuration"] + [lab for lab in labels if pivot[lab].notna().any()]]
        tables[f"{suite}_{m}"] = pivot
        if left_out:
            notes.append(f"{suite} {m}: {', '.join(left_out)} left out of the trend -- "
                         f"{'they share' if len(left_out) > 1 else 'it shares'} no configuration with "
                         f"{', '.join(runs)}.")
        ref = runs[0]
        for lab in runs:
            ratios = [vals[(lab, i)] / vals[(ref, i)] for i in sorted(common, key=lambda i: configs[i])
                      if vals[(ref, i)] > 0 and vals[(lab, i)] > 0]
            gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else None
            summary_rows.append({"suite": suite, "metric": m, "better": METRICS[m].better, "run": lab,
                                 "vs run": ref, "geomean vs oldest": gm, "configurations": len(ratios)})
    if summary_rows:
        tables["summary"] = pd.DataFrame(summary_rows)
    return tables, notes


def cross_run_tables(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> dict[str, "pd.DataFrame"]:
    """The tables of :func:`cross_run_view` (``runs``, ``summary``, ``<suite>_<metric>``)."""
    return cross_run_view(rows, groups)[0]


def _cross_run_figure(summary: "pd.DataFrame", stem: Path) -> list[Path]:
    """The trend: per suite metric, each run's geometric mean vs the oldest, over the configurations all the runs
    of that line measured (a line only where at least two runs share configurations)."""
    from ablate.reporting.style import styles
    from ablate.reporting.tables import plot_style, savefig
    from ablate.reporting.tables import pyplot as plt

    d = summary.dropna(subset=["geomean vs oldest"]).copy()
    if d.empty:
        return []
    d["series"] = d["suite"] + " " + d["metric"] + " (" + d["better"] + " is better; " + \
        d["configurations"].astype(int).astype(str) + " shared configurations)"
    series = [s for s in dict.fromkeys(d["series"]) if (d["series"] == s).sum() >= 2]
    if not series:
        return []
    runs = list(dict.fromkeys(summary["run"]))
    st = styles(series)
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for s in series:
            sub = d[d["series"] == s]
            ax.plot([runs.index(r) for r in sub["run"]], sub["geomean vs oldest"], color=st[s].color,
                    marker=st[s].marker, lw=1.5, label=s)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(runs)
        ax.axhline(1.0, color="0.4", lw=1, ls=":")
        ax.set_xlabel("run (oldest first; see cross_run_runs)")
        ax.set_ylabel("geometric mean vs oldest run")
        ax.set_title("Across commits / machines, on shared configurations")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return list(savefig(fig, stem))


# ---------------------------------------------------------------------------------------------------------------
# Index


def _dirty_word(v: Any) -> str:
    """``env.git_dirty`` as ``yes`` / ``no`` / ``unknown`` (bools, or their spellings after a round trip)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) and v in (0, 1):
        return "yes" if v else "no"
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return "yes" if v.strip().lower() in ("true", "1", "yes") else "no"
    return "unknown"


def _counted(values: list[str], order: Sequence[str] = ()) -> str:
    """``yes`` when all agree, else ``yes (3 rows), no (2 rows)`` (in ``order``, then alphabetically)."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{k} ({counts[k]} row{'s' if counts[k] != 1 else ''})" for k in keys)


def _short(commit: str) -> str:
    return f"`{commit[:10]}`" if commit else "no commit"


def _provenance_lines(rows: list[dict[str, Any]], groups: list[dict[str, Any]], labelled: bool) -> list[str]:
    """One line per run group (commit x machine): commit, dirty yes/no/unknown, where the commit came from, rows."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {(g["commit"], g["machine"]): [] for g in groups}
    for r in rows:
        by[_group_of(r)].append(r)
    lines = ["Provenance, one line per commit x machine (dirty: uncommitted changes outside results/, reports/ and "
             "runs/ when the rows were measured; source: where the commit was read -- the git checkout, "
             "$ABLATE_GIT_COMMIT or the wheel's build stamp):", ""]
    for g in groups:
        rs = by[(g["commit"], g["machine"])]
        commit = f"`{g['commit'][:10]}`" if g["commit"] else "**none recorded**"
        # without a commit, a dirty flag compares the tree with nothing (a fresh `git init` of a copied tree)
        dirty = _counted([_dirty_word(r.get("env.git_dirty")) if g["commit"] else "unknown" for r in rs],
                         ("yes", "no", "unknown"))
        if "yes" in dirty:
            dirty = f"**{dirty}**"
        source = _counted([_s(r.get("env.git_source")) or "not recorded" for r in rs],
                          ("git", "env", "stamp", "not recorded"))
        label = f"{g['label']} · " if labelled else ""
        lines.append(f"- {label}{g['machine']}: commit {commit}, dirty: {dirty}, source: {source}, "
                     f"{len(rs)} row{'s' if len(rs) != 1 else ''}")
    return lines + [""]


def _provenance_warnings(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[str]:
    """Warning lines for rows from a dirty tree, rows without a commit and rows with a commit but no dirty flag."""
    total = len(rows)
    # a row without a commit counts as "no recorded commit" only: its dirty flag compared the tree with nothing
    dirty = [r for r in rows if _s(r.get("env.git_commit")) and _dirty_word(r.get("env.git_dirty")) == "yes"]
    no_commit = [r for r in rows if not _s(r.get("env.git_commit"))]
    unknown = [r for r in rows if _s(r.get("env.git_commit")) and _dirty_word(r.get("env.git_dirty")) == "unknown"]
    order = {g["commit"]: i for i, g in reversed(list(enumerate(groups)))}  # oldest run group first

    def commits(rs: list[dict[str, Any]]) -> str:
        cs = sorted({_s(r.get("env.git_commit")) for r in rs}, key=lambda c: (c == "", order.get(c, 0), c))
        shown = [_short(c) for c in cs[:6]] + ([f"{len(cs) - 6} more"] if len(cs) > 6 else [])
        return f"commit{'s' if len(cs) > 1 else ''} {', '.join(shown)}"

    out = []
    if dirty:
        out += [f"> **Warning:** {len(dirty)} of {total} rows come from a dirty tree ({commits(dirty)}): they may not "
                "be reproducible from a commit.", ""]
    if no_commit:
        out += [f"> **Warning:** {len(no_commit)} of {total} rows have no recorded commit: they cannot be traced to "
                "the source that measured them.", ""]
    if unknown:
        out += [f"> **Warning:** {len(unknown)} of {total} rows do not record whether their tree was dirty "
                f"({commits(unknown)}).", ""]
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(s: str) -> str:
        return " ".join(str(s).split()).replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(":---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _env_section(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k[4:] for r in rows for k in r if k.startswith("env.")},
                  key=lambda k: (ENV_ORDER.index(k) if k in ENV_ORDER else len(ENV_ORDER), k))
    if not keys:
        return ["(the rows carry no env.* columns)", ""]
    if len(groups) <= 1:
        header = ["env", "value"]
        cols = [rows]
    else:
        header = ["env"] + [g["label"] for g in groups]
        by = {(g["commit"], g["machine"]): [] for g in groups}
        for r in rows:
            by[_group_of(r)].append(r)
        cols = [by[(g["commit"], g["machine"])] for g in groups]
    table = []
    for k in keys:
        cells = []
        for col in cols:
            vals = sorted({path_free(_s(r.get("env." + k))) for r in col} - {""})
            cells.append(", ".join(vals) if vals else "—")
        table.append([f"`{k}`"] + cells)
    return _md_table(header, table) + [""]


def _link_list(files: Iterable[Path], out: Path) -> list[str]:
    """Group files by stem: ``- name: [md](..) · [tex](..)``, figures as ``png · svg``."""
    stems: dict[str, list[Path]] = {}
    for f in files:
        rel = Path(os.path.relpath(f, out)).as_posix()
        stems.setdefault(rel.rsplit(".", 1)[0], []).append(Path(rel))
    lines = []
    order = {".md": 0, ".tex": 1, ".png": 2, ".svg": 3}
    for stem in sorted(stems):
        fs = sorted(stems[stem], key=lambda p: (order.get(p.suffix, 9), p.suffix))
        kind = "figure" if any(p.suffix in (".png", ".svg") for p in fs) else "table"
        links = " · ".join(f"[{p.suffix[1:]}]({p.as_posix()})" for p in fs)
        lines.append(f"- {kind} `{stem}`: {links}")
    return lines


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
    written = report_rows(df, out)
    rep = Report(out=out, index=index, files={k: list(v) for k, v in written.items()})

    groups = run_groups(raw)
    commits = {g["commit"] for g in groups}
    machines = {g["machine"] for g in groups}
    spans = len(commits) > 1 or len(machines) > 1
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
            rep.cross_run += _cross_run_figure(cross["summary"], out / "cross_run")

    # ---- index.md
    lines = [MARKER, "# ablate report", ""]
    lines += _provenance_warnings(raw, groups)
    lines += ["Regenerate this folder from the results alone (no re-running):", "", "```",
              command or report_command(inputs, out), "```", ""]
    cmds = list(data_commands) or sorted({path_free(_s(r.get(c))) for r in raw for c in ("command", "env.command")}
                                         - {""})
    lines += ["## Data", ""]
    if cmds:
        lines += ["Produced by:", "", "```", *cmds, "```", ""]
    else:
        runs = sorted({_s(r.get("run_id")) for r in raw} - {""})
        lines += [f"Produced by `ablate run` (run ids: {', '.join(f'`{x}`' for x in runs) or '—'}); the rows record "
                  "their full configuration in the `config.*` columns.", ""]
    frows = []
    for fs in got.files:
        suites = ", ".join(sorted(fs.suites - {""})) or "—"
        span = f"{fs.first[:19]} – {fs.last[:19]}".replace("T", " ") if fs.first else "—"
        st = ", ".join(f"{n} {k}" for k, n in sorted(fs.status.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
        frows.append([f"`{display_path(fs.path)}`", suites, str(fs.rows), st, span, f"`{_sha256(fs.path)[:16]}`"])
    lines += _md_table(["results file", "suite", "rows", "status", "rows from – to (UTC)", "sha256"], frows) + [""]
    if len(df) != len(raw):
        lines += [f"{len(raw) - len(df)} older row(s) re-measured later on the same machine are left out of the suite "
                  f"tables (the newest row per measurement is used); the cross-run view uses every row.", ""]

    lines += ["## Environment", ""]
    lines += _provenance_lines(raw, groups, labelled=spans)
    if spans:
        lines += ["Columns are the runs of the cross-run view (commit x machine, oldest first).", ""]
    lines += _env_section(raw, groups if spans else [])

    for suite in sorted(rep.files):
        fs = rep.files[suite]
        lines += [f"## {suite}", ""]
        own = [f for f in fs if f.name in (f"{suite}_index.md", "index.md") and f != index]
        for f in sorted(own, key=lambda p: p.as_posix()):
            rel = Path(os.path.relpath(f, out)).as_posix()
            lines.append(f"The suite's own index: [{rel}]({rel})")
        if own:
            lines.append("")
        lines += _link_list([f for f in fs if f not in own], out) + [""]
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
        lines += _link_list(rep.cross_run, out) + [""]
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
