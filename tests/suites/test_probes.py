"""Retrieval probes: the multikey placement (no needle order singles the queried needle out), the chance level the
generator computes, intervals clustered by seed, the "not learned" note, and the probes at the small rung."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from ablate.core.evaluate import (MULTIKEY_SPREAD, Probe, _order_odds, multikey_heuristics, multikey_sequences,
                             multikey_window)
from ablate.analysis.stats import clustered_above_chance, clustered_proportion, wilson_interval

NEEDLE = re.compile(rb"([A-Z])=(\d+);")


def _order_heuristics(seqs, answers):
    """Accuracy of copying the first / the latest needle's value, read off the text of each sequence."""
    first = last = 0
    for seq, ans in zip(seqs, answers):
        text = bytes(seq)
        body = text[:text.rindex(b" ")]
        values = [m.group(2) for m in NEEDLE.finditer(body)]
        want = "".join(map(str, ans)).encode()
        first += values[0] == want
        last += values[-1] == want
    return first / len(seqs), last / len(seqs)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("length", [64, 256])
def test_no_needle_order_beats_chance_at_any_depth(depth, length):
    n = 1500
    seqs, answers = multikey_sequences(n, length, depth, 2, 4, np.random.default_rng(7))
    chance = Probe("multikey", 2, 4).chance_at(length, depth)
    first, last = _order_heuristics(seqs, answers)
    sd = (chance * (1 - chance) / n) ** 0.5
    assert first < chance + 4 * sd and last < chance + 4 * sd, (first, last, chance)
    # the query names one of the needles, and every sequence holds all of them
    for seq in seqs[:50]:
        text = bytes(seq)
        labels = [m.group(1) for m in NEEDLE.finditer(text[:text.rindex(b" ")])]
        assert len(labels) == 4 and text[text.rindex(b" ") + 1:text.rindex(b" ") + 2] in labels


def test_queried_needle_is_uniform_among_the_needles():
    ranks = np.empty(4000, dtype=np.int64)
    multikey_sequences(4000, 128, 1.0, 2, 4, np.random.default_rng(1), queried=ranks)
    counts = np.bincount(ranks, minlength=4) / len(ranks)
    assert np.all(np.abs(counts - 0.25) < 0.03), counts


def test_needles_sit_near_the_depth():
    length, digits, keys = 256, 2, 4
    filler = length + 1 - (keys * (3 + digits) + 3 + digits)
    for depth in (0.0, 0.5, 1.0):
        lo, hi = multikey_window(filler, depth)
        assert 0 <= lo <= hi <= filler and hi - lo == round(MULTIKEY_SPREAD * filler)
        assert lo <= depth * filler <= hi
        seqs, _ = multikey_sequences(20, length, depth, digits, keys, np.random.default_rng(0))
        for seq in seqs:
            text = bytes(seq)
            first = NEEDLE.search(text).start()
            last = [m.end() for m in NEEDLE.finditer(text[:text.rindex(b" ")])][-1]
            assert lo <= first and last <= hi + keys * (3 + digits)


def test_order_odds_are_exact():
    k, m = 4, 41
    uniform = np.full(m, 1 / m)
    first, last = _order_odds(uniform, uniform, k - 1)
    assert first == pytest.approx(1 / k) and last == pytest.approx(1 / k)
    # the placement reviewed in issue 19: the queried needle pinned at the end, the others uniform -> nearly always
    # the last (it shares the end with j others with probability C(3, j) q^j (1-q)^(3-j) and then wins 1/(j+1))
    pinned = np.zeros(m)
    pinned[-1] = 1.0
    first, last = _order_odds(pinned, uniform, k - 1)
    q = 1 / m
    assert last == pytest.approx(sum(math.comb(3, j) * q ** j * (1 - q) ** (3 - j) / (j + 1) for j in range(4)))
    assert last > 0.95 and first < 0.01
    rng = np.random.default_rng(0)  # and against a simulation of that placement
    others = rng.integers(0, m, size=(20000, 3))
    tie = rng.random((20000, 4))
    wins = ((others < m - 1) | ((others == m - 1) & (tie[:, 1:] < tie[:, :1]))).all(1)
    assert last == pytest.approx(wins.mean(), abs=0.01)


def test_chance_comes_from_the_generator():
    h = multikey_heuristics(64, 1.0, 2, 4)
    assert set(h) == {"random needle", "first needle", "latest needle", "random number"}
    assert h["random needle"] == pytest.approx(0.25 + 0.75 * 0.01)  # a wrong needle can hold the same value
    assert h["latest needle"] == pytest.approx(h["random needle"])
    p = Probe("multikey", 2, 4)
    assert p.chance_at(64, 1.0) == max(h.values())
    assert Probe("passkey", 3).chance_at(64, 1.0) == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Intervals clustered by seed


def test_clustered_proportion():
    c = clustered_proportion([58, 250, 0], [250, 250, 250])  # issue 19: sinusoidal at 64 tokens, 0.23/1.00/0.00
    assert c.mean == pytest.approx((58 / 250 + 1 + 0) / 3) and c.method == "t over seeds"
    pooled = wilson_interval(308, 750)
    assert c.lo < pooled[0] - 0.3 and c.hi > pooled[1] + 0.3  # the seeds disagree: the interval says so
    one = clustered_proportion([10], [50])
    assert (one.lo, one.hi) == wilson_interval(10, 50) and one.method == "wilson"
    same = clustered_proportion([250, 250, 250], [250, 250, 250])
    assert same.hi == 1.0 and same.lo == pytest.approx(wilson_interval(750, 750)[0])  # never zero width
    assert clustered_proportion([], []).method == "none"
    with pytest.raises(ValueError):
        clustered_proportion([3], [2])


def test_clustered_above_chance():
    assert clustered_above_chance([240, 245, 250], [250] * 3, 0.25)
    assert not clustered_above_chance([58, 250, 0], [250] * 3, 0.26)  # pooled 0.41 passes a binomial test
    assert not clustered_above_chance([70, 80, 60], [250] * 3, 0.2575)
    assert clustered_above_chance([13], [50], 0.2) is False and clustered_above_chance([18], [50], 0.2)
    assert not clustered_above_chance([], [], 0.2)


def _probe_rows(per_seed: dict[str, list[int]], trials=50, depths=(0.0, 0.5, 1.0), lens=(64, 128), chance=0.2575):
    rows = []
    for pos, ks in per_seed.items():
        for seed, k in enumerate(ks):
            for L in lens:
                for d in depths:
                    rows.append({"position": pos, "eval_len": L, "depth": d, "seed": seed, "trials": trials,
                                 "correct": k, "value": k / trials, "chance": chance + 0.01 * d, "keys": 4,
                                 "digits": 2, "metric": "multikey_acc", "status": "ok"})
    return pd.DataFrame(rows)


def test_probe_summary_is_clustered_by_seed():
    from ablate.suites.extrapolation.summary import probe_summary

    s = probe_summary(_probe_rows({"sinusoidal": [12, 50, 0], "rope": [50, 49, 50]}))
    sin = s[(s["position"] == "sinusoidal") & (s["eval_len"] == 64)].iloc[0]
    assert sin["seeds"] == 3 and sin["interval"] == "t over seeds" and sin["seed_correct"] == [36, 150, 0]
    assert sin["lo"] == 0.0 and sin["hi"] == 1.0
    assert sin["chance"] == pytest.approx(0.2575 + 0.005)  # mean of the per-depth chances
    one = probe_summary(_probe_rows({"rope": [40]}))
    assert one["interval"].iloc[0] == "wilson" and (one["lo"].iloc[0], one["hi"].iloc[0]) == wilson_interval(120, 150)


def test_probe_table_and_notes():
    from ablate.suites.extrapolation.claims import probe_notes
    from ablate.suites.extrapolation.summary import probe_summary
    from ablate.suites.extrapolation.tables import probe_table

    pk = _probe_rows({"rope": [1, 0, 0], "alibi": [0, 2, 1]})
    t = probe_table(pk)
    assert t["variant"].tolist() == ["rope", "alibi", "chance"] and t["64"].iloc[-1] == "0.26"
    notes = " ".join(probe_notes(probe_summary(pk), 0.25, ["rope", "alibi"]))
    assert "No variant learned the probe" in notes and "no claim is scored" in notes
    pk = _probe_rows({"rope": [50, 50, 49], "sinusoidal": [12, 50, 0]})
    notes = " ".join(probe_notes(probe_summary(pk), 0.25, ["rope", "sinusoidal"]))
    assert "`sinusoidal`" in notes and "`rope`" not in notes and "t-test over seeds" in notes


# ---------------------------------------------------------------------------------------------------------------
# End to end (micro preset) and the small rung


def test_rows_carry_the_chance_of_their_depth_and_the_report_draws_it(tmp_path):
    import ablate.suites.extrapolation as ex
    from ablate.store.results import read_rows, to_frame
    from ablate.plan.runner import RunOptions

    opts = RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu", progress=False, seeds=2,
                      overrides=("positions=alibi", "rope_scalings=", "passkey=true", "probe.tasks=multikey",
                                 "probe.steps=5"))
    rows = [r for r in read_rows(ex.run(opts)) if r["metric"] == "multikey_acc"]
    assert rows and {r["seed"] for r in rows} == {0, 1}
    for r in rows:
        assert r["chance"] == pytest.approx(Probe("multikey", r["digits"], r["keys"]).chance_at(r["eval_len"],
                                                                                                r["depth"]))
    ex.report(to_frame(tmp_path / "extrapolation" / "cpu-micro.jsonl"), tmp_path / "rep")
    md = (tmp_path / "rep" / "extrapolation_multikey.md").read_text()
    assert "| chance" in md and "t-interval over seeds" in md and "Wilson interval" in md
    assert "first or the latest" in md


def test_probes_run_at_the_small_rung():
    from ablate.suites.extrapolation.config import PRESETS, resolve
    from ablate.suites.extrapolation.plan import plan_jobs  # noqa: F401  (the plan reads cfg.passkey)

    small = PRESETS["small"]
    assert small.passkey and "passkey" in small.probe.tasks
    assert small.probe.steps is not None and small.probe.steps <= small.train.steps
    resolve("small", [])  # the preset passes its own checks
    # multikey stays one setting away (it is not learned at these sizes, so small leaves it out by default)
    assert "multikey" in resolve("small", ["probe.tasks=passkey,multikey"]).probe.tasks
