"""The report's tables, torch-free: perplexity by length, effective length and probe accuracy, one row per variant
(the ``rope_*`` scalings after the trained variants)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .summary import is_number, variant_order, effective_length, probe_summary


def _cell(mean: float, ci: float, n: int, status: str) -> Any:
    if n == 0:
        return None if status == "unsupported" else status  # None prints as "—"
    if np.isfinite(ci):
        return f"{mean:.2f} ± {ci:.2f}"
    return round(mean, 2)


def ppl_table(summary, train_len: int, flags: dict[str, float] | None = None):
    """Wide table: rows = variants (incl. rope_* scalings), parameters, columns = eval lengths, cells = ppl [± 95%
    CI over seeds]; ``flags`` (from :func:`undertrained`) mark weak baselines."""
    flags = flags or {}
    lens = sorted(summary["eval_len"].unique())
    first: dict[tuple, int] = {}  # (variant, length) -> its first row in the summary
    for i, cell in enumerate(zip(summary["position"].tolist(), summary["eval_len"].tolist())):
        first.setdefault(cell, i)
    mean, ci, n, status = (summary[c].to_numpy() for c in ("mean", "ci", "n", "status"))
    out = []
    for pos in variant_order(summary):
        s = summary[summary["position"] == pos]
        params = next((int(v) for v in s["params"].tolist() if is_number(v)), None) if "params" in s else None
        row: dict[str, Any] = {"variant": pos, "params": f"{params:,}" if params is not None else None}
        for L in lens:
            i = first.get((pos, L))
            key = f"{L}" + (" (train)" if L == train_len else f" ({L // train_len}x)")
            row[key] = _cell(mean[i], ci[i], int(n[i]), status[i]) if i is not None else None
        trained = str(s["trained"].iloc[0]) if "trained" in s and len(s) else pos
        row["note"] = f"undertrained (×{flags[trained]:.2f} the best at train_len)" if trained in flags else ""
        out.append(row)
    df = pd.DataFrame(out)
    if not df["note"].astype(bool).any():
        df = df.drop(columns=["note"])
    if df["params"].isna().all():
        df = df.drop(columns=["params"])
    return df


def effective_table(summary, train_len: int):
    out = []
    for pos in variant_order(summary):
        s = summary[summary["position"] == pos].sort_values("eval_len")
        pairs = [(int(L), m) for L, m in zip(s["eval_len"], s["mean"])]
        eff = effective_length(pairs, train_len)
        ref = dict(pairs).get(train_len, float("nan"))
        ok = [(L, m) for L, m in pairs if np.isfinite(m)]
        longest = ok[-1] if ok else (None, float("nan"))
        out.append({"variant": pos, "ppl at train_len": round(ref, 3) if np.isfinite(ref) else None,
                    "effective length": eff, "x train_len": (eff / train_len) if eff else None,
                    "longest measured": longest[0],
                    "ppl there": round(longest[1], 3) if np.isfinite(longest[1]) else None,
                    "ratio to train_len": round(longest[1] / ref, 3) if np.isfinite(longest[1]) and
                    np.isfinite(ref) and ref > 0 else None})
    return pd.DataFrame(out)


def probe_table(pk, summ=None):
    """Wide table: variants x eval lengths, cells ``acc [lo, hi]`` (pooled over depths; 95% interval clustered by
    seed, :func:`probe_summary`), and a last row ``chance``: the chance level at each length, computed by the
    generator (the mean over depths of the per-depth chance the rows carry). ``summ``: ``probe_summary(pk)``,
    when the caller has it already."""
    summ = probe_summary(pk) if summ is None else summ
    lens = sorted(summ["eval_len"].unique())
    out = []
    for pos in variant_order(summ):
        s = summ[summ["position"] == pos]
        row: dict[str, Any] = {"variant": pos}
        for L in lens:
            c = s[s["eval_len"] == L]
            row[str(int(L))] = (f"{c['acc'].iloc[0]:.2f} [{c['lo'].iloc[0]:.2f}, {c['hi'].iloc[0]:.2f}]"
                                if len(c) and c["trials"].iloc[0] else "—")
        out.append(row)
    if "chance" in summ and len(summ):
        chance = summ.groupby("eval_len")["chance"].mean()
        out.append({"variant": "chance", **{str(int(L)): _fmt_chance(float(chance[L])) for L in lens}})
    return pd.DataFrame(out)


def _fmt_chance(c: float) -> str:
    return f"{c:.2f}" if c >= 0.01 else f"{c:.2g}"

