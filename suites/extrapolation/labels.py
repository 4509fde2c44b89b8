"""Which series a row belongs to, torch-free (the report side): a position variant alone does not say it any more.

A ``rope_*`` scaling is scored with the ideal scale (``s = eval_len / train_len`` at every length), with fixed
scales (``eval.rope_scales``: one ``s`` at every length, as deployed), and after fine-tuning at ``s · train_len``
(``finetune.*``). Rows of one position variant from different protocols must not be averaged together: group by
:func:`series` (or by :data:`SERIES_FIELDS`), never by ``position`` alone.

    series({"position": "rope_pi"})                                            -> "rope_pi"
    series({"position": "rope_pi", "rope_scale_mode": "fixed", "rope_scale": 4.0})  -> "rope_pi s=4"
    series({..., "finetune_steps": 50, "finetune_len": 256})                   -> "rope_pi s=4 ft50@256"
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["SERIES_FIELDS", "series", "relabel", "fine_tuned", "scale_mode"]

# The key fields that, with ``position``, tell the series apart (absent on rows that predate them).
SERIES_FIELDS = ("position", "rope_scale_mode", "finetune_steps", "finetune_len")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def fine_tuned(row: Mapping[str, Any]) -> bool:
    """Whether the row's model went through the fine-tuning stage (``finetune_steps`` > 0)."""
    return (_num(row.get("finetune_steps")) or 0) > 0


def scale_mode(row: Mapping[str, Any]) -> str | None:
    """``"ideal"``, ``"fixed"``, ``"dynamic"`` or None (a trained variant, or a row from before the field; those
    scored every static scaling at the ideal scale)."""
    mode = row.get("rope_scale_mode")
    return str(mode) if isinstance(mode, str) and mode else None


def series(row: Mapping[str, Any]) -> str:
    """The row's series label: the position, plus ``s=<s>`` at a fixed scale and ``ft<steps>@<len>`` when
    fine-tuned. The ideal and dynamic scales keep the bare key (what every earlier report showed). Idempotent: a
    row whose position already carries its label keeps it."""
    pos = str(row.get("position"))
    mode = scale_mode(row)
    suffix = ""
    s = _num(row.get("rope_scale"))
    if mode == "fixed" and s is not None:
        suffix += f" s={s:g}"
    if fine_tuned(row):
        steps = int(_num(row.get("finetune_steps")) or 0)
        length = _num(row.get("finetune_len"))
        suffix += f" ft{steps}" + (f"@{int(length)}" if length is not None else "")
    return pos if not suffix or pos.endswith(suffix) else pos + suffix


def relabel(df):
    """``df`` (a pandas frame of rows) with ``position`` replaced by :func:`series` where a row has a fixed scale or
    a fine-tuning, so that every grouping by position keeps the protocols apart; unchanged otherwise."""
    if not len(df) or not ({"rope_scale_mode", "finetune_steps"} & set(df.columns)):
        return df
    cols = [c for c in (*SERIES_FIELDS, "rope_scale") if c in df.columns]  # what series() reads, not every column
    labels = [series(r) for r in df[cols].to_dict("records")]
    if labels == df["position"].astype(str).tolist():
        return df
    return df.assign(position=labels)
