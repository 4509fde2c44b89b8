"""The MQAR generator against the reference's definition (zoology/data/multiquery_ar.py), on fresh seeds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ablate.errors import ConfigError
from ablate.suites.recall.data import IGNORE, answer_distance, gap_probs, multiquery_ar


def naive_mqar(rng: np.random.Generator, vocab: int, n: int, seq_len: int, kv: int, power_a: float):
    """The reference's algorithm written plainly, one example at a time: sequential draws without replacement."""
    half, context = vocab // 2, 2 * kv
    space = (seq_len - context) // 2
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    p = p / p.sum()
    xs, ys = [], []
    for _ in range(n):
        keys = rng.choice(np.arange(1, half), size=kv, replace=False)
        vals = rng.choice(np.arange(half, vocab), size=kv, replace=False)
        gaps = rng.choice(np.arange(space), size=kv, replace=False, p=p)
        x = np.zeros(seq_len, dtype=np.int64)
        y = np.full(seq_len, IGNORE, dtype=np.int64)
        for i in range(kv):
            x[2 * i], x[2 * i + 1] = keys[i], vals[i]
            x[context + 2 * gaps[i]] = keys[i]
            y[context + 2 * gaps[i]] = vals[i]
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


def test_documented_example_layout():
    # the reference docstring's example (2 pairs, length 16, no random fill); its vocab_size=12 fails the reference's
    # own `assert vocab_size > input_seq_len`, so 20 here (keys from [1, 10), values from [10, 20))
    seed = int(np.random.SeedSequence().entropy % 2**32)
    b = multiquery_ar(20, 200, 16, 2, seed, random_non_queries=False)
    assert b.inputs.shape == b.labels.shape == (200, 16)
    for x, y in zip(b.inputs, b.labels):
        keys, vals = x[0:4:2], x[1:4:2]
        assert ((1 <= keys) & (keys < 10)).all() and ((10 <= vals) & (vals < 20)).all()
        assert len(set(keys)) == 2 and len(set(vals)) == 2
        answers = np.flatnonzero(y != IGNORE)
        assert len(answers) == 2 and ((answers - 4) % 2 == 0).all() and (answers >= 4).all()
        for pos in answers:  # the query is a key; its label is that key's value
            i = list(keys).index(x[pos])
            assert y[pos] == vals[i]
        rest = np.setdiff1d(np.arange(4, 16), answers)
        assert (x[rest] == 0).all()


def test_matches_the_reference_distribution_on_fresh_seeds():
    vocab, n, seq_len, kv = 40, 3000, 32, 4
    b = multiquery_ar(vocab, n, seq_len, kv, np.random.SeedSequence().entropy, random_non_queries=False)
    _, ry = naive_mqar(np.random.default_rng(np.random.SeedSequence().entropy), vocab, n, seq_len, kv, 0.01)
    # which query slots are used: the weighted draw without replacement, same inclusion frequencies
    ours = np.bincount(((b.query_pos - 2 * kv) // 2).ravel(), minlength=12) / n
    ref = np.bincount(((np.argwhere(ry != IGNORE)[:, 1] - 2 * kv) // 2), minlength=12) / n
    assert np.abs(ours - ref).max() < 0.05, (ours, ref)
    assert ours[0] > ours[-1] * 2  # power law: short gaps are likelier
    # keys uniform over [1, V/2), values over [V/2, V)
    kf = np.bincount(b.inputs[:, 0:2 * kv:2].ravel(), minlength=vocab)
    assert kf[0] == 0 and kf[vocab // 2:].sum() == 0
    assert kf[1:vocab // 2].min() > 0.8 * kf[1:vocab // 2].mean()
    vf = np.bincount(b.inputs[:, 1:2 * kv:2].ravel(), minlength=vocab)
    assert vf[:vocab // 2].sum() == 0 and vf[vocab // 2:].min() > 0.8 * vf[vocab // 2:].mean()
    # distinct within each example; every label is the value paired with the queried key
    assert all(len(set(r)) == kv for r in b.inputs[:, 0:2 * kv:2])
    rows, cols = np.nonzero(b.labels != IGNORE)
    assert len(rows) == n * kv
    pair = {(r, b.inputs[r, 2 * i]): b.inputs[r, 2 * i + 1] for r in range(n) for i in range(kv)}
    assert all(b.labels[r, c] == pair[(r, b.inputs[r, c])] for r, c in zip(rows[:500], cols[:500]))
    # distances: query position minus its key's position, in the order the answers are scored
    d = answer_distance(b)
    assert len(d) == n * kv and (d >= 2).all() and (d <= seq_len - 2).all()
    r0 = np.flatnonzero(b.labels[0] != IGNORE)
    keypos = [2 * list(b.inputs[0, 0:2 * kv:2]).index(b.inputs[0, c]) for c in r0]
    assert list(d[:kv]) == [c - k for c, k in zip(r0, keypos)]


def test_gap_probs_is_the_reference_power_law():
    p = gap_probs(10, 0.01)
    raw = 0.01 * np.arange(1, 11) ** (0.01 - 1)
    assert np.allclose(p, raw / raw.sum()) and abs(p.sum() - 1) < 1e-12


def test_random_non_queries_fill_only_the_zeros():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    a = multiquery_ar(64, 300, 32, 4, seed, random_non_queries=False)
    b = multiquery_ar(64, 300, 32, 4, seed, random_non_queries=True)
    assert (a.labels == b.labels).all()
    kept = a.inputs != 0
    assert (a.inputs[kept] == b.inputs[kept]).all()
    filled = b.inputs[~kept]
    assert (filled != 0).mean() > 0.9 and filled.max() < 64 and len(np.unique(filled)) > 40


@pytest.mark.parametrize("args,needle", [((64, 10, 33, 4), "even"), ((32, 10, 32, 4), "larger than"),
                                         ((128, 10, 32, 9), "4 * num_kv_pairs")])
def test_impossible_shapes_are_refused(args, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        multiquery_ar(*args, seed=0)
