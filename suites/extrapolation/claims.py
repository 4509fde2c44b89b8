"""What the rows say, torch-free: weak baselines (undertrained variants), the reading notes of the
report, probes a variant did not learn, and the published claims tested on this run (:mod:`ablate.analysis.claims`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ablate.reporting.headline import claim_tally, why_lines
from ablate.analysis.claims import Context, claims_frame, extrapolation_claims
from ablate.analysis.claims_scaling import scaling_claims
from ablate.analysis.stats import above_chance, clustered_above_chance
from ablate.reporting.tables import to_markdown, write_table

from .constants import FAIR_TOL
from .summary import is_number, variant_order, claim_cells, ppl_summary


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


def _reference_notes(summary, rows, train_len: int) -> list[str]:
    """Where variants fall behind the two references: a context-free unigram model (the rows' ``unigram_loss``) and
    NoPE (``none``), past train_len."""
    out = []
    if "unigram_loss" in rows.columns:
        u = [v for v in rows["unigram_loss"].tolist() if is_number(v)]
        if u:
            uni = float(np.exp(np.median(u)))
            past = summary[(summary["eval_len"] > train_len) & np.isfinite(summary["mean"])]
            worse = {}
            for r in past.itertuples():
                if r.mean > uni:
                    worse.setdefault(str(r.position), []).append(f"{int(r.eval_len) // train_len}×")
            line = (f"* **unigram reference**: a context-free unigram model (add-one counts of the training split) "
                    f"scores perplexity {uni:.2f} on the same documents.")
            if worse:
                line += " Worse than it past train_len: " + "; ".join(
                    f"`{p}` at {', '.join(ls)}" for p, ls in worse.items()) + " (these use their context harmfully)."
            out.append(line)
    if "none" in set(summary["position"]):
        nope = summary[summary["position"] == "none"].set_index("eval_len")["mean"]
        beat = {}
        for r in summary[(summary["eval_len"] > train_len) & (summary["position"] != "none")].itertuples():
            if r.eval_len in nope.index and np.isfinite(r.mean) and r.mean > nope[r.eval_len]:
                beat.setdefault(str(r.position), []).append(f"{int(r.eval_len) // train_len}×")
        if beat:
            out.append("* **NoPE reference** (`none`, no position signal) has lower perplexity than "
                       + "; ".join(f"`{p}` at {', '.join(ls)}" for p, ls in beat.items()) + ".")
    return out


def reading_notes(summary, train_len: int, flags: dict[str, float], tol: float, rows=None) -> list[str]:
    """Reading notes: degenerate setups the rows carry (caveats), weak baselines, and method effects."""
    notes = []
    for pos in variant_order(summary):  # the caveat at the longest length that has one says the most
        s = summary[(summary["position"] == pos) & (summary["caveat"] != "")] if "caveat" in summary else summary[:0]
        if len(s):
            notes.append(f"* **caveat** `{pos}`: {s.sort_values('eval_len')['caveat'].iloc[-1]}")
    for pos, ratio in flags.items():
        notes.append(f"* **undertrained** `{pos}`: its perplexity at train_len is ×{ratio:.2f} the best trained "
                     f"variant's (tolerance ×{1 + tol:.2f}); its extrapolation is that of a weaker model.")
    notes += _reference_notes(summary, rows, train_len) if rows is not None else []
    bounded = [p for p in variant_order(summary) if _table_bound(summary, p, train_len)]
    for p in bounded:
        if not any(f"`{p}`" in n for n in notes):
            notes.append(f"* `{p}` has a table of train_len rows, as in the papers: longer positions have no "
                         "parameters (—).")
    return (["### Notes", ""] + notes + [""]) if notes else []


def _learned(row, chance: float) -> bool:
    """Is this summary cell above chance? Clustered by seed (:func:`ablate.analysis.stats.clustered_above_chance`): the one-sided
    binomial test with one seed; with several, a one-sided t-test over the per-seed accuracies and the binomial test
    of the pooled trials, both at 5%."""
    if "seed_correct" in row and isinstance(row["seed_correct"], list):
        return clustered_above_chance(row["seed_correct"], row["seed_trials"], chance)
    return above_chance(int(row["correct"]), int(row["trials"]), chance)


def probe_notes(summ, chance: float, order: list[str]) -> list[str]:
    """Variants that did not learn the probe: at the shortest length (train_len) their accuracy is not above chance
    (the summary's ``chance`` at that length, else ``chance``; :func:`_learned`), so their accuracy past it says
    nothing about extrapolation. When no variant learned it, the note says so and the probe scores no claim."""
    shortest = int(summ["eval_len"].min())
    at = summ[summ["eval_len"] == shortest]
    level = float(at["chance"].mean()) if "chance" in at and at["chance"].notna().any() else chance
    failed = [p for p in order if len(at[at["position"] == p]) and
              not _learned(at[at["position"] == p].iloc[0], level)]
    if not failed:
        return []
    test = ("one-sided t-test over seeds and binomial test of the pooled trials, 5%"
            if int(at["seeds"].max()) >= 2 else "one-sided binomial test, 5%")
    if len(failed) == len(at):
        return [f"**No variant learned the probe:** none retrieves above chance ({level:.2g}) at {shortest} tokens, "
                f"where the models were trained ({test}). The probe is too hard for this model and budget: this table "
                f"says nothing about extrapolation, and no claim is scored on it.", ""]
    return [f"**Not learned** at {shortest} tokens (not above chance {level:.2g}, {test}): "
            + ", ".join(f"`{p}`" for p in failed) + "; their accuracy past it says nothing about extrapolation.", ""]


def claims_section(g, train_len: int, line: str, out_dir: Path, slug: str,
                   verdicts: list | None = None, summary=None) -> tuple[list[Path], list[str]]:
    """The published claims tested on one protocol group's perplexity rows: (table files, index lines); nothing
    when no claim applies to the variants and lengths measured. ``verdicts``: a list each (claim, verdict) is
    appended to (the page's headline tallies them per claim); ``summary``: ``ppl_summary(g)``, when the caller has it."""
    summary = ppl_summary(g) if summary is None else summary
    trained = {str(r.position): str(r.trained) for r in summary.itertuples()} if not summary.empty else {}
    first = g.iloc[0] if len(g) else {}
    mode = str(first.get("mode", "nonoverlap")) if len(g) else "nonoverlap"
    stride = first.get("stride") if len(g) else None
    protocol = (f"sliding window, stride {int(stride)}" if mode == "sliding" and is_number(stride)
                else "non-overlapping windows")
    bca = first.get("bca_block") if len(g) else None
    ctx = Context(trained=trained, undertrained=undertrained(summary, train_len, FAIR_TOL), protocol=protocol,
                  mode=mode, bca_block=int(bca) if is_number(bca) else None)
    cells = claim_cells(g)
    claims = extrapolation_claims(cells, train_len, ctx) + scaling_claims(g.to_dict("records"), train_len, ctx)
    if not claims:
        return [], []
    cf = claims_frame(claims)
    if verdicts is not None:
        verdicts += list(zip(cf["claim"].astype(str), cf["verdict"].astype(str)))
    what = ("seeds × held-out documents (two-way random effects)" if all(c.doc_tokens for c in cells.values())
            else "seeds only (these rows carry no per-document losses: the text is held fixed)")
    md3, tex3 = write_table(cf, out_dir / f"extrapolation_claims{slug}",
                            caption=f"Published claims vs this run ({line}); verdicts from 95% intervals over {what}; "
                                    "a claim covering several lengths or rivals holds only at every one (Holm); a "
                                    "comparison whose variants are undertrained or off parity at train_len is not "
                                    "testable (see ablate.analysis.claims, docs/claims.md).")
    tally = claim_tally(zip(cf["claim"].astype(str), cf["verdict"].astype(str)))[0]
    return [md3, tex3], ["### Published claims vs this run", "", tally, "",
                         to_markdown(cf), "", *why_lines(claims), ""]
