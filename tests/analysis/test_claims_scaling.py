"""RoPE-scaling claims (ablate.analysis.claims_scaling): fine-tuned (YaRN Table 1) and deployed (fixed s, temperature) claims
read the right series off the rows and come out as the numbers say."""

from __future__ import annotations

import random

from ablate.analysis.claims import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Context
from ablate.analysis.claims_scaling import scaling_cells, scaling_claims

L0 = 64
LENS = [64, 128, 256, 512, 1024]


def _rows(series_ppl, seeds=(0, 1, 2), jitter=0.01, rng=None):
    """Rows for ``{(position, mode, s, ft_steps): [ppl per length]}`` with a small per-seed noise."""
    rng = rng or random.Random(0)
    out = []
    for (pos, mode, s, ft), ppls in series_ppl.items():
        for seed in seeds:
            for L, p in zip(LENS, ppls):
                r = {"metric": "ppl", "status": "ok", "position": pos, "trained_position": "rope", "seed": seed,
                     "eval_len": L, "value": p * (1 + jitter * rng.uniform(-1, 1))}
                if mode:
                    r["rope_scale_mode"] = mode
                    r["rope_scale"] = s if mode == "fixed" else L / L0
                if ft:
                    r.update(finetune_steps=ft, finetune_len=int(s * L0), rope_scale=s, rope_scale_mode="fixed")
                out.append(r)
    return out


GOOD = {
    ("rope", None, None, 0): [10, 14, 20, 30, 40],
    # fine-tuned at s=4 (window 256): inside PI ~ YaRN < NTK, past it YaRN < NTK < PI
    ("rope_pi", "fixed", 4.0, 50): [10.2, 10.0, 9.8, 16.0, 25.0],
    ("rope_ntk", "fixed", 4.0, 50): [10.1, 10.5, 10.6, 13.0, 18.0],
    ("rope_yarn", "fixed", 4.0, 50): [10.1, 10.0, 9.85, 12.0, 16.0],
    # deployed, fixed s=4, not fine-tuned
    ("rope_pi", "fixed", 4.0, 0): [13.0, 13.5, 14.0, 22.0, 32.0],
    ("rope_ntk", "fixed", 4.0, 0): [10.3, 10.8, 11.5, 15.0, 21.0],
    ("rope_yarn", "fixed", 4.0, 0): [10.4, 10.6, 11.0, 14.0, 20.0],
    ("rope_yarn", "ideal", None, 0): [10.0, 10.6, 11.0, 12.0, 13.0],
    ("rope_yarn_notemp", "ideal", None, 0): [10.0, 11.5, 12.5, 14.0, 16.0],
}


def _by_claim(results):
    return {r.claim.split(" (")[0]: r for r in results}


def test_series_are_kept_apart():
    cells, info = scaling_cells(_rows(GOOD))
    labels = {k for k, _ in cells}
    assert {"rope", "rope_pi s=4 ft50@256", "rope_pi s=4", "rope_yarn", "rope_yarn_notemp"} <= labels
    assert info["rope_pi s=4 ft50@256"].finetune_steps == 50 and info["rope_pi s=4"].finetune_steps == 0
    assert info["rope_yarn"].mode == "ideal" and info["rope_yarn s=4"].scale == 4.0
    assert all(len(c.ppl) == 3 for c in cells.values())  # 3 seeds each: no series overwrote another


def test_claims_reproduce_on_data_that_shows_them():
    res = scaling_claims(_rows(GOOD), L0)
    got = _by_claim(res)
    want = ["Inside the fine-tuned window PI and YaRN are on par", "Inside the fine-tuned window PI and YaRN beat "
            "NTK-aware", "Past the fine-tuned window YaRN beats NTK-aware", "Past the fine-tuned window NTK-aware "
            "beats PI", "NTK-aware scaling at one fixed s=4, not fine-tuned, keeps perplexity below plain RoPE past "
            "the training length", "YaRN at one fixed s=4, not fine-tuned, keeps perplexity below plain RoPE past the "
            "training length", "PI at one fixed s=4 without fine-tuning hurts: NTK-aware at the same s does better",
            "YaRN's temperature lowers perplexity past the training length"]
    assert set(got) == set(want), set(got) ^ set(want)
    for name, r in got.items():
        assert r.verdict == REPRODUCED, (name, r.verdict, r.detail)
        # every anchor says whether the published models were fine-tuned
        assert r.source.endswith(": not fine-tuned") == ("the fine-tuned window" not in name), name
        assert r.source.endswith("fine-tuned")
    assert "8,192" in got["Inside the fine-tuned window PI and YaRN are on par"].published
    assert got["Past the fine-tuned window YaRN beats NTK-aware"].by_length.count("✓") == 2  # 8x and 16x


def test_claims_fail_on_data_that_contradicts_them_and_gate_on_an_undertrained_base():
    bad = dict(GOOD)
    bad[("rope_yarn", "fixed", 4.0, 50)] = [10.1, 12.0, 13.5, 18.0, 26.0]  # YaRN worse than NTK, off PI inside
    bad[("rope_yarn_notemp", "ideal", None, 0)] = [10.0, 10.0, 10.0, 11.0, 12.0]  # the temperature hurts
    got = _by_claim(scaling_claims(_rows(bad), L0))
    assert got["Inside the fine-tuned window PI and YaRN are on par"].verdict == NOT_REPRODUCED
    assert got["Past the fine-tuned window YaRN beats NTK-aware"].verdict == NOT_REPRODUCED
    assert got["YaRN's temperature lowers perplexity past the training length"].verdict == NOT_REPRODUCED
    gated = _by_claim(scaling_claims(_rows(GOOD), L0, Context(undertrained={"rope": 1.3})))
    assert all(r.verdict == NOT_TESTABLE for r in gated.values())
    assert all("undertrained" in r.caveats for r in gated.values())


def test_nothing_is_claimed_without_the_series():
    only_rope = {k: v for k, v in GOOD.items() if k[0] == "rope"}
    assert scaling_claims(_rows(only_rope), L0) == []


def test_claims_read_a_relabelled_frame_the_same():
    """The report hands the claims its protocol groups, whose positions are series labels already."""
    import pandas as pd

    from ablate.suites.extrapolation.labels import relabel

    rows = _rows(GOOD)
    df = relabel(pd.DataFrame(rows))
    assert "rope_pi s=4 ft50@256" in set(df["position"])
    a = [(r.claim, r.verdict, r.ours) for r in scaling_claims(rows, L0)]
    b = [(r.claim, r.verdict, r.ours) for r in scaling_claims(df.to_dict("records"), L0)]
    assert a == b and len(a) == 8
