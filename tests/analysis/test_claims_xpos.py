"""The xPos claim of the extrapolation claims (`ablate.analysis.claims`): lower perplexity than RoPE past the
training length, every length under Holm, behind the same parity gate as the other position comparisons."""

from __future__ import annotations

from ablate.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Context,
                                    extrapolation_claims)

CLAIM = "xPos has lower perplexity than RoPE past the training length"
LENS = (64, 128, 256)
SEEDS = (0, 1, 2, 3)


def _cells(rope, xpos, noise=0.003):
    out = {}
    for pos, vals in (("rope", rope), ("xpos", xpos)):
        for L, v in zip(LENS, vals):
            out[(pos, L)] = {s: v * (1 + noise * ((s * 7 + L) % 5 - 2)) for s in SEEDS}
    return out


def _claim(cells, ctx=None):
    (row,) = [r for r in extrapolation_claims(cells, 64, ctx) if r.claim == CLAIM]
    return row


def test_xpos_below_rope_past_train_len_is_reproduced_and_the_reverse_is_not():
    row = _claim(_cells([6.0, 9.0, 14.0], [6.0, 6.6, 7.2]))
    assert row.verdict == REPRODUCED and "Holm over 2 tests" in row.detail and row.by_length.count("✓") == 2
    assert "blockwise" in row.caveats
    assert _claim(_cells([6.0, 6.6, 7.2], [6.0, 9.0, 14.0])).verdict == NOT_REPRODUCED


def test_xpos_below_at_one_length_only_is_not_reproduced_or_inconclusive():
    row = _claim(_cells([6.0, 9.0, 7.0], [6.0, 6.6, 7.0], noise=0.05))
    assert row.verdict in (INCONCLUSIVE, NOT_REPRODUCED) and row.verdict != REPRODUCED


def test_xpos_off_parity_at_train_len_is_not_testable():
    row = _claim(_cells([6.0, 9.0, 14.0], [7.0, 7.2, 7.5]))
    assert row.verdict == NOT_TESTABLE and "measured: reproduced" in row.detail and "parity gate" in row.caveats
    under = _claim(_cells([6.0, 9.0, 14.0], [6.0, 6.6, 7.2]), Context(undertrained={"xpos": 1.2}))
    assert under.verdict == NOT_TESTABLE and "undertrained" in under.caveats


def test_no_xpos_claim_without_both_variants_past_train_len():
    cells = {k: v for k, v in _cells([6.0, 9.0, 14.0], [6.0, 6.6, 7.2]).items() if k != ("xpos", 256)}
    assert CLAIM not in {r.claim for r in extrapolation_claims(cells, 64)}
