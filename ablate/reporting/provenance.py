"""The provenance part of a report's index: one line per commit x machine, the warnings on dirty or unrecorded
trees, the environment table (``env.*``), input checksums and the link lists of tables and figures."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ablate.reporting.cross_run import cell_text, group_of
from ablate.reporting.pathfree import path_free

__all__ = ["ENV_ORDER", "dirty_word", "distinct", "env_section", "link_list", "md_table", "provenance_lines",
           "provenance_warnings", "sha256_of"]

ENV_ORDER = ("gpu", "gpu_count", "driver", "cuda", "cudnn", "hip", "cpu", "cpu_count", "hostname", "platform",
             "python", "torch", "triton", "flash_attn", "flash_attn_4", "xformers", "numpy", "pandas", "ablate",
             "git_commit", "git_dirty", "git_source")



def dirty_word(v: Any) -> str:
    """``env.git_dirty`` as ``yes`` / ``no`` / ``unknown`` (bools, or their spellings after a round trip)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) and v in (0, 1):
        return "yes" if v else "no"
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return "yes" if v.strip().lower() in ("true", "1", "yes") else "no"
    return "unknown"


def counted(values: list[str], order: Sequence[str] = ()) -> str:
    """``yes`` when all agree, else ``yes (3 rows), no (2 rows)`` (in ``order``, then alphabetically)."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{k} ({counts[k]} row{'s' if counts[k] != 1 else ''})" for k in keys)


def short_commit(commit: str) -> str:
    return f"`{commit[:10]}`" if commit else "no commit"


def provenance_lines(rows: list[dict[str, Any]], groups: list[dict[str, Any]], labelled: bool) -> list[str]:
    """One line per run group (commit x machine): commit, dirty yes/no/unknown, where the commit came from, rows."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {(g["commit"], g["machine"]): [] for g in groups}
    for r in rows:
        by[group_of(r)].append(r)
    lines = ["Provenance, one line per commit x machine (dirty: uncommitted changes outside results/, reports/ and "
             "runs/ when the rows were measured; source: where the commit was read -- the git checkout, "
             "$ABLATE_GIT_COMMIT or the wheel's build stamp):", ""]
    for g in groups:
        rs = by[(g["commit"], g["machine"])]
        commit = f"`{g['commit'][:10]}`" if g["commit"] else "**none recorded**"
        # without a commit, a dirty flag compares the tree with nothing (a fresh `git init` of a copied tree)
        dirty = counted([dirty_word(r.get("env.git_dirty")) if g["commit"] else "unknown" for r in rs],
                         ("yes", "no", "unknown"))
        if "yes" in dirty:
            dirty = f"**{dirty}**"
        source = counted([cell_text(r.get("env.git_source")) or "not recorded" for r in rs],
                          ("git", "env", "stamp", "not recorded"))
        label = f"{g['label']} · " if labelled else ""
        lines.append(f"- {label}{g['machine']}: commit {commit}, dirty: {dirty}, source: {source}, "
                     f"{len(rs)} row{'s' if len(rs) != 1 else ''}")
    return lines + [""]


def provenance_warnings(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[str]:
    """Warning lines for rows from a dirty tree, rows without a commit and rows with a commit but no dirty flag."""
    total = len(rows)
    # a row without a commit counts as "no recorded commit" only: its dirty flag compared the tree with nothing
    dirty = [r for r in rows if cell_text(r.get("env.git_commit")) and dirty_word(r.get("env.git_dirty")) == "yes"]
    no_commit = [r for r in rows if not cell_text(r.get("env.git_commit"))]
    unknown = [r for r in rows if cell_text(r.get("env.git_commit")) and dirty_word(r.get("env.git_dirty")) == "unknown"]
    order = {g["commit"]: i for i, g in reversed(list(enumerate(groups)))}  # oldest run group first

    def commits(rs: list[dict[str, Any]]) -> str:
        cs = sorted({cell_text(r.get("env.git_commit")) for r in rs}, key=lambda c: (c == "", order.get(c, 0), c))
        shown = [short_commit(c) for c in cs[:6]] + ([f"{len(cs) - 6} more"] if len(cs) > 6 else [])
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


def distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each entry once, in order: the provenance rows of ``read_inputs`` share one dict among the rows
    that differ only in their timestamp (a file of 47,000 rows holds a few hundred)."""
    return list({id(r): r for r in rows}.values())


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(s: str) -> str:
        return " ".join(str(s).split()).replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(":---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def env_section(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> list[str]:
    rows = distinct(rows)  # only the distinct values are shown: each shared entry once
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
            by[group_of(r)].append(r)
        cols = [by[(g["commit"], g["machine"])] for g in groups]
    table = []
    for k in keys:
        cells = []
        for col in cols:
            vals = sorted({path_free(t) for t in {cell_text(r.get("env." + k)) for r in col}} - {""})
            cells.append(", ".join(vals) if vals else "—")
        table.append([f"`{k}`"] + cells)
    return md_table(header, table) + [""]


def link_list(files: Iterable[Path], out: Path) -> list[str]:
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
