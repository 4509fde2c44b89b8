"""What the rows say, torch-free: weak baselines (undertrained variants), the reading notes of the
report, probes a variant did not learn, and the published claims tested on this run (:mod:`ablate.claims`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ablate.claims import claims_frame, extrapolation_claims
from ablate.stats import above_chance
from ablate.tables import to_markdown, write_table

from .summary import _variant_order, per_seed_ppl


def undertrained(summary, train_len: int, tol: float = 0.10) -> dict[str, float]:
    """Trained variants whose perplexity at train_len exceeds the best trained variant's by more than ``tol``:
    ``{variant: ratio to the best}``. Such a baseline is too weak for its extrapolation to mean much."""
    at = summary[(summary["eval_len"] == train_len) & (summary["position"] == summary["trained"])
                 & np.isfinite(summary["mean"])]
    if at.empty:
        return {}
    best = float(at["mean"].min())
    return {str(r.position): float(r.mean) / best for r in at.itertuples() if r.mean > (1.0 + tol) * best}


def _table_bound(summary, pos: str, train_len: int) -> bool:
    """The rows say ``pos`` has positions only up to train_len: ok there, ``unsupported`` at every longer length
    (a learned table; read off the rows, so the report needs no registry and no torch)."""
    s = summary[summary["position"] == pos]
    at, past = s[s["eval_len"] == train_len], s[s["eval_len"] > train_len]
    return bool(len(at) and (at["status"] == "ok").all() and len(past) and (past["status"] == "unsupported").all())


def _notes(summary, train_len: int, flags: dict[str, float], tol: float) -> list[str]:
    """Reading notes: degenerate setups the rows carry (caveats), weak baselines, and method effects."""
    notes = []
    for pos in _variant_order(summary):  # the caveat at the longest length that has one says the most
        s = summary[(summary["position"] == pos) & (summary["caveat"] != "")] if "caveat" in summary else summary[:0]
        if len(s):
            notes.append(f"* **caveat** `{pos}`: {s.sort_values('eval_len')['caveat'].iloc[-1]}")
    for pos, ratio in flags.items():
        notes.append(f"* **undertrained** `{pos}`: its perplexity at train_len is ×{ratio:.2f} the best trained "
                     f"variant's (tolerance ×{1 + tol:.2f}); its extrapolation is that of a weaker model.")
    bounded = [p for p in _variant_order(summary) if _table_bound(summary, p, train_len)]
    for p in bounded:
        if not any(f"`{p}`" in n for n in notes):
            notes.append(f"* `{p}` has a table of train_len rows, as in the papers: longer positions have no "
                         "parameters (—).")
    return (["### Notes", ""] + notes + [""]) if notes else []


def _probe_notes(summ, chance: float, order: list[str]) -> list[str]:
    """Variants that did not learn the probe: at the shortest length (train_len) their accuracy is not above chance
    by a one-sided exact binomial test, so their accuracy past it says nothing about extrapolation."""
    shortest = int(summ["eval_len"].min())
    at = summ[summ["eval_len"] == shortest]
    failed = [p for p in order if len(at[at["position"] == p]) and
              not above_chance(int(at[at["position"] == p]["correct"].iloc[0]),
                               int(at[at["position"] == p]["trials"].iloc[0]), chance)]
    if not failed:
        return []
    if len(failed) == len(at):
        return [f"**Not learned:** no variant retrieves above chance ({chance:.2f}) at {shortest} tokens, where the "
                f"models were trained (one-sided binomial test, 5%): the probe is too hard for this model and budget, "
                f"and this table says nothing about extrapolation.", ""]
    return [f"**Not learned** at {shortest} tokens (not above chance {chance:.2g}, one-sided binomial test, 5%): "
            + ", ".join(f"`{p}`" for p in failed) + "; their accuracy past it says nothing about extrapolation.", ""]

def claims_section(g, train_len: int, line: str, out_dir: Path, slug: str) -> tuple[list[Path], list[str]]:
    """The published claims tested on one protocol group's perplexity rows: (table files, index lines); nothing
    when no claim applies to the variants and lengths measured."""
    claims = extrapolation_claims(per_seed_ppl(g), train_len)
    if not claims:
        return [], []
    cf = claims_frame(claims)
    md3, tex3 = write_table(cf, out_dir / f"extrapolation_claims{slug}",
                            caption=f"Published claims vs this run ({line}); verdicts from 95% intervals over "
                                    "seeds (see ablate.claims).")
    counts = cf["verdict"].value_counts()
    tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "not reproduced", "inconclusive"))
    return [md3, tex3], ["### Published claims vs this run", "", f"{tally} (of {len(cf)}).", "", to_markdown(cf), ""]
