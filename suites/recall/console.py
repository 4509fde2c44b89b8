"""The terminal summary of a recall run (no torch): accuracy per point at its chosen learning rate."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ablate.store.frame import summary_frame

from .aggregate import point_table
from .constants import SUITE


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_summary(out: Path, elapsed: float, ran: int, left: int, limit: float, tables: bool = True) -> None:
    console = Console(width=None if Console().is_terminal else 140)
    df = summary_frame(out)
    if tables and df is not None and "suite" in df.columns:
        pt = point_table(df[df["suite"] == SUITE])
        if not pt.empty:
            table = Table(title="recall: MQAR test accuracy at the chosen learning rate (95% interval over seeds)")
            cols = ("attention", "window", "d_model", "seq_len", "kv_pairs", "lr", "seeds", "accuracy", "lo", "hi",
                    "state_bytes", "still improving")
            for c in cols:
                table.add_column(c, justify="left" if c == "attention" else "right")
            for _, r in pt.iterrows():
                table.add_row(*[_cell(r.get(c)) for c in cols])
            console.print(table)
    console.print(f"trained {ran} model(s) in {elapsed:.1f} s; results: {out}")
    if left:
        console.print(f"[yellow]time_limit_s={limit:g} reached: {left} run(s) left; re-run the same command to "
                      f"resume[/]")
