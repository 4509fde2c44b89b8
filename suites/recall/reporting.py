"""The recall report (no torch): the points table, the claims table, the figures and ``recall_index.md``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.reporting.tables import to_markdown, write_table
from ablate.store.atomic import write_text

from .aggregate import front_table, point_table, status_table
from .claims import recall_claims
from .constants import CONVERGENCE_RISE, CONVERGENCE_WINDOW, SOLVED, SUITE
from .figures import fig_accuracy, fig_distance, fig_memory

_SHOWN = ("attention", "window", "n_heads", "n_kv_heads", "d_model", "seq_len", "kv_pairs", "lr", "lrs tried", "seeds",
          "accuracy", "lo", "hi", "val accuracy", "state_bytes", "state", "params", "steps", "still improving")


def _setup(df: pd.DataFrame) -> list[str]:
    first = df.iloc[0]
    get = first.get
    return [f"- preset `{get('preset')}` on `{get('device')}`; vocabulary {get('vocab_size')}; "
            f"{get('n_layers')} layers, {get('n_heads')} head(s), position `{get('position')}`",
            f"- seeds: {df['seed'].nunique()}; training examples per model: {get('examples')} "
            f"({get('steps')} steps of {get('batch_size')}), fresh each step, none equal to a validation or test "
            f"example; validation {get('val_examples')} / test {get('test_examples')} examples per length",
            f"- decode state bytes at {get('state_el_bytes')} bytes per element, per sequence at seq_len"]


def report(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``recall_points``, ``recall_front`` and ``recall_claims`` (.md/.tex), ``recall_accuracy``, ``recall_memory`` and
    ``recall_distance`` (.png/.svg) and ``recall_index.md`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    if df.empty:
        return written
    pt = point_table(df)
    index = ["<!-- ablate:recall -->", "# Recall: multi-query associative recall (MQAR)", ""]
    ok = df[df["status"] == "ok"] if "status" in df.columns else df.iloc[0:0]
    if not ok.empty:
        index += ["## Setup", "", *_setup(ok), ""]
    if not pt.empty:
        shown = pt[[c for c in _SHOWN if c in pt.columns]]
        md, tex = write_table(shown, out_dir / "recall_points",
                              caption="MQAR test accuracy at the answer positions per point, at the learning rate "
                                      "with the best validation accuracy (of 'lrs tried'); lo/hi: 95% interval over "
                                      "seeds (widened to the pooled Wilson interval); state_bytes: decode state per "
                                      "sequence at seq_len; 'still improving': seeds whose validation accuracy "
                                      f"rose by more than {CONVERGENCE_RISE:g} over the last "
                                      f"{CONVERGENCE_WINDOW:.0%} of the run without reaching {SOLVED:g}.",
                              floatfmt={"accuracy": ".3f", "lo": ".3f", "hi": ".3f", "val accuracy": ".3f",
                                        "lr": ".2g", "state_bytes": ",.0f", "params": ",.0f", "steps": ".0f"})
        written += [md, tex]
        index += ["## Accuracy per point", "", md.read_text(encoding="utf-8"), ""]
        figs = fig_accuracy(pt, out_dir / "recall_accuracy")
        written += figs
        if figs:
            index += ["![accuracy vs d_model](recall_accuracy.png)", ""]
        figs = fig_memory(pt, out_dir / "recall_memory")
        written += figs
        front = front_table(pt)
        if figs or not front.empty:
            index += ["## Recall vs memory", "", "Accuracy against the decode state one sequence holds; the dashed "
                      "line joins the points no other point beats on both (Pareto front).", ""]
        if figs:
            index += ["![recall vs state bytes](recall_memory.png)", ""]
        if not front.empty:
            fmd, ftex = write_table(front, out_dir / "recall_front",
                                    caption="The recall-memory Pareto front per length: points no other point of "
                                            "the same length beats on both accuracy and decode state bytes.",
                                    floatfmt={"accuracy": ".3f", "lo": ".3f", "hi": ".3f", "state_bytes": ",.0f"})
            written += [fmd, ftex]
            index += ["Pareto front:", "", fmd.read_text(encoding="utf-8"), ""]
        figs = fig_distance(df, out_dir / "recall_distance")
        written += figs
        if figs:
            index += ["## Accuracy vs query distance", "", "Dotted: the window W; dashed: the stacked windows' "
                      "reach, layers x (W - 1).", "", "![accuracy vs distance](recall_distance.png)", ""]
    claims = recall_claims(df)
    cmd, ctex = write_table(claims, out_dir / "recall_claims",
                            caption="Published recall claims checked on these rows: reproduced / not reproduced / "
                                    "inconclusive / not testable (a point still improving, or the rung lacks the "
                                    "points the claim compares).")
    written += [cmd, ctex]
    index += ["## Claims", "", cmd.read_text(encoding="utf-8"), ""]
    bad = status_table(df)
    if not bad.empty:
        index += ["## Rows that did not run", "", to_markdown(bad), ""]
    idx = out_dir / "recall_index.md"
    write_text(idx, "\n".join(index) + "\n")
    written.append(idx)
    return written
