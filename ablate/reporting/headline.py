"""The opening of a report page (no torch): its headline findings, and the published claims tallied once each.

    claim_tally([("pre-norm trains better", "reproduced"), ("pre-norm trains better", "not reproduced")])
    # -> ('1 published claim: 0 reproduced, ..., 1 mixed (from 2 comparisons; ...)', {'pre-norm ...': 'mixed (...)'})

A claim checked by several comparisons (several variants, lengths or grids) is counted once: with the verdict its
comparisons share, else *mixed* with the count of each verdict.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["VERDICTS", "claim_verdicts", "claim_tally", "headline_lines", "why_lines"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not testable")


def claim_verdicts(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Claim → its verdict (first-seen order): the verdict its comparisons share, else ``mixed (a: n, b: m)``."""
    seen: dict[str, list[str]] = {}
    for claim, verdict in pairs:
        seen.setdefault(str(claim), []).append(str(verdict))
    out = {}
    for claim, vs in seen.items():
        uniq = list(dict.fromkeys(vs))
        out[claim] = uniq[0] if len(uniq) == 1 else "mixed (" + ", ".join(f"{v}: {vs.count(v)}" for v in uniq) + ")"
    return out


def claim_tally(pairs: Iterable[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """One line tallying the published claims (each once) and the comparisons behind them; the verdict per claim."""
    pairs = list(pairs)
    per = claim_verdicts(pairs)
    kinds = [v if v in VERDICTS else "mixed" for v in per.values()]
    parts = [f"{kinds.count(v)} {v}" for v in VERDICTS + ("mixed",) if kinds.count(v) or v in VERDICTS]
    line = (f"{len(per)} published claim{'s' if len(per) != 1 else ''}: {', '.join(parts)} "
            f"(from {len(pairs)} comparison{'s' if len(pairs) != 1 else ''}; a claim is *mixed* when its "
            "comparisons disagree).")
    return line, per


def headline_lines(pairs: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> list[str]:
    """``## Headline findings``: the claim tally, each claim with its verdict, then ``extra`` bullet lines; [] when
    there is nothing to say."""
    pairs, extra = list(pairs), list(extra)
    if not pairs and not extra:
        return []
    out = ["## Headline findings", ""]
    if pairs:
        line, per = claim_tally(pairs)
        out += [line, "", *[f"- {c}: **{v}**" for c, v in per.items()]]
    return out + list(extra) + [""]


def why_lines(claims) -> list[str]:
    """One line per claim (:class:`ablate.analysis.claims.ClaimResult`) saying why its verdict came out as it did
    (the detail and the caveats in words), under a "Why each verdict" heading."""
    out = ["#### Why each verdict", ""]
    for c in claims:
        bits = [c.detail] + ([f"caveats: {c.caveats}"] if c.caveats else [])
        out.append(f"* **{c.claim}** — *{c.verdict}*: " + "; ".join(b for b in bits if b) + ".")
    return out
