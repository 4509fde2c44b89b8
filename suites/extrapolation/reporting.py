"""The extrapolation report: tables (Markdown + LaTeX), figures (PNG + SVG) and ``extrapolation_index.md`` from the
rows alone (no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ablate.store.atomic import write_text
from ablate.reporting.headline import headline_lines
from ablate.reporting.tables import write_table

from .claims import reading_notes, probe_notes, claims_section, undertrained
from .labels import relabel
from .constants import FAIR_TOL, METRIC_PPL, PROBE_TASKS, PROBE_TITLES, SUITE
from .streaming_report import stream_section
from .figures import probe_heatmaps, fig_loss_vs_position, fig_ppl_vs_length, fig_probe_vs_length, variant_style
from .summary import (is_number, protocol_groups, variant_order, interval_note, ppl_summary, probe_chance,
                      probe_chance_by_depth, probe_summary, protocol_line)
from .tables import effective_table, ppl_table, probe_table


def _slug(p: dict, many: bool) -> str:
    if not many:
        return ""
    bits = [str(p.get("preset", "")), str(p.get("mode", "")), f"L{p.get('train_len')}"]
    if p.get("mode") == "sliding":
        bits.append(f"s{int(p['stride'])}")
    bits.append(str(p.get("config_id", ""))[:6])
    return "_" + "-".join(b for b in bits if b)


def _probe_report(df, out_dir: Path, pal: dict, markers: dict) -> tuple[list[Path], list[str]]:
    written: list[Path] = []
    index: list[str] = []
    for task in PROBE_TASKS:
        pk = df[df["metric"] == f"{task}_acc"] if "metric" in df.columns else df.iloc[0:0]
        pk = pk[pk["status"] == "ok"]
        if pk.empty:
            continue
        chance = probe_chance(pk)
        summ = probe_summary(pk)
        by_depth = probe_chance_by_depth(pk)
        order = variant_order(summ)
        kv = pd.to_numeric(pk["keys"], errors="coerce").dropna() if task == "multikey" and "keys" in pk else []
        keys = int(kv.iloc[0]) if len(kv) else None
        lo_c, hi_c = min(by_depth.values()), max(by_depth.values())
        level = (f"{lo_c:.2g} at every depth" if math.isclose(lo_c, hi_c, rel_tol=1e-3) else
                 f"{lo_c:.2g}–{hi_c:.2g} over the depths")
        what = (f"chance (row *chance*: {level}) = the best content-only answer, copying a random, the first or the "
                f"latest of the {keys} needles' values, computed exactly from the generator's placement"
                if keys else f"chance {chance:.2g} = a random {int(round(-math.log10(chance)))}-digit number")
        md, tex = write_table(probe_table(pk, summ), out_dir / f"extrapolation_{task}",
                              caption=f"{PROBE_TITLES[task]}: accuracy by context length: {interval_note(summ)}; "
                                      f"{what}.")
        written += [md, tex]
        written += fig_probe_vs_length(summ, task, order, chance, pal, markers,
                                       out_dir / f"extrapolation_{task}_vs_length")
        written += probe_heatmaps(pk, order, out_dir / f"extrapolation_{task}", chance=by_depth)
        index += [f"## {PROBE_TITLES[task]}", "", md.read_text(), ""] + probe_notes(summ, chance, order) + [
                  f"![{task} vs length](extrapolation_{task}_vs_length.png)", "",
                  f"![{task} by depth](extrapolation_{task}.png)", ""]
    return written, index


def _lr_lines(g) -> list[str]:
    """The learning rate each trained variant used: the sweep's choice with every candidate's tune loss, or the
    shared rate when no sweep ran (rows made before the sweep existed carry no ``lr``: nothing is said)."""
    if "lr" not in g.columns or "trained_position" not in g.columns:
        return []
    lines = []
    for pos, sub in g.groupby("trained_position", sort=False):
        lr = [v for v in sub["lr"].tolist() if is_number(v)]
        if not lr:
            continue
        cands = sub["lr_sweep.lrs"].dropna().tolist() if "lr_sweep.lrs" in sub else []
        losses = sub["lr_sweep.losses"].dropna().tolist() if "lr_sweep.losses" in sub else []
        if cands and losses and isinstance(cands[0], list):
            cand = ", ".join(f"{a:.3g}: {'diverged' if b is None else f'{b:.3f}'}" for a, b in zip(cands[0], losses[0]))
            edge = sub["lr_sweep.at_edge"].dropna().tolist() if "lr_sweep.at_edge" in sub else []
            lines.append(f"* `{pos}`: {lr[0]:.3g} (tune loss per candidate, nats/token: {cand}"
                         f"{'; at the edge of the candidates' if edge and edge[0] else ''})")
        else:
            lines.append(f"* `{pos}`: {lr[0]:.3g} (no sweep: the preset's shared rate)")
    if not lines:
        return []
    return ["### Learning rate per variant", "",
            "Chosen per trained variant by a short sweep (ablate.core.lr_sweep) scored on tune documents the test sample "
            "never holds; every seed of a variant uses its choice.", ""] + lines + [""]


def report(df, out_dir: Path) -> list[Path]:
    """Tables (Markdown + LaTeX), figures (PNG + SVG) and an index for the extrapolation rows in ``df``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    index: list[str] = ["<!-- ablate:extrapolation -->", "# Length extrapolation", "",
                        "Train short, test long: each position variant is trained at `train_len` and evaluated at "
                        "longer lengths on the same held-out documents, drawn across the whole held-out split (Press et al. 2022, "
                        "Fig. 1). The `rope_*` rows are the `rope` model evaluated with an inference-time RoPE "
                        "scaling, without retraining: at the ideal scale eval_len / train_len, or at one fixed s "
                        "(`rope_ntk s=4`); `... ftK@L` rows were fine-tuned K steps at L tokens with that scaling "
                        "first; `rope_dynamic_ntk` is scored token by token through the KV cache past train_len, as "
                        "it is used. Perplexity: lower is better; ± is the 95% t-interval over seeds; the claims' "
                        "intervals cover seeds and documents.",
                        ""]
    head_at, verdicts = len(index), []
    if df.empty or "metric" not in df.columns:
        index.append("(no extrapolation rows)")
    # styles for the series the figures draw (relabel: fixed-scale and fine-tuned rows are series of their own)
    pal, markers = variant_style(relabel(df)["position"].dropna() if "position" in df.columns else ())
    ppl_rows = df[df["metric"] == METRIC_PPL] if "metric" in df.columns else df.iloc[0:0]
    groups = protocol_groups(ppl_rows) if not ppl_rows.empty else []
    many = len(groups) > 1
    for pdict, g in groups:
        train_len = int(pdict["train_len"])
        slug = _slug(pdict, many)
        summary = ppl_summary(g)
        seeds = int(summary["seeds"].max()) if not summary.empty else 0
        hashes = g["data.hash"].dropna().astype(str).unique() if "data.hash" in g.columns else []
        line = protocol_line({**pdict, "data.hash": hashes[0] if len(hashes) == 1 else None}) + f"; {seeds} seed(s)"
        docs = [int(v) for v in g.get("eval_docs", []) if is_number(v)] if "eval_docs" in g.columns else []
        if docs:
            line += f"; {max(docs)} held-out document(s) drawn across the split"
        tol = FAIR_TOL
        flags = undertrained(summary, train_len, tol)
        wide = ppl_table(summary, train_len, flags)
        md, tex = write_table(wide, out_dir / f"extrapolation_ppl{slug}",
                              caption=f"Perplexity by evaluation length ({line}). params: trained parameters. —: not "
                                      "measurable (no positions past the learned table).", floatfmt=".2f")
        eff = effective_table(summary, train_len)
        md2, tex2 = write_table(eff, out_dir / f"extrapolation_effective_length{slug}",
                                caption=f"Effective length: the longest eval_len whose perplexity stays within 10% of "
                                        f"its perplexity at train_len ({line}).",
                                floatfmt={"ppl at train_len": ".2f", "ppl there": ".2f", "ratio to train_len": ".2f",
                                          "x train_len": ".0f", "effective length": ".0f", "longest measured": ".0f"})
        written += [md, tex, md2, tex2]
        index += [f"## Protocol{': ' + slug[1:] if slug else ''}", "", line, "",
                  "### Perplexity", "", md.read_text(), "", "### Effective length", "", md2.read_text(), ""]
        index += reading_notes(summary, train_len, flags, tol, rows=g)
        index += _lr_lines(g)

        order = variant_order(summary)
        written += fig_ppl_vs_length(summary, order, train_len, pal, markers,
                                     out_dir / f"extrapolation_ppl_vs_length{slug}")
        loss_files = fig_loss_vs_position(g, order, train_len, pal, out_dir / f"extrapolation_loss_vs_position{slug}",
                                          markers)
        written += loss_files
        index += ["### Figures", "", f"![perplexity vs length](extrapolation_ppl_vs_length{slug}.png)", "",
                  f"![loss vs position](extrapolation_loss_vs_position{slug}.png)" if loss_files else "", ""]
        claim_files, claim_index = claims_section(g, train_len, line, out_dir, slug, verdicts, summary=summary)
        written += claim_files
        index += claim_index

    stream_files, stream_index = stream_section(df, out_dir, verdicts)
    written += stream_files
    index += stream_index
    index[head_at:head_at] = headline_lines(verdicts)  # the page opens with its claims, each tallied once
    probe_files, probe_index = _probe_report(df, out_dir, pal, markers)
    written += probe_files
    index += probe_index

    idx = out_dir / "extrapolation_index.md"  # `ablate report` writes OUT/index.md linking every suite's index
    write_text(idx, "\n".join(index).rstrip() + "\n")
    written.append(idx)
    return written

