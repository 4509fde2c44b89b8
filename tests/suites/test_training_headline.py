"""The training page opens with its headline: each published claim once, with the verdict its comparisons share
(or *mixed* when they disagree), from the committed results (no training)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.suites.training.reporting import claim_tally, headline_lines

ROOT = Path(__file__).resolve().parents[2]


def test_claims_are_tallied_per_claim_not_per_comparison():
    f = pd.DataFrame({"published claim": ["pre-norm", "pre-norm", "GLU", "RMSNorm"],
                      "verdict": ["reproduced", "not reproduced", "not testable", "reproduced"]})
    line, per = claim_tally(f)
    assert per == {"pre-norm": "mixed (reproduced: 1, not reproduced: 1)", "GLU": "not testable",
                   "RMSNorm": "reproduced"}
    assert line.startswith("3 published claims: 1 reproduced, 0 not reproduced, 0 inconclusive, 1 not testable, "
                           "1 mixed (from 4 comparisons;")
    lines = headline_lines(f)
    assert lines[0] == "## Headline findings" and "- pre-norm: **mixed (reproduced: 1, not reproduced: 1)**" in lines
    assert headline_lines(f.iloc[0:0]) == []


def test_committed_training_pages_open_with_their_headline():
    for page in sorted((ROOT / "reports" / "training").glob("*/index.md")):
        text = page.read_text(encoding="utf-8")
        if "## Published claims vs this run" not in text:
            continue
        assert text.index("## Headline findings") < text.index("## Setup"), page
        head = text.split("## Headline findings")[1].split("## Setup")[0]
        assert " published claim" in head and "(from " in head, page
