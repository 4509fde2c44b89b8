"""The cross-run view of a report: which (commit, machine) runs the rows come from and how each suite's primary
metric moved across them, on the configurations every compared run measured (tables and the ``cross_run`` figure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PRIMARY_METRICS", "cell_text", "cross_run_figure", "cross_run_tables", "cross_run_view", "group_of",
           "machine_of", "run_groups", "shared_runs"]

# The metric each suite's cross-run view follows (all lower-is-better except where METRICS says otherwise).
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {"latency": ("time_ms",), "extrapolation": ("ppl",),
                                               "training": ("val_loss",)}


def cell_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def machine_of(r: Mapping[str, Any]) -> str:
    host = cell_text(r.get("env.hostname")) or "?"
    hw = cell_text(r.get("env.gpu")) or cell_text(r.get("env.cpu")) or "?"
    return f"{host} ({hw})"


def run_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct (commit, machine) pairs of ``rows``, oldest first, each with a label ``r1``, ``r2`` ..."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    times: dict[int, list] = {}  # each distinct entry once, with how often it occurs (read_inputs shares entries)
    for r in rows:
        seen = times.get(id(r))
        if seen is None:
            times[id(r)] = [r, 1]
        else:
            seen[1] += 1
    for r, n in times.values():
        key = (cell_text(r.get("env.git_commit")), machine_of(r))
        g = groups.setdefault(key, {"commit": key[0], "machine": key[1], "first": None, "last": None, "rows": 0,
                                    "ok": 0, "suites": set(), "dirty": set(), "torch": set(), "gpu": set(),
                                    "cpu": set(), "runs": set()})
        ts = cell_text(r.get("timestamp"))
        if ts:
            g["first"] = ts if g["first"] is None else min(g["first"], ts)
            g["last"] = ts if g["last"] is None else max(g["last"], ts)
        g["rows"] += n
        g["ok"] += n * (r.get("status") == "ok")
        g["suites"].add(cell_text(r.get("suite")))
        g["dirty"].add(cell_text(r.get("env.git_dirty")))
        g["torch"].add(cell_text(r.get("env.torch")))
        g["gpu"].add(cell_text(r.get("env.gpu")))
        g["cpu"].add(cell_text(r.get("env.cpu")))
        g["runs"].add(cell_text(r.get("run_id")))
    out = sorted(groups.values(), key=lambda g: (g["first"] or "", g["commit"], g["machine"]))
    for i, g in enumerate(out, start=1):
        g["label"] = f"r{i}"
    return out


def group_of(r: Mapping[str, Any]) -> tuple[str, str]:
    return (cell_text(r.get("env.git_commit")), machine_of(r))


def shared_runs(vals: Mapping[tuple[str, tuple], float], labels: Sequence[str]) -> tuple[list[str], set, list[str]]:
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
    and no trend, only a one-line note, and so does a run left out of a trend (see :func:`shared_runs`)."""
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
    for r in sorted(rows, key=lambda r: cell_text(r.get("timestamp"))):
        if r.get("status") != "ok":
            continue
        suite = cell_text(r.get("suite"))
        metrics = metric_values(r)
        for m in PRIMARY_METRICS.get(suite, ()):
            if m not in metrics:
                continue
            ident = identity(r)
            configs[ident] = describe(r)
            values.setdefault((suite, m), {})[(label[group_of(r)], ident)] = metrics[m]
    summary_rows: list[dict[str, Any]] = []
    labels = [g["label"] for g in groups]
    for (suite, m), vals in sorted(values.items()):
        idents = sorted({i for _, i in vals}, key=lambda i: configs[i])
        runs, common, left_out = shared_runs(vals, labels)
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


def cross_run_figure(summary: "pd.DataFrame", stem: Path) -> list[Path]:
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
