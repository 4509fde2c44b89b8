"""The terminal summary ``ablate run`` prints after the suite: perplexity by length, effective length and probe
accuracy of this run's rows (rich tables; torch-free)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ablate.store.frame import summary_frame, to_frame

from .constants import PROBE_TASKS, SUITE
from .summary import protocol_groups, ppl_summary, protocol_line
from .tables import effective_table, ppl_table, probe_table


def print_summary(out: Path, cid: str, preset: str, elapsed: float, trained: int, tables: bool = True) -> None:
    console = Console()
    status = Console(stderr=True)  # status lines on stderr: stdout carries results only
    show = console.print if tables else (lambda *a, **k: None)  # tables: off under `ablate run`
    df = summary_frame(out)
    if df is None or "config_id" not in df.columns:
        return
    df = df[(df["config_id"] == cid) & (df["suite"] == SUITE)]
    summary = ppl_summary(df)
    if summary.empty:
        return
    for pdict, g in protocol_groups(summary):
        train_len = int(pdict.get("train_len") or g["eval_len"].min())
        wide = ppl_table(g, train_len)
        table = Table(title="extrapolation: perplexity by evaluation length", caption=protocol_line(pdict))
        for c in wide.columns:
            table.add_column(str(c), justify="left" if c == "variant" else "right")
        for _, r in wide.iterrows():
            table.add_row(*[("—" if v is None or (isinstance(v, float) and not math.isfinite(v))
                             else f"{v:.2f}" if isinstance(v, float) else str(v)) for v in r.tolist()])
        show(table)
        eff = effective_table(g, train_len)
        show("effective length (ppl within 10% of train_len): " + ", ".join(
            f"{r['variant']}={r['effective length'] or '—'}" for _, r in eff.iterrows()))
    try:
        allrows = to_frame(out)
        allrows = allrows[allrows["suite"] == SUITE]
    except Exception:
        allrows = None
    for task in PROBE_TASKS:
        if allrows is None or "metric" not in allrows.columns:
            break
        pk = allrows[(allrows["metric"] == f"{task}_acc") & (allrows["status"] == "ok")]
        if pk.empty:
            continue
        wide = probe_table(pk)
        seeds = int(pk["seed"].nunique()) if "seed" in pk else 1
        table = Table(title=f"{task} retrieval accuracy (over depths) [95% "
                            f"{'t-interval over seeds' if seeds >= 2 else 'Wilson interval'}]",
                      caption="last row: chance, from the generator")
        for c in wide.columns:
            table.add_column(str(c), justify="left" if c == "variant" else "right")
        for _, r in wide.iterrows():
            table.add_row(*[str(v) for v in r.tolist()])
        show(table)
    status.print(f"{len(df)} rows in {out}; trained {trained} model(s); {elapsed:.1f} s")
