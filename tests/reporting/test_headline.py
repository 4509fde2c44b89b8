"""Report pages open with their headline findings; published claims are tallied once each (the verdict their
comparisons share, or *mixed* when they disagree). From tables and the committed reports (no training)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ablate.reporting.headline import claim_tally, headline_lines
from ablate.suites.training.reporting import headline_lines as training_headline

ROOT = Path(__file__).resolve().parents[2]


def test_claims_are_tallied_per_claim_not_per_comparison():
    pairs = [("pre-norm", "reproduced"), ("pre-norm", "not reproduced"), ("GLU", "not testable"),
             ("RMSNorm", "reproduced")]
    line, per = claim_tally(pairs)
    assert per == {"pre-norm": "mixed (reproduced: 1, not reproduced: 1)", "GLU": "not testable",
                   "RMSNorm": "reproduced"}
    assert line.startswith("3 published claims: 1 reproduced, 0 not reproduced, 0 inconclusive, 1 not testable, "
                           "1 mixed (from 4 comparisons;")
    lines = headline_lines(pairs)
    assert lines[0] == "## Headline findings" and "- pre-norm: **mixed (reproduced: 1, not reproduced: 1)**" in lines
    assert headline_lines([]) == []
    f = pd.DataFrame({"published claim": [c for c, _ in pairs], "verdict": [v for _, v in pairs]})
    assert training_headline(f) == lines and training_headline(f.iloc[0:0]) == []


PAGES = [("training/*/index.md", "## Setup"), ("extrapolation/*/extrapolation_index.md", "## Protocol"),
         ("latency/*/latency_index.md", "## Attention kernels")]


@pytest.mark.parametrize("pattern,first_section", PAGES, ids=[p[0].split("/")[0] for p in PAGES])
def test_committed_pages_open_with_their_headline(pattern, first_section):
    pages = sorted((ROOT / "reports").glob(pattern))
    assert pages, pattern
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if first_section not in text or ("Published claims" not in text and "latency" not in pattern):
            continue
        assert "## Headline findings" in text, page
        assert text.index("## Headline findings") < text.index(first_section), page
        head = text.split("## Headline findings")[1].split(first_section)[0]
        if "latency" in pattern:
            assert "fastest exact kernel" in head, page
        else:
            assert " published claim" in head and "(from " in head, page
