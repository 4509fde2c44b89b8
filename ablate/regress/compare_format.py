"""Output of ``ablate compare`` (re-exported by :mod:`ablate.regress.compare`): the terminal table, Markdown, JSON and
github-action-benchmark data of a :class:`~ablate.regress.compare_rules.Comparison`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ablate.regress.compare_rules import CATEGORIES, Comparison, Entry
from ablate.errors import ConfigError
from ablate.store.results import PathLike


def num_text(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def change_text(e: Entry) -> str:
    if e.change_pct is None:
        return "—"
    return f"{e.change_pct:+.1f}%"


def band_text(b: tuple[float, float] | None) -> str:
    return "—" if b is None else f"{b[0]:.4g}–{b[1]:.4g}"


def table_rows(result: Comparison) -> list[dict[str, str]]:
    """One dict per entry, as strings (for the terminal table and Markdown)."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out = []
    for e in sorted(result.entries, key=lambda e: order[e.category]):
        out.append({"": e.category, "suite": e.suite, "configuration": e.config, "metric": e.metric,
                    "baseline": num_text(e.baseline), "new": num_text(e.new), "change": change_text(e),
                    "baseline p20–p80": band_text(e.baseline_band), "new p20–p80": band_text(e.new_band),
                    "rule": e.rule, "gated": "—" if e.gated is None else ("yes" if e.gated else "no"),
                    "noise rule": e.noise_rule, "note": e.note})
    return out


def metric_rows(result: Comparison) -> list[dict[str, str]]:
    """One dict per metric (those with a --fail-if first): gated or not, on how many rows, the fail-if expressions,
    the noise rule and why not gated (as strings, for the terminal table and Markdown)."""
    gates = sorted(result.metrics.values(), key=lambda g: (not g.fail_if, g.metric))
    out = []
    for g in gates:
        if g.fail_if:
            rows = (f"{g.gated_rows} gated" + (f", {g.reported_rows} reported only" if g.reported_rows else "")
                    + (f", {g.contended_rows} skipped-contended" if g.contended_rows else ""))
        else:
            rows = f"{g.unjudged_rows} not judged"
        out.append({"metric": g.metric, "gate": g.status, "rows": rows, "fail-if": ", ".join(g.fail_if) or "—",
                    "noise rule": g.noise_rule if g.fail_if else "—", "why not gated": g.why_text() or "—"})
    return out


def render_markdown(result: Comparison, title: str = "ablate compare") -> str:
    import pandas as pd

    from ablate.reporting.tables import to_markdown

    head = "**Regression**" if result.regressed else ("**FAIL**" if result.failed else "**No regression**")
    lines = [f"## {title}", "", head + ": " + result.summary().split(": ", 2)[-1], ""]
    if result.failed and not result.regressed:
        lines += [f"**Why it fails**: {result.fail_reason}", ""]
    rows = table_rows(result)
    for cat in CATEGORIES:
        sub = [r for r in rows if r[""] == cat]
        if not sub:
            continue
        df = pd.DataFrame(sub).drop(columns=["", "rule", "gated"])
        if cat in ("new", "missing"):
            df = df[["suite", "configuration", "metric", "baseline", "new", "note"]]
        elif cat == "reported":
            df = df[["suite", "configuration", "metric", "baseline", "new", "change", "note"]]
        elif cat == "skipped-contended":
            df = df[["suite", "configuration", "metric", "note"]]
        title_ = f"{cat} ({len(sub)})" if cat != "reported" else f"reported, not gated ({len(sub)})"
        lines += [f"### {title_}", "", to_markdown(df, na_rep="—").rstrip(), ""]
    mrows = metric_rows(result)
    if mrows:
        lines += ["### metrics: gated or reported only, and the noise rule", "",
                  to_markdown(pd.DataFrame(mrows), na_rep="—").rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(result: Comparison) -> str:
    data = {"regressed": result.regressed, "failed": result.failed, "fail_reason": result.fail_reason,
            "allow_missing": result.allow_missing, "summary": result.counts(),
            "fail_if": [asdict(f) for f in result.fail_if], "env_note": result.env_note,
            "baseline_env": [list(s) for s in result.baseline_env], "new_env": [list(s) for s in result.new_env],
            "metrics": [g.as_dict() for g in sorted(result.metrics.values(), key=lambda g: (not g.fail_if, g.metric))],
            "entries": [e.as_dict() for e in result.entries]}
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def github_benchmark_json(result: Comparison) -> dict[str, list[dict[str, Any]]]:
    """github-action-benchmark custom data: {"customSmallerIsBetter": [...], "customBiggerIsBetter": [...]}."""
    return result.github


def write_github_json(result: Comparison, folder: PathLike) -> list[Path]:
    """Write ``customSmallerIsBetter.json`` and ``customBiggerIsBetter.json`` (each a list of {name, unit, value,
    extra}) into ``folder``: the ``output-file-path`` of github-action-benchmark with ``tool`` of the same name."""
    folder = Path(folder)
    if folder.suffix == ".json":
        raise ConfigError(f"--github-json takes a folder (it writes customSmallerIsBetter.json and "
                          f"customBiggerIsBetter.json into it), got {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for tool, items in result.github.items():
        p = folder / f"{tool}.json"
        p.write_text(json.dumps(items, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        written.append(p)
    return written


def format_table(result: Comparison) -> str:
    """The human table (plain text, regressions first; the configuration last so long ones do not break the
    columns), then the summary line."""
    rows = table_rows(result)
    lines = []
    if rows:
        cols = ["", "suite", "metric", "baseline", "new", "change", "baseline p20–p80", "new p20–p80",
                "configuration", "noise rule", "note"]
        data = [[r[c] for c in cols] for r in rows]
        widths = [max(len(c), *(len(d[i]) for d in data)) for i, c in enumerate(cols)]
        numeric = {"baseline", "new", "change"}

        def line(cells: list[str]) -> str:
            out = [c.rjust(w) if cols[i] in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(out).rstrip()

        lines.append(line(cols))
        lines.append("  ".join("-" * w for w in widths))
        lines += [line(d) for d in data]
        lines.append("")
    mrows = metric_rows(result)
    if mrows:
        mcols = ["metric", "gate", "rows", "noise rule / why not gated"]
        mdata = [[m["metric"], m["gate"], m["rows"],
                  " | ".join(x for x in (m["noise rule"], m["why not gated"]) if x != "—")] for m in mrows]
        mw = [max(len(c), *(len(d[i]) for d in mdata)) for i, c in enumerate(mcols[:-1])]
        lines.append("metrics: " + "  ".join(c.ljust(w) for c, w in zip(mcols[:-1], mw)) + "  " + mcols[-1])
        lines += ["         " + "  ".join(c.ljust(w) for c, w in zip(d[:-1], mw)) + "  " + d[-1] for d in mdata]
        lines.append("")
    lines.append(result.summary())
    return "\n".join(lines) + "\n"


def print_table(result: Comparison, file: Any = None) -> None:

    (file or sys.stdout).write(format_table(result))
