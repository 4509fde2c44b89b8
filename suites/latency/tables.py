"""The latency report's tables, from the rows alone (pandas; no torch)."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import pandas as pd

from ablate.reporting.style import order as display_order
from ablate.reporting.tables import fmt_sig

from .constants import BASELINE_ATTENTION, DECODE_MODES, FLOPS_FA, LAYOUTS, PASS_ORDER

MIB = float(1 << 20)


def column_or(df, name: str, default: Any = None):
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index, dtype=object)


def numeric_column(df, name: str):
    return pd.to_numeric(column_or(df, name), errors="coerce")


def attention_order(keys: Iterable[str]) -> list[str]:
    return display_order("attention", keys)


def _spread(lo: Any, hi: Any) -> str:
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return "—"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"{fmt_sig(lo)}–{fmt_sig(hi)}"  # four significant digits each, trailing zeros kept


def kernel_frame(df):
    """Kernel rows with typed shape columns and the speed-up against ``sdpa`` on the same shape and pass."""
    k = df[column_or(df, "part") == "kernel"].copy()
    if k.empty:
        return k
    for c in ("seq_len", "batch", "n_heads", "n_kv_heads", "head_dim", "window", "time_ms", "p20_ms", "p80_ms",
              "tflops", "peak_mem_bytes", "rel_err", "grad_rel_err", "compile_s"):
        k[c] = numeric_column(k, c)
    for c in ("layout", "group", "backend", "bias", "dtype", "pass", "device_name"):
        k[c] = column_or(k, c)
    k["bias"] = k["bias"].fillna("none")
    k["causal"] = column_or(k, "causal").map(lambda v: bool(v) if isinstance(v, (bool, int)) else v)
    shape_cols = ["device_name", "dtype", "seq_len", "batch", "n_heads", "n_kv_heads", "head_dim", "causal",
                  "bias", "window", "pass"]
    ok = k[k["status"] == "ok"]
    sdpa = ok[ok["attention"] == BASELINE_ATTENTION][shape_cols + ["time_ms"]].rename(columns={"time_ms": "_sdpa_ms"})
    k = k.merge(sdpa.astype({"window": float}), how="left", on=shape_cols) if not sdpa.empty else k.assign(_sdpa_ms=None)
    k["speedup_vs_sdpa"] = pd.to_numeric(k["_sdpa_ms"], errors="coerce") / k["time_ms"]
    return k.drop(columns=["_sdpa_ms"])


def _group_slug(dtype: str, hd: Any, causal: Any, layout: str, bias: str, window: Any) -> str:
    bits = [str(dtype), f"hd{int(hd)}", "causal" if causal else "full", str(layout)]
    if bias and bias != "none":
        bits.append(str(bias))
    if window == window and window is not None:
        bits.append(f"w{int(window)}")
    return "_".join(bits)


def kernel_tables(k) -> list[tuple[str, str, Any]]:
    """(slug, caption, table) per shape family: rows = length x pass x kernel."""
    out = []
    if k.empty:
        return out
    ok = k[k["status"] == "ok"].copy()
    if ok.empty:
        return out
    ok["_w"] = ok["window"].fillna(-1)
    order = attention_order(ok["attention"])
    gcols = ["device_name", "dtype", "head_dim", "causal", "layout", "bias", "_w"]
    many_dev = ok["device_name"].nunique() > 1
    for gkey, g in ok.groupby(gcols, sort=True, dropna=False):
        dev, dtype, hd, causal, layout, bias, w = gkey
        window = None if w == -1 else w
        g = g.assign(_p=g["pass"].map(PASS_ORDER), _k=g["attention"].map({a: i for i, a in enumerate(order)}))
        g = g.sort_values(["seq_len", "_p", "_k"], kind="stable")
        t = pd.DataFrame({
            "n": g["seq_len"].astype(int), "batch": g["batch"].astype(int),
            "heads": [f"{int(a)}/{int(b)}" for a, b in zip(g["n_heads"], g["n_kv_heads"])],
            "kernel": g["attention"], "pass": g["pass"], "backend": g["backend"],
            "ms": g["time_ms"], "p20–p80 ms": [_spread(a, b) for a, b in zip(g["p20_ms"], g["p80_ms"])],
            "TFLOP/s": g["tflops"], "peak MiB": g["peak_mem_bytes"] / MIB,
            "× sdpa": g["speedup_vs_sdpa"], "rel err": g["rel_err"], "grad err": g["grad_rel_err"],
        }).reset_index(drop=True)
        slug = _group_slug(dtype, hd, causal, layout, bias, window) + (f"_{_dev_slug(dev)}" if many_dev else "")
        cap = (f"Attention kernels, {dtype}, head dim {int(hd)}, {'causal' if causal else 'non-causal'}, {layout}"
               + (f", {bias} bias" if bias != "none" else "") + (f", window {int(window)}" if window else "")
               + f" on {dev}: median time (ms) with p20–p80, TFLOP/s (FlashAttention convention; linear: the FLOPs "
               "of the linear-attention algorithm that ran), peak memory above the inputs, speed-up vs sdpa, "
               "relative error vs the reference.")
        out.append((slug, cap, t))
    return out


def _dev_slug(name: Any) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-").lower()[:40]


def other_convention_keys(k) -> set:
    """Attention keys with a row whose FLOPs follow another convention than FlashAttention's (``linear``: a
    different function, counted by the algorithm that ran), read off the rows themselves."""
    conv = column_or(k, "flops_convention")
    return set(k.loc[conv.notna() & (conv != FLOPS_FA), "attention"])


def softmax_rows(k):
    """Kernel rows whose FLOPs follow the FlashAttention convention (not those of a key counted by another one,
    even in its status rows). TFLOP/s tables and figures use these only."""
    conv = column_or(k, "flops_convention").fillna(FLOPS_FA)
    return k[~k["attention"].isin(other_convention_keys(k)) & (conv == FLOPS_FA)]


TFLOPS_FOOTNOTE = ("Linear attention is not in the TFLOP/s tables and figures: it computes a different function, and "
                   "its FLOPs are those of the algorithm that ran (`flops_convention = linear`: feature maps, chunked "
                   "C×C products and state updates), not comparable with the softmax count; its times, that rate and "
                   "its speed-up vs sdpa are in the per-shape tables (and `equiv_tflops`, the softmax-equivalent "
                   "rate, in the JSONL).")


def tflops_pivot(k, pas: str):
    """FlashAttention-paper style: rows (head dim, causal, kernel), columns sequence length, values TFLOP/s
    (softmax-attention kernels only, see :func:`softmax_rows`)."""
    k = softmax_rows(k)
    ok = k[(k["status"] == "ok") & (column_or(k, "group") == "main") & (k["pass"] == pas)]
    if ok.empty:
        return pd.DataFrame()
    order = attention_order(ok["attention"])
    piv = ok.pivot_table(index=["device_name", "dtype", "head_dim", "causal", "attention"], columns="seq_len",
                         values="tflops", aggfunc="median")
    piv.columns = [str(int(c)) for c in piv.columns]
    piv = piv.reset_index()
    piv["_k"] = piv["attention"].map({a: i for i, a in enumerate(order)})
    piv = piv.sort_values(["device_name", "dtype", "head_dim", "causal", "_k"], kind="stable").drop(columns="_k")
    piv["causal"] = piv["causal"].map(lambda v: "causal" if v else "full")
    piv["head_dim"] = piv["head_dim"].astype(int)
    if piv["device_name"].nunique() == 1:
        piv = piv.drop(columns="device_name")
    return piv.rename(columns={"attention": "kernel", "head_dim": "hd", "causal": "mask"}).reset_index(drop=True)


def best_table(k):
    """Per main shape and pass: the fastest correct kernel, its TFLOP/s, and sdpa's."""
    ok = k[(k["status"] == "ok") & (column_or(k, "group") == "main") & ~k["attention"].isin(other_convention_keys(k))]
    if ok.empty:
        return pd.DataFrame()
    recs = []
    for (dev, dtype, hd, causal, n, pas), g in ok.groupby(["device_name", "dtype", "head_dim", "causal", "seq_len",
                                                           "pass"], sort=True):
        g = g[g["tflops"].notna()]
        if g.empty:
            continue
        best = g.loc[g["tflops"].idxmax()]
        s = g[g["attention"] == BASELINE_ATTENTION]
        recs.append({"device": dev, "dtype": dtype, "hd": int(hd), "mask": "causal" if causal else "full",
                     "n": int(n), "pass": pas, "best kernel": best["attention"], "backend": best["backend"],
                     "best TFLOP/s": best["tflops"], "sdpa TFLOP/s": s["tflops"].iloc[0] if not s.empty else None,
                     "sdpa backend": s["backend"].iloc[0] if not s.empty else None})
    t = pd.DataFrame(recs)
    if not t.empty:
        t["_p"] = t["pass"].map(PASS_ORDER)
        t = t.sort_values(["device", "dtype", "_p", "hd", "mask", "n"], kind="stable").drop(columns="_p")
        if t["device"].nunique() == 1:
            t = t.drop(columns="device")
    return t.reset_index(drop=True)


def status_table(df):
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    what = []
    for _, r in bad.iterrows():
        part = r.get("part")
        if part == "kernel":
            what.append(str(r.get("attention")))
        elif part == "position":
            what.append(str(r.get("position")))
        elif part == "train":
            what.append(str(r.get("choice")))
        else:
            what.append(f"{r.get('layout')}")
    reason = column_or(bad, "reason").fillna("").str.replace("'ablate[", "'ablate-bench[", regex=False)  # rows of old runs
    t = bad.assign(variant=what, reason=reason)
    t = t.groupby(["part", "variant", "status", "reason"], sort=True, dropna=False).size().rename("rows").reset_index()
    return t


def position_table(df):
    p = df[(column_or(df, "part") == "position") & (df["status"] == "ok")]
    if p.empty:
        return pd.DataFrame()
    order = {k: i for i, k in enumerate(display_order("position", p["position"]))}
    ops = {"embed": 0, "rotate_qk": 1, "bias_dense": 2, "all": 3}
    p = p.assign(_a=p["position"].map(order), _b=column_or(p, "op").map(ops), n=numeric_column(p, "seq_len"))
    p = p.sort_values(["n", "_a", "_b"], kind="stable")
    return pd.DataFrame({"position": p["position"], "op": column_or(p, "op"), "n": p["n"].astype(int),
                         "batch": numeric_column(p, "batch").astype(int), "heads": numeric_column(p, "n_heads").astype(int),
                         "head dim": numeric_column(p, "head_dim").astype(int), "dtype": column_or(p, "dtype"),
                         "ms": numeric_column(p, "time_ms"),
                         "p20–p80 ms": [_spread(a, b) for a, b in zip(numeric_column(p, "p20_ms"), numeric_column(p, "p80_ms"))],
                         "peak MiB": numeric_column(p, "peak_mem_bytes") / MIB}).reset_index(drop=True)


def train_table(df):
    """One row per training step measured: eager and compiled side by side where rows have modes (``train_mode``),
    MFU with causal attention halved and, where rows record it, PaLM's unhalved count (``MFU % (PaLM)``)."""
    t = df[(column_or(df, "part") == "train") & (df["status"] == "ok")]
    if t.empty:
        return pd.DataFrame()
    cols = {"choice": column_or(t, "choice")}
    if "train_backend" in t.columns:
        cols["mode"] = column_or(t, "train_mode").fillna("eager")
    cols.update({"attention": t["attention"], "position": column_or(t, "position"), "norm": column_or(t, "norm"),
                 "activation": column_or(t, "activation"), "ms/step": numeric_column(t, "time_ms"),
                 "p20–p80 ms": [_spread(a, b) for a, b in zip(numeric_column(t, "p20_ms"), numeric_column(t, "p80_ms"))],
                 "tokens/s": numeric_column(t, "tokens_per_s"), "TFLOP/s": numeric_column(t, "tflops"), "MFU %": numeric_column(t, "mfu") * 100})
    if "mfu_palm" in t.columns:
        cols["MFU % (PaLM)"] = numeric_column(t, "mfu_palm") * 100
    cols.update({"peak GiB": numeric_column(t, "peak_mem_bytes") / (1 << 30), "compile s": numeric_column(t, "compile_s"),
                 "peak used": column_or(t, "peak_source")})
    return pd.DataFrame(cols).reset_index(drop=True)


def _layout_rows(df, part: str, length: str):
    """The ok rows of a decode/prefill part in layout then length order, and the columns both tables start with."""
    d = df[(column_or(df, "part") == part) & (df["status"] == "ok")]
    if d.empty:
        return d, {}
    d = d.assign(_l=column_or(d, "layout").map({x: i for i, x in enumerate(LAYOUTS)}), _c=numeric_column(d, length))
    d = d.sort_values(["_l", "_c"], kind="stable")
    return d, {"layout": column_or(d, "layout"),
               "heads": [f"{int(a)}/{int(b)}" for a, b in zip(numeric_column(d, "n_heads"), numeric_column(d, "n_kv_heads"))],
               "batch": numeric_column(d, "batch").astype(int)}


def varied_variants(d) -> dict[str, Any]:
    """The ``attention`` and ``position`` columns of rows where they vary (several layers or positions measured
    side by side: mla beside the standard layer, xpos beside rope), else none."""
    return {c: column_or(d, c) for c in ("attention", "position") if column_or(d, c).nunique() > 1}


def spread_column(d) -> list[str]:
    return [_spread(a, b) for a, b in zip(numeric_column(d, "p20_ms"), numeric_column(d, "p80_ms"))]


def decode_table(df):
    """Decode rows by layout, context (and mode, where rows have one: eager / graph / compile), with the bandwidth
    a step achieves where rows record it (rows from before decode modes have neither column)."""
    d, head = _layout_rows(df, "decode", "context")
    if d.empty:
        return pd.DataFrame()
    modes = "decode_mode" in d.columns or "decode_backend" in d.columns
    if modes:
        d = d.assign(_m=column_or(d, "decode_mode").fillna("eager"))
        d = d.assign(_mi=d["_m"].map({m: i for i, m in enumerate(DECODE_MODES)}))
        d = d.sort_values(["_l", "_c", "_mi"], kind="stable")
        head = {"layout": column_or(d, "layout"),
                "heads": [f"{int(a)}/{int(b)}" for a, b in zip(numeric_column(d, "n_heads"), numeric_column(d, "n_kv_heads"))],
                "batch": numeric_column(d, "batch").astype(int)}
    cols = {**varied_variants(d), **head, "context": d["_c"].astype(int)}
    if modes:
        cols["mode"] = d["_m"]
    cols.update({"ms/token": numeric_column(d, "time_ms"), "p20–p80 ms": spread_column(d), "tokens/s": numeric_column(d, "tokens_per_s")})
    if "achieved_gbps" in d.columns:
        cols.update({"GB/s": numeric_column(d, "achieved_gbps"), "% peak BW": 100 * numeric_column(d, "bw_util")})
    cols.update({"KV MiB": numeric_column(d, "kv_bytes") / MIB, "closed form MiB": numeric_column(d, "kv_bytes_closed_form") / MIB,
                 "equal": column_or(d, "kv_match"), "allocated MiB": numeric_column(d, "kv_bytes_allocated") / MIB,
                 "attention backend": column_or(d, "attn_backend")})
    return pd.DataFrame(cols).reset_index(drop=True)


def prefill_table(df):
    d, head = _layout_rows(df, "prefill", "prompt_len")
    if d.empty:
        return pd.DataFrame()
    return pd.DataFrame({**varied_variants(d), **head, "prompt": d["_c"].astype(int), "ms": numeric_column(d, "time_ms"),
                         "p20–p80 ms": spread_column(d), "tokens/s": numeric_column(d, "tokens_per_s"),
                         "peak MiB": numeric_column(d, "peak_mem_bytes") / MIB,
                         "attention backend": column_or(d, "attn_backend")}).reset_index(drop=True)
