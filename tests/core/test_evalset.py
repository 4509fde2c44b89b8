"""The held-out documents the suites score (ablate.core.evalset): drawn across the whole split, disjoint roles, per-document
losses that add up to the row's loss, and windows that score every target once at any length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablate.io.data import DOC_SEP, Corpus, load_corpus
from ablate.errors import ConfigError
from ablate.core.evalset import draw
from ablate.core.evaluate import evaluate, plan_windows
from tests.core.test_evaluate import Bigram  # context-free predictions (one model for both files)


def _docs_corpus(sizes, seed=0) -> Corpus:
    """A byte corpus whose held-out split is documents of the given sizes (random bytes, offsets recorded)."""
    rng = np.random.default_rng(seed)
    parts = [rng.integers(32, 127, size=n, dtype=np.uint8).tobytes() for n in sizes]
    val = np.frombuffer(DOC_SEP.join(parts), dtype=np.uint8)
    bounds, at = [], 0
    for p in parts:
        bounds.append((at, at + len(p)))
        at += len(p) + len(DOC_SEP)
    train = rng.integers(0, 256, size=4096, dtype=np.uint8)
    return Corpus("docs", train, val, 256, True, "test", val_docs=tuple(bounds))


def test_documents_are_drawn_across_the_split_not_a_prefix():
    c = _docs_corpus([300] * 200)
    es = draw(c, 3000, max_doc_tokens=1000, seed=0)
    assert es.unit == "document" and es.tokens >= 3000 and len(es.ids) == 10  # 10 x 300 + 9 separators
    assert sorted(es.ids) != list(range(len(es.ids)))  # not the first documents of the split
    assert max(es.ids) > 100  # from the whole split
    again = draw(c, 3000, max_doc_tokens=1000, seed=0)
    assert again.ids == es.ids and again.hash == es.hash
    other = draw(c, 3000, max_doc_tokens=1000, seed=1)
    assert other.ids != es.ids and other.hash != es.hash


def test_stream_holds_the_drawn_documents_whole_and_in_order():
    sizes = [int(x) for x in np.random.default_rng(3).integers(50, 400, size=60)]
    c = _docs_corpus(sizes)
    es = draw(c, 2000, max_doc_tokens=10_000, seed=5)
    expect = DOC_SEP.join(bytes(c.val[c.val_docs[i][0]:c.val_docs[i][1]]) for i in es.ids)
    assert bytes(es.stream) == expect and es.cut == 0
    assert es.bounds[0] == 1 and es.bounds[-1] == len(es.stream) and es.tokens == len(es.stream) - 1
    assert int(es.unit_tokens.sum()) == es.tokens


def test_long_documents_are_capped_to_their_beginning():
    c = _docs_corpus([5000, 40, 5000, 60] * 10)
    es = draw(c, 4000, max_doc_tokens=512, seed=0)
    assert es.cut >= 1 and max(es.unit_tokens) <= 512 + len(DOC_SEP)
    first = es.ids[0]
    s = c.val_docs[first][0]
    n = min(512, c.val_docs[first][1] - s)
    assert bytes(es.stream[:n]) == bytes(c.val[s:s + n])


def test_test_and_tune_never_share_a_document():
    c = _docs_corpus([200] * 50)
    test = draw(c, 2000, max_doc_tokens=1000, seed=0, reserve=2000)
    tune = draw(c, 2000, max_doc_tokens=1000, seed=0, role="tune", reserve=2000)
    assert not set(test.ids) & set(tune.ids)
    with pytest.raises(ConfigError, match="without sharing"):
        draw(c, 6000, max_doc_tokens=1000, seed=0, reserve=6000)


def test_automatic_cap_grows_only_as_far_as_needed():
    c = _docs_corpus([3000] * 4)
    es = draw(c, 5000, min_doc_tokens=1000)
    assert es.max_doc_tokens == 2000  # 4 x 1000 < 5000 targets; 4 x 2000 holds them
    with pytest.raises(ConfigError, match="validation split holds only"):
        draw(c, 50_000, min_doc_tokens=1000)


def test_corpus_without_documents_uses_blocks(tmp_path):
    f = tmp_path / "one.txt"
    f.write_bytes(bytes(np.random.default_rng(0).integers(32, 127, size=20_000, dtype=np.uint8)))
    c = load_corpus(f, val_frac=0.5)
    es = draw(c, 2000, max_doc_tokens=256)
    assert es.unit == "block" and all(n <= 256 for n in es.unit_tokens)
    starts = [i * 256 for i in es.ids]
    assert bytes(es.stream[:256]) == bytes(c.val[starts[0]:starts[0] + 256])


def test_stdlib_sample_is_not_dominated_by_one_file():
    c = load_corpus(None, default="stdlib")
    es = draw(c, 131072, min_doc_tokens=8192)
    share = es.unit_tokens.max() / es.tokens
    assert len(es.ids) >= 20 and share < 0.1, (len(es.ids), share)


@pytest.mark.parametrize("mode,stride", [("nonoverlap", None), ("sliding", 8), ("sliding", 32)])
@pytest.mark.parametrize("L", [16, 64])
def test_per_document_loss_matches_a_direct_computation(mode, stride, L):
    stride = None if stride is None else min(stride, L)
    c = _docs_corpus([int(x) for x in np.random.default_rng(1).integers(30, 300, size=40)])
    es = draw(c, 1500, max_doc_tokens=10_000, seed=2)
    m = Bigram()
    res = evaluate(m, es.stream, L, tokens=es.tokens, mode=mode, stride=stride, units=es.bounds)
    x = torch.from_numpy(np.asarray(es.stream, dtype=np.int64))
    with torch.no_grad():  # context-free model: each target's loss is computable alone
        per = F.cross_entropy(m(x[:-1]), x[1:], reduction="none").double().numpy()
    want = [per[a - 1:b - 1].sum() for a, b in zip(es.bounds[:-1], es.bounds[1:])]
    assert np.allclose(res.unit_loss, want, rtol=1e-9, atol=1e-6)
    assert res.tokens == es.tokens and sum(res.unit_loss) == pytest.approx(res.loss * res.tokens, rel=1e-9)


@pytest.mark.parametrize("tokens", [100, 257, 1000, 1023])
@pytest.mark.parametrize("mode,stride", [("nonoverlap", None), ("sliding", 7), ("sliding", 64)])
def test_windows_score_every_target_once_when_tokens_is_not_a_multiple(tokens, mode, stride):
    L = 64
    seen = []
    for w in plan_windows(tokens, L, mode, stride):
        assert w.start >= 0 and w.start + L <= max(tokens, L)  # reads no target past the last one
        seen += [w.start + p + 1 for p in range(w.lo, w.hi)]
    assert seen == list(range(1, tokens + 1))


def test_bad_unit_bounds_are_refused():
    c = _docs_corpus([100] * 20)
    es = draw(c, 500, max_doc_tokens=1000)
    with pytest.raises(ConfigError, match="unit bounds"):
        evaluate(Bigram(), es.stream, 16, tokens=es.tokens, units=es.bounds[:-1])
