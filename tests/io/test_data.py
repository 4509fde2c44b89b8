"""Corpora and batches: deterministic splits and sampling, memory-mapped token files, one-line errors."""

import json
import os
import pickle
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.io.corpus import DOC_SEP, Corpus, hash_arrays, held_out
from ablate.io.data import Batches, check_eval_span, load_corpus
from ablate.errors import ConfigError


def _topic_texts():
    from pydoc_data import topics

    return {k: v.encode("utf-8") for k, v in topics.topics.items()}


def test_topics_holds_out_whole_topics():
    c = load_corpus()
    assert c.vocab_size == 256 and c.byte_level
    assert c.split == "by topic crc32 0.1"
    texts = _topic_texts()
    held = sorted(k for k in texts if held_out(k, 0.1))
    kept = sorted(k for k in texts if not held_out(k, 0.1))
    assert held and kept
    # each split is exactly its whole topics, in sorted-key order, joined by the separator: no topic straddles
    assert bytes(c.val) == DOC_SEP.join(texts[k] for k in held)
    assert bytes(c.train) == DOC_SEP.join(texts[k] for k in kept)
    train = bytes(c.train)
    for k in held:
        assert texts[k] not in train
    assert c.documents == (len(kept), len(held))
    # large enough for the suites: the training tiny preset scores 32768 (+1) held-out tokens
    assert len(c.val) > 32_769 and len(c.train) > 0.5 * (len(c.train) + len(c.val))


def test_corpus_is_deterministic_with_a_hash():
    a, b = load_corpus(), load_corpus()
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert isinstance(a.hash, str) and len(a.hash) == 16 and int(a.hash, 16) >= 0
    assert a.hash == b.hash
    assert load_corpus(val_frac=0.2).hash != a.hash  # another split, another corpus
    # a Corpus built directly hashes its arrays; the same tokens give the same id
    direct = Corpus("x", np.array(a.train), np.array(a.val), 256, True, "given")
    assert direct.hash == a.hash and direct.documents is None
    moved = Corpus("x", np.array(a.train[:-1]), np.concatenate([a.train[-1:], a.val]), 256, True, "given")
    assert moved.hash != a.hash  # where the split falls is part of the identity


def test_describe_columns():
    d = load_corpus().describe()
    assert list(d) == ["data", "data.vocab_size", "data.byte_level", "data.train_tokens", "data.val_tokens",
                       "data.split", "data.hash", "data.train_docs", "data.val_docs", "data.tokenizer",
                       "data.token_unit", "data.text_hash", "data.train_bytes", "data.val_bytes"]
    assert d["data.tokenizer"] == "bytes" and d["data.token_unit"] == "byte" and d["data.text_hash"] == d["data.hash"]
    assert (d["data.train_bytes"], d["data.val_bytes"]) == (d["data.train_tokens"], d["data.val_tokens"])
    assert d["data"] == "topics" and d["data.split"] == "by topic crc32 0.1"
    assert d["data.train_docs"] + d["data.val_docs"] == len(_topic_texts())
    assert isinstance(d["data.hash"], str)
    assert all(not isinstance(v, (dict, list, tuple, np.generic)) for v in d.values())  # flat, JSON-ready
    json.dumps(d)


def test_tail_fallback_says_so(tmp_path):
    c = load_corpus(val_frac=0.001)  # no topic's crc32 lands in bucket 0
    assert c.split.startswith("tail 0.001 (fallback: the crc32 bucket held out 0 of ")
    assert "too few to split by topic" in c.split and c.documents is None
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "only.txt").write_text("one document only\n" * 50)
    c2 = load_corpus(folder)
    assert c2.split.startswith("tail 0.1 (fallback: the crc32 bucket held out ")
    assert " of 1 file, " in c2.split
    n = len(c2.train) + len(c2.val)
    assert c2.describe()["data.train_docs"] is None and len(c2.val) == round(0.1 * n)


def test_one_file_rules_and_file_hash(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello world\n" * 1000)
    c = load_corpus(f)
    assert c.split == "tail 0.1 (one file: no document boundaries)" and c.documents is None
    assert c.hash == hash_arrays(np.array(c.train), np.array(c.val))  # streamed from the file = from the arrays
    assert load_corpus(f).hash == c.hash
    # one byte changed (same size): another hash, even within the process cache
    st = os.stat(f)
    data = bytearray(f.read_bytes())
    data[5000] ^= 1
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # mtime may not move on a coarse clock
    assert os.stat(f).st_size == st.st_size
    c2 = load_corpus(f)
    assert c2.hash != c.hash and c2.split == c.split

    tok = tmp_path / "tok.bin"
    (np.arange(5000) % 300).astype(np.uint16).tofile(tok)
    cb = load_corpus(tok, vocab_size=300)
    assert cb.split == "tail 0.1 (one file: no document boundaries)"
    assert cb.hash == hash_arrays(np.array(cb.train), np.array(cb.val))
    assert cb.describe()["data.val_docs"] is None


def test_bin_pair_hash(tmp_path):
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 600}))
    c = load_corpus(tmp_path)
    assert c.split == "train.bin / val.bin"
    assert c.hash == hash_arrays(np.arange(500, dtype=np.uint16), np.arange(100, dtype=np.uint16))
    # the same tokens split elsewhere are another corpus
    assert c.hash != hash_arrays(np.arange(499, dtype=np.uint16), np.arange(499, 600, dtype=np.uint16))


def test_folder_split_by_whole_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = {f"f{i:02d}.md": f"document {i} ".encode() * 50 for i in range(60)}
    for name, data in texts.items():
        (folder / name).write_bytes(data)
    c = load_corpus(folder)
    held = sorted(k for k in texts if held_out(k, 0.1))
    assert c.split == "by file crc32 0.1" and c.documents == (60 - len(held), len(held))
    assert bytes(c.val) == DOC_SEP.join(texts[k] for k in held)
    assert load_corpus(folder).hash == c.hash
    (folder / held[0]).write_bytes(texts[held[0]].replace(b"document", b"Document", 1))
    assert load_corpus(folder).hash != c.hash


def test_stdlib_split_by_file():
    c = load_corpus(default="stdlib")
    assert c.split == "by file crc32 0.1" and c.byte_level
    assert c.documents[0] > 100 and c.documents[1] > 10
    val = bytes(c.val[:200_000])
    root = Path(sysconfig.get_paths()["stdlib"])
    held = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "site-packages" not in p.parts
                  and held_out(p.relative_to(root).as_posix(), 0.1) and p.stat().st_size > 0)
    first = (root / held[0]).read_bytes()
    assert val.startswith(first[:1000])  # the held-out files, whole, from the first byte


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


def test_a_run_on_another_corpus_never_resumes_into_its_rows(tmp_path):
    """Same settings, same out folder, another --data: new rows under another config id (the corpus hash is part
    of it); the same data again: resumed, nothing new."""
    from ablate.registry.keys import load_all

    load_all()  # the variants, as `ablate run` registers them (grid.only=... looks one up before it loads them)
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite

    texts = _topic_texts()
    for name, keys in (("a", sorted(texts)[::2]), ("b", sorted(texts)[1::2])):
        (tmp_path / name).mkdir()
        for k in keys:
            (tmp_path / name / f"{k}.txt").write_bytes(texts[k])

    def run(data):
        return run_suite(RunOptions(suite="training", preset="micro", out=tmp_path / "out", device="cpu",
                                    progress=False, data=tmp_path / data,
                                    overrides=("grid.only=original", "train.steps=2", "data.val_frac=0.3")))

    path = run("a")
    assert len(read_rows(path)) == 1
    run("b")
    rows = read_rows(path)
    assert len(rows) == 2 and rows[0]["data.hash"] != rows[1]["data.hash"]
    assert rows[0]["config_id"] != rows[1]["config_id"] and rows[0]["row_key"] != rows[1]["row_key"]
    run("a")
    assert len(read_rows(path)) == 2
