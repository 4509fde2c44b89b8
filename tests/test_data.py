"""Corpora and batches: deterministic splits and sampling, memory-mapped token files, one-line errors."""

import json
import pickle

import numpy as np
import pytest
import torch

from ablate.data import Batches, check_eval_span, load_corpus
from ablate.errors import ConfigError


def test_topics_split_is_deterministic_tail():
    a, b = load_corpus(), load_corpus()
    assert a.vocab_size == 256 and a.byte_level
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    n = len(a.train) + len(a.val)
    assert abs(len(a.val) - 0.1 * n) <= 1
    assert len(a.val) > 40_000  # the tiny preset scores 32768 tokens at every length


def test_batches_deterministic_in_seed_and_step():
    c = load_corpus()
    b1, b2 = Batches(c.train, 4, 32, seed=7), Batches(c.train, 4, 32, seed=7)
    x1, y1 = b1(3)
    x2, y2 = b2(3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one
    assert x1.shape == (4, 32) and x1.dtype == torch.long
    assert not torch.equal(b1(4)[0], x1)
    assert not torch.equal(Batches(c.train, 4, 32, seed=8)(3)[0], x1)


def test_bin_file_is_memmapped_with_sidecar(tmp_path):
    tokens = (np.arange(10_000) * 7919 % 1000).astype(np.uint16)
    path = tmp_path / "tok.bin"
    tokens.tofile(path)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 1000}))
    c = load_corpus(path)
    assert c.vocab_size == 1000 and not c.byte_level
    assert isinstance(c.train.base, np.memmap) or isinstance(c.train, np.memmap)
    assert np.array_equal(np.concatenate([c.train, c.val]), tokens)
    assert len(c.val) == 1000
    x, y = Batches(c.train, 3, 16, seed=0)(0)
    assert int(x.max()) < 1000


def test_bin_pair_folder_with_meta_pkl(tmp_path):
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    with open(tmp_path / "meta.pkl", "wb") as fh:
        pickle.dump({"vocab_size": 50304}, fh)
    c = load_corpus(tmp_path)
    assert c.vocab_size == 50304 and len(c.train) == 500 and len(c.val) == 100


def test_bin_without_vocab_is_one_line_error(tmp_path):
    np.zeros(100, dtype=np.uint16).tofile(tmp_path / "x.bin")
    with pytest.raises(ConfigError, match="vocab size") as exc:
        load_corpus(tmp_path / "x.bin")
    assert "\n" not in str(exc.value)
    assert load_corpus(tmp_path / "x.bin", vocab_size=300).vocab_size == 300  # or given as an option


def test_text_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world\n" * 100)
    c = load_corpus(f)
    assert c.byte_level and bytes(c.train[:5]) == b"hello"
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"f{i:02d}.md").write_text(f"document {i} " * 50)
    (folder / "blob.bin.dat").write_bytes(b"\x00\x01" * 100)  # binary files are skipped
    c2 = load_corpus(folder)
    assert c2.split.startswith("by file") and len(c2.val) > 0 and b"\x00" not in bytes(c2.train)


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.txt", "not found"),
    (lambda p: (p / "empty.txt").write_text("") or p / "empty.txt", "empty corpus"),
    (lambda p: (p / "empty_dir").mkdir() or p / "empty_dir", "empty corpus"),
])
def test_bad_paths_are_one_line_errors(tmp_path, make, match):
    with pytest.raises(ConfigError, match=match) as exc:
        load_corpus(make(tmp_path))
    assert "\n" not in str(exc.value)


def test_eval_span_error():
    with pytest.raises(ConfigError, match="validation split holds only 10"):
        check_eval_span(np.zeros(10, dtype=np.uint8), 1025)


def test_unknown_default_corpus():
    with pytest.raises(ConfigError, match="valid: topics, stdlib"):
        load_corpus(default="wiki")
