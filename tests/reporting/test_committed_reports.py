"""The committed reports are what `ablate report` makes from the committed results, byte for byte.

For every committed ``results/<suite>/<name>.jsonl`` (``git ls-files``; a plain glob outside a git checkout), the
Markdown and LaTeX tables (index files included) of its report folder -- ``reports/<suite>/<name>/``, or
``reports/training/`` for the training files, see ``ablate.reporting.report.report_units`` -- must equal a fresh
``ablate report`` of those results: no stale, missing or hand-edited table. Figures are not compared (their pixels
depend on the matplotlib/freetype build).

The working tree is checked. When a results file has uncommitted changes (a sweep still appending rows) and its
report has not been regenerated yet, the committed versions (``HEAD``) of the results and the report are checked
instead, so the test proves what it promises about the commit without failing on work in progress.

The fresh report's pages, tables and figures (.md, .html, .tex, .svg) must also show no absolute path of a machine
(``/root/``, ``/home/``, ``/tmp/``, ``C:\\``, ...: :func:`abs_paths`).

When this fails: ``bash scripts/regenerate_reports.sh [results files]`` and commit the report folder.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from ablate.reporting.report import report_units

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "bash scripts/regenerate_reports.sh"
HAS_GIT = shutil.which("git") is not None and (ROOT / ".git").exists()


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True)


def committed_results() -> list[str]:
    if HAS_GIT:
        proc = _git("ls-files", "--", "results")
        if proc.returncode == 0:
            return [f for f in proc.stdout.decode().splitlines() if (ROOT / f).exists()]
    return [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "results").glob("*/*.jsonl"))]


UNITS = report_units(committed_results())


def _tables(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".md", ".tex")}


def _problems(root: Path, inputs: list[str], out: str, tmp: Path) -> str:
    """Differences between ``root/out`` and a fresh report of ``root/inputs`` ("" when equal)."""
    import os

    from ablate.reporting.report import build_report

    committed = root / out
    if not committed.is_dir():
        return f"{out}/ does not exist"
    cwd = Path.cwd()
    os.chdir(root)  # index.md shows paths relative to the repository root, as the script runs it
    try:
        fresh = tmp / "fresh"
        shutil.rmtree(fresh, ignore_errors=True)
        build_report([Path(f) for f in inputs], fresh, command=shlex.join(["ablate", "report", *inputs, "--out", out]))
    finally:
        os.chdir(cwd)
    want, got = _tables(fresh), _tables(committed)
    stale = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if not (stale or missing or changed):
        return ""
    return f"changed {changed[:6]}, missing {missing[:6]}, stale {stale[:6]}"


def _export_head(paths: list[str], dest: Path) -> bool:
    """Write the HEAD version of every tracked file under ``paths`` into ``dest``; False if any input is new."""
    proc = _git("ls-tree", "-r", "--name-only", "HEAD", "--", *paths)
    if proc.returncode != 0:
        return False
    names = proc.stdout.decode().splitlines()
    for name in names:
        blob = _git("show", f"HEAD:{name}")
        if blob.returncode != 0:
            return False
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
    return True


def _uncommitted(paths: list[str]) -> bool:
    return HAS_GIT and _git("diff", "--quiet", "HEAD", "--", *paths).returncode != 0


# An absolute path of a machine: POSIX roots a checkout, a home, a temp folder or an install lives under, or a drive.
ABS_PATH = re.compile(r"(?<![\w.~:/<-])/(?:root|home|tmp|Users|usr|var|opt|mnt|private|work|scratch|data|srv|nix)/"
                      r"|\b[A-Za-z]:\\\\?[A-Za-z]")


def abs_paths(folder: Path) -> list[str]:
    """``file: path`` for each absolute path in a generated page, table or figure (.md, .html, .tex, .svg)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".md", ".html", ".tex", ".svg"):
            for m in ABS_PATH.finditer(p.read_text(encoding="utf-8", errors="replace")):
                out.append(f"{p.relative_to(folder).as_posix()}: {m.string[m.start():m.start() + 60]!r}")
    return out


def test_the_path_scan_can_fail(tmp_path):
    (tmp_path / "a.md").write_text("data stdlib (/root/.pyenv/lib/python3.11); see </td> and nats/token\n")
    (tmp_path / "b.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><text>C:\\Users\\me</text></svg>')
    (tmp_path / "c.html").write_text("<p>runs/small ./x 1/2 https://example.org/home/x</p>")
    found = abs_paths(tmp_path)
    assert [f.split(":")[0] for f in found] == ["a.md", "b.svg"], found


@pytest.mark.parametrize("unit", UNITS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no committed results/<suite>/<name>.jsonl"))], ids=[u[1] for u in UNITS] or None)
def test_committed_tables_equal_a_fresh_report(unit, tmp_path):
    inputs, out = unit
    fix = f"run `{REGENERATE} {' '.join(inputs)}` and commit {out}/"
    problems = _problems(ROOT, inputs, out, tmp_path / "work")
    leaks = abs_paths(tmp_path / "work" / "fresh")  # pages, tables, figures: no machine path (see ablate.reporting.pathfree)
    assert not leaks, f"the report of {', '.join(inputs)} shows machine paths: {leaks[:5]}"
    if problems and _uncommitted(inputs):
        head = tmp_path / "head"
        if _export_head(inputs + [out], head) and all((head / f).exists() for f in inputs):
            head_problems = _problems(head, inputs, out, tmp_path / "headwork")
            if not head_problems:
                warnings.warn(f"{', '.join(inputs)} changed since the last commit and {out}/ is not regenerated "
                              f"yet (the committed versions agree); before committing, {fix}")
                return
            problems += f"; and at HEAD: {head_problems}"
    assert not problems, f"{out}/ is out of date with {', '.join(inputs)}: {problems}; {fix}"
