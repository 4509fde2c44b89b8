"""The ``stream`` part's table and StreamingLLM's two cost claims, computed from the rows (torch-free).

Per model (attention, position, layout, size, batch, dtype, device) and cache budget, the claims (Xiao et al. 2023,
*Efficient Streaming Language Models with Attention Sinks*, sec. 4.5 and Fig. 10):

1. **memory stays flat with length**: the ``sinks`` cache's measured bytes are equal at every stream length while
   the ``dense`` cache's grow (exact byte counts, no interval: :func:`ablate.analysis.claims_streaming.flat_memory`);
2. **a token costs less than with the sliding window with re-computation** (the paper: up to 22.2x per token,
   Llama-2-7B/13B at cache sizes 256-4096 on one A6000): *reproduced* when at every length the ``sinks`` step's p80
   is below the ``recompute`` step's p20 (the p20-p80 ranges of the timed steps lie apart), *not reproduced* when
   the reverse holds at every length, *inconclusive* otherwise. The speed-up (ratio of medians) is shown per length;
   its size depends on the budget, the model and the machine, so the verdict tests its direction.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.analysis.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, ClaimResult
from ablate.analysis.claims_streaming import flat_memory

from .constants import DENSE, RECOMPUTE, SINKS, STREAM_MODES
from .tables import column_or, numeric_column, spread_column, varied_variants

__all__ = ["SOURCE", "STREAM_FLOATFMT", "stream_rows", "stream_table", "stream_claims"]

SOURCE = ("Xiao et al. 2023 (StreamingLLM), sec. 4.5 and Fig. 10; mit-han-lab/streaming-llm StartRecentKVCache; "
          "caches of ablate.variants.attention.streaming")
PROTOCOL = ("one eager decode step after `tokens` streamed tokens, the cache restored before every timed step; "
            "recompute: a forward over the last `budget` tokens")
_MODEL = ("attention", "position", "layout", "n_heads", "n_kv_heads", "d_model", "n_layers", "batch", "dtype",
          "device_name")
KIB = 1024
# byte and token counts are exact: shown whole (KiB to one decimal), not in 4 significant digits
STREAM_FLOATFMT = {"ms/token": ".4g", "tokens/s": ".4g", "× recompute": ".3g", "kept tokens": ".0f",
                   "cache KiB": ".1f", "closed form KiB": ".1f", "keys / query": ".0f"}


def stream_rows(df) -> pd.DataFrame:
    """The ok rows of the stream part, ordered by model, length and mode."""
    if df is None or df.empty or "part" not in df.columns:
        return pd.DataFrame()
    d = df[(df["part"] == "stream") & (df["status"] == "ok")]
    if d.empty:
        return pd.DataFrame()
    order = {m: i for i, m in enumerate(STREAM_MODES)}
    d = d.assign(_t=numeric_column(d, "tokens"), _m=column_or(d, "stream_mode").map(order),
                 _b=numeric_column(d, "stream_budget"))
    return d.sort_values(["_t", "_m", "_b"], kind="stable")


def _value(r: Any, col: str) -> Any:
    v = r.get(col)
    return None if isinstance(v, float) and math.isnan(v) else v


def _model(r: Any) -> tuple:
    return tuple(_value(r, c) for c in _MODEL)


def _label(model: tuple) -> str:
    m = dict(zip(_MODEL, model))
    return f"{m['attention']}/{m['position']}, {m['layout']}, d={m['d_model']}×{m['n_layers']}, batch {m['batch']}"


def stream_table(df) -> pd.DataFrame:
    """One row per (model, stream length, mode): ms per token (median, p20-p80), tokens/s, the speed-up over
    re-computation at the same budget and length, the tokens and bytes the cache keeps (measured, closed form)."""
    d = stream_rows(df)
    if d.empty:
        return pd.DataFrame()
    recompute = {(_model(r), _value(r, "stream_budget"), _value(r, "tokens")): float(r["time_ms"])
                 for _, r in d.iterrows() if r.get("stream_mode") == RECOMPUTE}
    speedup = []
    for _, r in d.iterrows():
        base = recompute.get((_model(r), _value(r, "stream_budget"), _value(r, "tokens")))
        ms = float(r["time_ms"])
        speedup.append(round(base / ms, 2) if base and ms > 0 and r.get("stream_mode") != RECOMPUTE else None)
    cols: dict[str, Any] = varied_variants(d)
    cols.update({"layout": column_or(d, "layout"), "batch": numeric_column(d, "batch").astype(int),
                 "tokens": d["_t"].astype(int), "mode": column_or(d, "stream_mode"),
                 "budget": [int(b) if b == b else "—" for b in d["_b"]],
                 "sinks": [int(s) if s == s else "—" for s in numeric_column(d, "stream_sinks")],
                 "ms/token": numeric_column(d, "time_ms"), "p20–p80 ms": spread_column(d),
                 "tokens/s": numeric_column(d, "tokens_per_s"), "× recompute": speedup,
                 "kept tokens": numeric_column(d, "kv_tokens"), "cache KiB": numeric_column(d, "kv_bytes") / KIB,
                 "closed form KiB": numeric_column(d, "kv_bytes_closed_form") / KIB, "equal": column_or(d, "kv_match"),
                 "keys / query": numeric_column(d, "attn_keys")})
    return pd.DataFrame(cols).reset_index(drop=True)


def stream_claims(df) -> list[ClaimResult]:
    """StreamingLLM's memory and per-token cost claims for every model and budget in the stream rows (module doc)."""
    d = stream_rows(df)
    if d.empty:
        return []
    models: dict[tuple, dict[str, dict]] = {}
    for _, r in d.iterrows():
        mode = r.get("stream_mode")
        m = models.setdefault(_model(r), {DENSE: {}, SINKS: {}, RECOMPUTE: {}})
        if mode in m:
            budget = None if mode == DENSE else int(r["stream_budget"])
            m[mode].setdefault(budget, {})[int(r["tokens"])] = r
    out = []
    for model, m in models.items():
        dense = {L: [int(r["kv_bytes"])] for L, r in m[DENSE].get(None, {}).items()}
        for budget, sinks in sorted(m[SINKS].items()):
            out += _memory_claim(model, budget, sinks, dense)
            out += _speed_claim(model, budget, sinks, m[RECOMPUTE].get(budget, {}))
    return out


def _memory_claim(model: tuple, budget: int, sinks: dict, dense: dict) -> list[ClaimResult]:
    if len(sinks) < 2:
        return []
    kept = {L: [int(r["kv_bytes"])] for L, r in sinks.items()}
    verdict, detail = flat_memory(kept, dense)
    ours = "; ".join(f"L={L} sinks {kept[L][0] / KIB:.1f} KiB"
                     + (f", dense {dense[L][0] / KIB:.1f} KiB" if L in dense else "") for L in sorted(kept))
    return [ClaimResult(f"Memory stays flat with length ({_label(model)}, budget {budget})", SOURCE,
                        "cache of 4 + recent tokens: constant memory however long the stream (Fig. 10)", ours,
                        "measured cache bytes (nbytes) of the sinks mode equal at every stream length (exact)",
                        verdict, detail, "", "", PROTOCOL)]


def _speed_claim(model: tuple, budget: int, sinks: dict, recompute: dict) -> list[ClaimResult]:
    lens = sorted(set(sinks) & set(recompute))
    if not lens:
        return []
    bits, faster, slower = [], [], []
    for L in lens:
        s, r = sinks[L], recompute[L]
        faster.append(float(s["p80_ms"]) < float(r["p20_ms"]))
        slower.append(float(r["p80_ms"]) < float(s["p20_ms"]))
        ratio = float(r["time_ms"]) / float(s["time_ms"])
        bits.append(f"L={L} ×{ratio:.2f} ({float(r['time_ms']):.3g} vs {float(s['time_ms']):.3g} ms)"
                    + (" ✓" if faster[-1] else " ✗" if slower[-1] else " ~"))
    verdict = REPRODUCED if all(faster) else NOT_REPRODUCED if all(slower) else INCONCLUSIVE
    detail = {REPRODUCED: "at every length the sinks step's p20–p80 range lies below re-computation's",
              NOT_REPRODUCED: "at every length the sinks step's p20–p80 range lies above re-computation's",
              INCONCLUSIVE: (f"the p20–p80 ranges lie apart in the claim's direction at {sum(faster)} of "
                             f"{len(lens)} lengths, against it at {sum(slower)}")}[verdict]
    ratios = [float(recompute[L]["time_ms"]) / float(sinks[L]["time_ms"]) for L in lens]
    ours = f"×{min(ratios):.2f}–×{max(ratios):.2f} per token (recompute ms / sinks ms, medians)"
    return [ClaimResult(f"Sinks cache decodes faster than re-computation ({_label(model)}, budget {budget})",
                        SOURCE, "up to 22.2× per token vs sliding window with re-computation (Llama-2-7B/13B, cache "
                        "256–4096, A6000; Fig. 10)", ours,
                        "sinks p80 < recompute p20 at every length (timed steps' p20–p80 ranges apart)", verdict,
                        detail, "the size of the speed-up depends on the budget, the model and the machine: the "
                        "verdict tests its direction", "; ".join(bits), PROTOCOL)]
