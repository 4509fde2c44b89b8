"""The latency report: tables (Markdown + LaTeX), figures (PNG + SVG) and ``index.md`` from the rows alone (no
torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ablate.analysis.claims import claims_frame
from ablate.store.atomic import write_text
from ablate.reporting.headline import claim_tally, why_lines
from ablate.reporting.tables import to_markdown, write_table

from .decode_cache import cache_claims, cache_table, mixed_decode
from .constants import PASSES, SUITE
from .figures import fig_decode, fig_memory, fig_prefill, fig_stream, fig_tflops
from .stream_report import STREAM_FLOATFMT, stream_claims, stream_table
from .tables import (TFLOPS_FOOTNOTE, column_or, kernel_frame, other_convention_keys, best_table, decode_table,
                     kernel_tables, position_table, prefill_table, status_table, tflops_pivot, train_table)


def _env_lines(df) -> list[str]:
    cols = ["env.gpu", "env.cpu", "env.cpu_count", "env.torch", "env.cuda", "env.cudnn", "env.triton",
            "env.flash_attn", "env.flash_attn_4", "env.xformers", "env.driver", "env.git_commit", "env.git_dirty"]
    lines = []
    for c in cols:
        if c in df.columns:
            vals = sorted({str(v) for v in df[c].dropna().unique()})
            if vals:
                lines.append(f"- `{c[4:]}`: {', '.join(vals)}")
    return lines


def headline_lines(best, df) -> list[str]:
    """The page's opening: per pass, the kernel fastest on most shapes and the best at the longest length against
    sdpa (from :func:`best_table`), and how many measurements gave no number ([] without kernel rows)."""
    need = {"pass", "n", "best kernel", "best TFLOP/s", "sdpa TFLOP/s"}
    if best is None or best.empty or not need <= set(best.columns):
        return []
    out = ["## Headline findings", ""]
    for pas, g in best.groupby("pass", sort=False):
        wins = g["best kernel"].value_counts()
        longest = g[g["n"] == g["n"].max()]
        ratio = pd.to_numeric(longest["best TFLOP/s"], errors="coerce") / pd.to_numeric(longest["sdpa TFLOP/s"],
                                                                                         errors="coerce")
        line = (f"- {str(pas).replace('_', '+')}: `{wins.index[0]}` is the fastest exact kernel on {int(wins.iloc[0])} "
                f"of {len(g)} shapes")
        if ratio.notna().any():
            r = longest.loc[ratio.idxmax()]
            line += (f"; at the longest length (n={int(r['n'])}) the largest gain over sdpa is `{r['best kernel']}` "
                     f"({float(r['best TFLOP/s']):.4g} TFLOP/s, ×{float(ratio.max()):.2f})")
        out.append(line + ".")
    bad = df[df["status"] != "ok"]["status"].value_counts() if "status" in df.columns else pd.Series(dtype=int)
    if len(bad):
        out.append(f"- {int(bad.sum())} measurement(s) without a number ("
                   + ", ".join(f"{k} {int(v)}" for k, v in bad.items()) + "): *Rows without a number* below.")
    return out + [""]


def report(df, out_dir: Path) -> list[Path]:
    """Tables (Markdown + LaTeX), figures (PNG + SVG) and ``index.md`` from latency rows alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    df = df.reset_index(drop=True)
    if "status" not in df.columns:
        df = df.assign(status="ok")
    written: list[Path] = []
    idx: list[str] = ["<!-- ablate:latency -->", "# Latency: attention kernels, positions, training, decoding", ""]
    if df.empty:
        idx.append("(no latency rows)")
    devices = sorted({str(x) for x in column_or(df, "device_name").dropna().unique()})
    counts = df.groupby(["part", "status"], dropna=False).size() if "part" in df.columns else pd.Series(dtype=int)
    k = kernel_frame(df) if "part" in df.columns else pd.DataFrame()
    best = best_table(k) if not k.empty else pd.DataFrame()
    idx += headline_lines(best, df)
    idx += ["Measured on: " + ("; ".join(devices) or "?") + ".", "", "Environment:", ""] + _env_lines(df) + [""]
    idx += ["Regenerate: `ablate report <results.jsonl> --out <this folder>`. Method and columns: "
            "`docs/latency.md`. Times are medians (p20–p80 in the tables); TFLOP/s use the FlashAttention convention "
            "(forward 4·b·h·n²·d, halved when causal, a sliding window counts its band; backward 2.5×, fwd+bwd 3.5×), "
            "except linear attention, counted by the algorithm that ran. "
            "Every timed kernel was first checked against the reference on the same inputs (rel err columns).", ""]
    if not counts.empty:
        ct = counts.rename("rows").reset_index()
        idx += ["Rows by part and status:", "", to_markdown(ct), ""]

    def table(t, stem: str, caption: str, floatfmt: Any = ".4g", heading: str | None = None) -> None:
        nonlocal written
        if t is None or t.empty:
            return
        md, tex = write_table(t, out_dir / f"latency_{stem}", caption=caption, floatfmt=floatfmt)
        written += [md, tex]
        if heading:
            idx.extend([heading, "", f"[{md.name}]({md.name}) · [{tex.name}]({tex.name})", ""])

    def figure(files: list[Path], title: str) -> None:
        nonlocal written
        if files:
            written += files
            png = next(f for f in files if f.suffix == ".png")
            idx.extend([f"![{title}]({png.name})", ""])

    if not k.empty:
        idx += ["## Attention kernels", ""]
        if not best.empty:
            cap = ("Fastest correct exact-attention kernel per shape and pass, and sdpa, TFLOP/s (linear attention "
                   "computes a different function and is left out here; it is in the tables below).")
            table(best, "kernel_best", cap)
            idx += [cap, "", to_markdown(best, floatfmt=".4g"), ""]
        for pas in PASSES:
            piv = tflops_pivot(k, pas)
            if not piv.empty:
                table(piv, f"tflops_{pas}", f"TFLOP/s by sequence length ({pas.replace('_', '+')}), tokens per "
                                            "batch fixed (batch = tokens / n). " + TFLOPS_FOOTNOTE, ".4g",
                      f"### TFLOP/s, {pas.replace('_', '+')}")
                idx += [to_markdown(piv, floatfmt=".4g"), ""]
                if other_convention_keys(k) and TFLOPS_FOOTNOTE not in idx:
                    idx += [TFLOPS_FOOTNOTE, ""]
                figure(fig_tflops(k, pas, out_dir / f"latency_tflops_{pas}"), f"TFLOP/s {pas}")
        mem_files = fig_memory(k, out_dir / "latency_memory")
        idx += ["### Peak memory", ""]
        if mem_files:
            figure(mem_files, "peak memory vs sequence length")
        else:
            idx += ["Peak memory is measured on CUDA only (`torch.cuda.max_memory_allocated`); these rows are "
                    "from a CPU run, where it is n/a.", ""]
        idx += ["### Per shape", ""]
        for slug, cap, t in kernel_tables(k):
            table(t, f"kernels_{slug}", cap, {"ms": ".4g", "TFLOP/s": ".4g", "peak MiB": ".4g", "× sdpa": ".3g",
                                              "rel err": ".2e", "grad err": ".2e"})
            idx.append(f"- [{slug}](latency_kernels_{slug}.md)")
        idx.append("")
    pt = position_table(df) if "part" in df.columns else pd.DataFrame()
    if not pt.empty:
        idx += ["## Position variants on their own", ""]
        table(pt, "positions", "Cost of each position variant's hooks on their own: embed (absolute), rotate_qk "
                               "(RoPE family, q and k), bias_dense (ALiBi / T5 dense (H, n, n) bias), all (every "
                               "hook once).")
        idx += [to_markdown(pt), ""]
    tt = train_table(df) if "part" in df.columns else pd.DataFrame()
    if not tt.empty:
        idx += ["## Training step (forward + backward + clip + AdamW)", ""]
        table(tt, "train", "Training step of the reference model: tokens/s, MFU against the listed bf16 peak, "
                           "peak memory (weights + optimizer + activations).")
        idx += [to_markdown(tt), ""]
    dt = decode_table(df) if "part" in df.columns else pd.DataFrame()
    if not dt.empty:
        idx += ["## Decoding with the KV cache", ""]
        table(dt, "decode", "Per-token decode latency at each context (cache reset to that context before every "
                            "step) and KV-cache bytes: measured nbytes() vs the closed form "
                            "2·layers·kv_heads·head_dim·n·bytes·batch.")
        idx += [to_markdown(dt), ""]
        figure(fig_decode(df, out_dir / "latency_decode"), "decode latency and KV cache vs context")
    if mixed_decode(df):  # more than one attention layer decoded: their caches side by side, and MLA's claim
        ct, claims = cache_table(df), cache_claims(df)
        idx += ["### Decode-state bytes per token", ""]
        table(ct, "decode_cache", "Decode-state bytes per token by attention layer and layout, from the measured "
                                  "cache bytes: elements one token adds to one layer (× head_dim), bytes over all "
                                  "layers, ratio to MHA, the GQA group count with the same cache, MiB at 32k tokens.")
        idx += [to_markdown(ct), ""]
        if claims:
            cf = claims_frame(claims)
            table(cf, "decode_cache_claims", "DeepSeek-V2's cache claim vs the measured cache bytes (exact).")
            idx += ["### Published claims vs this run", "", to_markdown(cf), ""]
    pf = prefill_table(df) if "part" in df.columns else pd.DataFrame()
    if not pf.empty:
        idx += ["## Prefill", ""]
        table(pf, "prefill", "Prefill (one forward pass filling a fresh KV cache) vs prompt length.")
        idx += [to_markdown(pf), ""]
        figure(fig_prefill(df, out_dir / "latency_prefill"), "prefill latency vs prompt length")
    sm = stream_table(df)
    if not sm.empty:
        idx += ["## Streaming decode (StreamingLLM's caches)", ""]
        table(sm, "stream", "Per-token decode latency and cache after `tokens` streamed tokens, per mode: dense (no "
                            "eviction), window (last `budget` tokens), sinks (`sinks` first + recent, `budget` keys "
                            "per query), recompute (a forward over the last `budget` tokens per token); × recompute: "
                            "ratio of medians at the same budget and length; cache: measured nbytes() vs the layer's "
                            "closed form.", STREAM_FLOATFMT)
        idx += [to_markdown(sm, floatfmt=STREAM_FLOATFMT), ""]
        figure(fig_stream(df, out_dir / "latency_stream"), "streaming decode latency and cache vs tokens streamed")
        claims = stream_claims(df)
        if claims:
            cf = claims_frame(claims)
            table(cf, "stream_claims", "StreamingLLM's cost claims vs this run: memory from exact byte counts, "
                                       "speed from the timed steps' p20–p80 ranges.")
            idx += ["### Published claims vs this run (streaming)", "",
                    claim_tally((c.claim, c.verdict) for c in claims)[0], "", to_markdown(cf), "",
                    *why_lines(claims), ""]
    st = status_table(df) if "part" in df.columns else pd.DataFrame()
    if not st.empty:
        idx += ["## Rows without a number (status and reason)", ""]
        table(st, "status", "Measurements that did not produce a number, with the reason.")
        idx += [to_markdown(st), ""]
    index = out_dir / "index.md"
    if index.exists() and not index.read_text(encoding="utf-8").startswith("<!-- ablate:latency -->"):
        index = out_dir / "latency_index.md"  # another suite's index lives here
    write_text(index, "\n".join(idx).rstrip() + "\n")
    written.append(index)
    return written
