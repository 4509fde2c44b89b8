"""The report (no torch): per (device, preset, grid) the summary and findings tables, the figures and an
``index.md``."""

from __future__ import annotations

from pathlib import Path

from ablate.store.atomic import write_text
from ablate.analysis.claims import LOSS_MARGIN
from ablate.reporting.headline import claim_tally as tally_pairs
from ablate.reporting.headline import headline_lines as claim_headline
from ablate.reporting.tables import to_markdown, write_table

from .aggregate import group_dirs, to_float, point_stats
from .constants import CONVERGENCE_DROP, CONVERGENCE_WINDOW, SUITE
from .figures import fig_curves, fig_pareto, palette
from .findings import findings_table
from .tables import setup_lines, summary_table


def report(df, out_dir: Path) -> list[Path]:
    """Per (device, preset, grid): ``training_table`` (.md/.tex), ``training_findings`` (.md/.tex),
    ``training_curves`` and ``training_pareto`` (.png/.svg) and ``index.md`` in ``out_dir/<device>-<preset>/``."""
    out_dir = Path(out_dir)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    if df.empty or "point" not in df.columns:
        return written
    for name, g in group_dirs(df):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        stats = point_stats(g)
        table = summary_table(g)
        device = str(g["device"].iloc[0]) if "device" in g.columns else "?"
        if device != "cuda":
            table = table.drop(columns=[c for c in ("peak mem (MiB)", "MFU (%)") if c in table.columns])
        md, tex = write_table(table, folder / "training_table",
                              caption="Final validation loss (nats/token; mean ± 95% t-interval over seeds), Δ vs "
                                      "the baseline named in 'vs' with its verdict (better / worse / equivalent "
                                      "within ±0.02 / inconclusive), bits per byte, parameters, training tokens/s "
                                      "(mean, ± its 95% t-interval over seeds), the learning rate (* = chosen by "
                                      "the sweep), and the change of the validation loss over the last "
                                      f"{CONVERGENCE_WINDOW:.0%} of the steps ('still improving' past "
                                      f"{CONVERGENCE_DROP:g} nats).",
                              floatfmt={"bpb": ".4f", "tokens/s": ",.0f", "± tokens/s": ",.0f",
                                        "peak mem (MiB)": ".1f", "MFU (%)": ".1f"})
        written += [md, tex]
        findings = findings_table(g)
        if not findings.empty:
            fmd, ftex = write_table(findings, folder / "training_findings",
                                    caption="Published claims checked on this grid (Δ = val loss difference, "
                                            "negative = the change helps; paired 95% interval in brackets; verdict "
                                            "from that interval and a ±0.02-nat equivalence margin; caveats: a "
                                            "point still improving at the end of its run, which cannot make a "
                                            "claim reproduced, or parameter counts that differ).")
            written += [fmd, ftex]

        pal = palette([s["point"] for s in stats])
        curve_files = fig_curves(g, stats, pal, folder)
        written += curve_files
        curves_ok = bool(curve_files)
        pts = [s for s in stats if s["val"].mean is not None and s["tokens_per_s"]]
        if pts:
            pareto_files, front_names, segments = fig_pareto(pts, pal, folder)
            written += pareto_files
        else:
            front_names, segments = [], []

        index = ["<!-- ablate:training -->", f"# Training ablations: {name}", "",
                 "Each grid point trains the same small byte-level LM from scratch under the same budget and data "
                 "order per seed, then is scored on the same held-out tokens. Rows compare against the point named "
                 "in *vs*: `original+X` adds one modern change to the 2017 block, `modern-X→Y` removes one from "
                 "today's block.", "", *headline_lines(findings), "## Setup", "", *setup_lines(g), "",
                 "## Results", "", md.read_text(encoding="utf-8"), ""]
        if device != "cuda":
            index += ["Peak memory and MFU are reported on CUDA only (on CPU the process RSS high-water mark is not "
                      "per run, and there is no meaningful peak FLOP/s).", ""]
        else:
            peak = next((s["mfu_peak"] for s in stats if s["mfu_peak"]), None)
            index += [f"MFU uses the peak: {peak}.", ""]
        stuck_base = [s["point"] for s in stats if s["stuck"] and any(o["baseline"] == s["point"] for o in stats)]
        if stuck_base:
            index += [f"**Caution:** the baseline(s) {', '.join(f'`{n}`' for n in stuck_base)} learned no context "
                      "(final loss ≈ the unigram loss): a Δ against it says whether the change lets the model train "
                      "at all under this budget, not how much the change improves a model that trains.", ""]
        index += [f"Δ vs baseline: *better* / *worse* when its 95% t-interval (paired over seeds when both ran the "
                  f"same seeds, else Welch) excludes 0; *equivalent* when the two one-sided tests put it inside "
                  f"±{LOSS_MARGIN:g} nats (90% interval); otherwise *inconclusive*, with the smallest Δ these seeds "
                  f"could detect (two-sided 5%, power 80%). With one seed no test is made.", ""]
        index += _convergence_lines(stats) + _lr_lines(stats)
        if curves_ok:
            index += ["## Loss curves", "", "![validation loss curves](training_curves.png)", "",
                      curve_caption(g), ""]
        if pts:
            index += ["## Quality vs cost", "", "![quality vs cost](training_pareto.png)", "",
                      pareto_caption(pts, front_names, segments), ""]
        if not findings.empty:
            index += ["## Published claims vs this run", "", claim_tally(findings)[0], "", to_markdown(findings), ""]
        index += ["## Files", "", "`training_table.md` / `.tex`, `training_findings.md` / `.tex`, "
                  "`training_curves.png` / `.svg`, `training_pareto.png` / `.svg`; the rows are in the results JSONL "
                  "(curves as lists in `curve.*`).", ""]
        idx = folder / "index.md"
        write_text(idx, "\n".join(index).rstrip() + "\n")
        written.append(idx)
    return written


def _pairs(findings) -> list[tuple[str, str]]:
    col = "published claim" if "published claim" in findings.columns else findings.columns[0]
    return list(zip(findings[col].astype(str), findings["verdict"].astype(str)))


def claim_tally(findings) -> tuple[str, dict[str, str]]:
    """The published claims of ``findings`` tallied once each (:func:`ablate.reporting.headline.claim_tally`)."""
    return tally_pairs(_pairs(findings))


def headline_lines(findings) -> list[str]:
    """The page's opening: each published claim with its verdict on this grid ([] without claims)."""
    if findings is None or findings.empty:
        return []
    return claim_headline(_pairs(findings))


def curve_caption(g) -> str:
    """Which text the curve points scored: the first test documents (a stated subsample of the final loss's
    documents), or, for rows from before held-out documents, the first tokens of the held-out split."""
    first = g.iloc[0]
    ct, cd = to_float(first.get("curve_eval_tokens")), to_float(first.get("curve_eval_docs"))
    et, ed = to_float(first.get("eval_tokens")), to_float(first.get("eval_docs"))
    if ct is not None and et is not None:
        same = ct >= et
        n = int(ed or 0)
        what = (f"the {n} test document{'s' if n != 1 else ''} ({int(et):,} tokens) the final loss scores, all of "
                "them: the last curve point is the final loss") if same else (
            f"the first {int(cd or 0)} of the {int(ed or 0)} test documents the final loss scores ({int(ct):,} of "
            f"{int(et):,} tokens; documents drawn across the held-out split, ablate.core.evalset)")
        return f"Curve points score {what}. Band: 95% t-interval over seeds."
    tokens = to_float(first.get("config.eval.curve_tokens"))
    return (f"Curve points score the first {int(tokens or 0):,} tokens of the held-out split, the final loss "
            "another, longer stretch (rows from before held-out documents): curve and table are not on the same "
            "text, and the curve's last point need not match the final loss.")


def pareto_caption(pts: list[dict], front: list[str], segments: list[tuple[str, str]]) -> str:
    n = min(p["tps"].n for p in pts)
    bars = "bars: 95% t-intervals over seeds on both axes" if n > 1 else "one seed: no intervals"
    if n < 2:
        drawn = "no front is drawn (without intervals no step of it can be told from noise)"
    elif segments:
        drawn = "the dashed front joins only neighbours whose intervals separate on both axes: " + \
            ", ".join(f"{a}→{b}" for a, b in segments)
    else:
        drawn = "no front is drawn: every pair of neighbouring Pareto-optimal points overlaps on one axis"
    return (f"Throughput (training tokens/s, CPU/GPU as in the setup) vs final loss; {bars}. Outlined: "
            f"Pareto-optimal on the means ({', '.join(front) or 'none'}); {drawn}.")


def _convergence_lines(stats: list[dict]) -> list[str]:
    flagged = [s for s in stats if s["still_improving"]]
    measured = [s for s in stats if s["drop"] is not None]
    if not measured:
        return []
    rule = (f"A run counts as converged when its validation loss falls by at most {CONVERGENCE_DROP:g} nats over the "
            f"last {CONVERGENCE_WINDOW:.0%} of its steps (least-squares slope of the curve points there, times that "
            "span; mean over seeds); otherwise it is *still improving*: undertrained at this budget, and a published "
            "claim it takes part in cannot be *reproduced* here.")
    if not flagged:
        return ["## Convergence", "", rule + " Every point converged by this rule.", ""]
    names = ", ".join(f"`{s['point']}` ({-s['drop']:+.3f})" for s in flagged)
    return ["## Convergence", "", rule, "", f"Still improving ({len(flagged)} of {len(measured)}): {names}.", ""]


def _lr_lines(stats: list[dict]) -> list[str]:
    swept = [s for s in stats if s["sweep"]]
    if not swept:
        lrs = sorted({v for s in stats for v in s["lrs_used"]})
        return ["## Learning rate", "", f"Every point trained at lr {', '.join(f'{v:g}' for v in lrs)} (no "
                "learning-rate sweep: `lr_sweep.points=0`).", ""] if lrs else []
    sw = swept[0]["sweep"]
    head = ("## Learning rate per point", "",
            f"Each point's rate is chosen by a sweep over {len(sw['lrs'])} candidates, each trained "
            f"{sw['steps']} steps (the initialisation and data order of the grid's first seed) and scored on "
            f"{int(to_float(sw['tune_tokens']) or 0):,} tokens of *tune* documents, which the test documents never "
            "include (ablate.core.lr_sweep); the lowest tune loss wins. *edge*: the choice is the smallest or "
            "largest candidate, so the best rate may lie outside the candidates.", "")
    cands = sorted({float(v) for s in swept for v in s["sweep"]["lrs"]})
    lines = ["| point | lr | " + " | ".join(f"tune loss @ {c:g}" for c in cands) + " |",
             "|:--|--:|" + "--:|" * len(cands)]
    for s in swept:
        got = dict(zip((float(v) for v in s["sweep"]["lrs"]), s["sweep"]["losses"]))
        cells = []
        for c in cands:
            v = got.get(c)
            cells.append("—" if c not in got else "diverged" if to_float(v) is None else
                         (f"**{v:.4f}**" if s["lr"] is not None and abs(c - s["lr"]) < 1e-12 else f"{v:.4f}"))
        lines.append(f"| {s['point']} | {s['lr']:g}{' (edge)' if s['sweep']['at_edge'] else ''} | "
                     + " | ".join(cells) + " |")
    return [*head, *lines, ""]
