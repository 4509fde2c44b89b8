"""The report (no torch): per (device, preset, grid) the summary and findings tables, the figures and an
``index.md``."""

from __future__ import annotations

from pathlib import Path

from ablate.atomic import write_text
from ablate.claims import LOSS_MARGIN
from ablate.tables import to_markdown, write_table

from .aggregate import _group_dirs, point_stats
from .constants import SUITE
from .figures import fig_curves, fig_pareto, palette
from .findings import findings_table
from .tables import _setup_lines, summary_table


def report(df, out_dir: Path) -> list[Path]:
    """Per (device, preset, grid): ``training_table`` (.md/.tex), ``training_findings`` (.md/.tex),
    ``training_curves`` and ``training_pareto`` (.png/.svg) and ``index.md`` in ``out_dir/<device>-<preset>/``."""
    out_dir = Path(out_dir)
    if "suite" in df.columns:
        df = df[df["suite"] == SUITE]
    written: list[Path] = []
    if df.empty or "point" not in df.columns:
        return written
    for name, g in _group_dirs(df):
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
                                      "within ±0.02 / inconclusive), bits per byte, parameters, training tokens/s.",
                              floatfmt={"bpb": ".4f", "tokens/s": ",.0f", "peak mem (MiB)": ".1f", "MFU (%)": ".1f"})
        written += [md, tex]
        findings = findings_table(g)
        if not findings.empty:
            fmd, ftex = write_table(findings, folder / "training_findings",
                                    caption="Published claims checked on this grid (Δ = val loss difference, "
                                            "negative = the change helps; paired 95% interval in brackets; verdict "
                                            "from that interval and a ±0.02-nat equivalence margin).")
            written += [fmd, ftex]

        pal = palette([s["point"] for s in stats])
        curve_files = fig_curves(g, stats, pal, folder)
        written += curve_files
        curves_ok = bool(curve_files)
        pts = [s for s in stats if s["val"].mean is not None and s["tokens_per_s"]]
        if pts:
            pareto_files, front_names = fig_pareto(pts, pal, folder)
            written += pareto_files
        else:
            front_names = []

        index = ["<!-- ablate:training -->", f"# Training ablations: {name}", "",
                 "Each grid point trains the same small byte-level LM from scratch under the same budget and data "
                 "order per seed, then is scored on the same held-out tokens. Rows compare against the point named "
                 "in *vs*: `original+X` adds one modern change to the 2017 block, `modern-X→Y` removes one from "
                 "today's block.", "", "## Setup", "", *_setup_lines(g), "",
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
        if curves_ok:
            index += ["## Loss curves", "", "![validation loss curves](training_curves.png)", ""]
        if pts:
            index += ["## Quality vs cost", "", f"Pareto-optimal (throughput vs loss): {', '.join(front_names)}.", "",
                      "![quality vs cost](training_pareto.png)", ""]
        if not findings.empty:
            counts = findings["verdict"].value_counts()
            tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "not reproduced",
                                                                         "inconclusive"))
            index += ["## Published claims vs this run", "", f"{tally} (of {len(findings)} comparisons).", "",
                      to_markdown(findings), ""]
        index += ["## Files", "", "`training_table.md` / `.tex`, `training_findings.md` / `.tex`, "
                  "`training_curves.png` / `.svg`, `training_pareto.png` / `.svg`; the rows are in the results JSONL "
                  "(curves as lists in `curve.*`).", ""]
        idx = folder / "index.md"
        write_text(idx, "\n".join(index).rstrip() + "\n")
        written.append(idx)
    return written
