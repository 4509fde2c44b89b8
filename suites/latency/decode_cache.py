"""Decode-state bytes per token side by side (MHA / GQA / MQA / a latent cache) and DeepSeek-V2's cache claim,
computed from the decode rows (torch-free).

Each decode row records ``kv_bytes`` (the cache's ``nbytes()`` at ``context`` tokens), what the layer caches
(``cache_tensors``), the element size and ``head_dim``. Per (attention, layout) the table gives the elements one
token adds to one layer's cache in units of ``head_dim`` (MHA: ``2·n_heads``; GQA with g groups: ``2·g``; MQA: 2),
the bytes per token over all layers, the ratio to the MHA row of the same model, the GQA group count with the same
cache, and the bytes at 32k tokens (per-token bytes x 32,768). The claim (DeepSeek-AI 2024, *DeepSeek-V2*, Table 1):
MLA's latent cache holds ``(d_c + d_h^R)·layers`` elements per token, ``4.5·d_h·layers`` at its dimensions
(``d_c = 4·d_h``, ``d_h^R = d_h/2``): the cache of GQA with 2.25 groups. Byte counts are exact, so the verdict is
too: *reproduced* when the measured bytes give 4.5·head_dim per token and layer, *not reproduced* otherwise.
"""

from __future__ import annotations

import math

import pandas as pd

from ablate.analysis.claims import NOT_REPRODUCED, REPRODUCED, ClaimResult

__all__ = ["LATENT_TENSORS", "cache_table", "cache_claims", "mixed_decode"]

LATENT_TENSORS = "latent,k_rope"  # the cache of multi-head latent attention (variants/attention/mla.py)
KV_TENSORS = "k,v"
SOURCE = "DeepSeek-AI 2024 (DeepSeek-V2), Table 1 (KV cache per token of MHA, GQA, MQA, MLA)"
PUBLISHED = "(d_c + d_h^R)·l = 9/2·d_h·l elements per token: GQA with 2.25 groups"
LONG = 32768


def _decode(df) -> pd.DataFrame:
    need = {"part", "status", "kv_bytes", "context", "n_layers", "batch", "kv_el_bytes", "head_dim",
            "cache_tensors", "attention"}
    if df is None or df.empty or not need <= set(df.columns):
        return pd.DataFrame()
    d = df[(df["part"] == "decode") & (df["status"] == "ok") & df["cache_tensors"].notna()]
    return d.copy() if len(d) else pd.DataFrame()


def mixed_decode(df) -> bool:
    """Whether the decode rows hold more than one attention layer (then the report shows them side by side)."""
    d = _decode(df)
    return not d.empty and d["attention"].nunique() > 1


def _per_token(r) -> tuple[float, float]:
    """(elements per token and layer in units of head_dim, bytes per token over all layers and one sequence)."""
    tokens = float(r["context"]) * float(r["batch"])
    per_tok = float(r["kv_bytes"]) / tokens
    return per_tok / (float(r["n_layers"]) * float(r["kv_el_bytes"]) * float(r["head_dim"])), per_tok


def cache_table(df) -> pd.DataFrame:
    """One row per (attention, layout, model): cache elements per token and layer (x head_dim), bytes per token,
    x MHA, the equivalent GQA groups, MiB at 32k tokens."""
    d = _decode(df)
    if d.empty:
        return pd.DataFrame()
    rows, mha = [], {}
    model = ["d_model", "n_heads", "n_layers", "kv_el_bytes"]
    for _, r in d.iterrows():
        e, b = _per_token(r)
        key = tuple(r.get(c) for c in model)
        if r["cache_tensors"] == KV_TENSORS and r.get("n_kv_heads") == r.get("n_heads"):
            mha[key] = b
        rows.append((key, str(r["attention"]), str(r.get("layout")), str(r["cache_tensors"]), e, b))
    out, seen = [], set()
    for key, att, layout, tensors, e, b in rows:
        if (key, att, layout) in seen:
            continue
        seen.add((key, att, layout))
        base = mha.get(key)
        out.append({"attention": att, "layout": layout, "cached": tensors, "heads": int(key[1]),
                    "elements / token / layer (× head_dim)": round(e, 4), "bytes / token": round(b, 1),
                    "× MHA": round(b / base, 4) if base else "—", "as GQA groups": round(e / 2, 4),
                    "MiB at 32k": round(b * LONG / (1 << 20), 2)})
    return pd.DataFrame(out)


def cache_claims(df) -> list[ClaimResult]:
    """DeepSeek-V2's latent-cache claim for every latent-cache model in the decode rows (module doc)."""
    d = _decode(df)
    if d.empty:
        return []
    out = []
    for att, g in d[d["cache_tensors"] == LATENT_TENSORS].groupby("attention", sort=True):
        es = sorted({round(_per_token(r)[0], 9) for _, r in g.iterrows()})
        ok = all(math.isclose(e, 4.5, rel_tol=1e-9) for e in es)
        ours = ", ".join(f"{e:g}·d_h per token and layer (GQA with {e / 2:g} groups)" for e in es)
        out.append(ClaimResult(f"MLA's latent cache equals GQA with 2.25 groups ({att})", SOURCE, PUBLISHED, ours,
                               "measured cache bytes / (tokens · layers · element bytes · head_dim) = 4.5 (exact)",
                               REPRODUCED if ok else NOT_REPRODUCED,
                               f"{len(g)} decode row(s), contexts {sorted({int(c) for c in g['context']})}",
                               "", "", "decode with a static cache (latency suite)"))
    return out
