"""Tokenizers (``--tokenizer bytes | PATH | bpe:N``): deterministic BPE, the verified token cache, bits per byte."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.io import tokenize as tk
from ablate.io.corpus import Corpus
from ablate.io.data import load_corpus
from ablate.errors import ConfigError, UnavailableError

ROOT = Path(__file__).resolve().parents[2]


def _text_corpus(seed: int = 0, docs: int = 60) -> Corpus:
    """A known ASCII text (deterministic), split by hand."""
    rng = np.random.default_rng(seed)
    words = ["the", "model", "attention", "position", "token", "of", "a", "layer", "norm", "rotary", "bias",
             "length", "train", "eval", "loss", "and", "with", "to", "is", "in"]
    paras = [" ".join(words[i] for i in rng.integers(0, len(words), 120)) + ".\n" for _ in range(docs)]
    train = np.frombuffer("\n".join(paras[:-10]).encode(), dtype=np.uint8)
    val = np.frombuffer("\n".join(paras[-10:]).encode(), dtype=np.uint8)
    return Corpus(f"known{seed}", train, val, 256, True, "given")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_specs_and_one_line_errors(tmp_path):
    assert tk.parse(None) == tk.parse("bytes") == ("bytes", None)
    assert tk.parse("bpe:512") == ("bpe", 512)
    for bad in ("bpe:x", "bpe:100", "no/such/tokenizer.json", "sentencepiece"):
        with pytest.raises(ConfigError) as exc:
            tk.parse(bad)
        assert "\n" not in str(exc.value)
    c = load_corpus()
    assert tk.tokenize(c, "bytes") is c and tk.tokenize(c, None) is c


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "x"))
    assert tk.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("ABLATE_CACHE")
    assert tk.cache_dir() == Path.home() / ".cache" / "ablate"


def test_token_file_cannot_be_tokenised_again(tmp_path):
    (tmp_path / "t.bin").write_bytes(np.arange(1000, dtype=np.uint16).tobytes())
    (tmp_path / "meta.json").write_text('{"vocab_size": 1000}')
    pytest.importorskip("tokenizers")
    with pytest.raises(ConfigError, match="already tokens"):
        tk.tokenize(load_corpus(tmp_path / "t.bin"), "bpe:300")


def test_missing_tokenizers_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(UnavailableError, match="`hf` extra"):
        tk.tokenize(_text_corpus(), "bpe:300")


tokenizers = pytest.importorskip("tokenizers")


def test_bpe_is_deterministic_across_processes_and_caches(tmp_path, monkeypatch):
    c = _text_corpus()
    a = tk.tokenize(c, "bpe:300")
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "other"))
    b = tk.tokenize(c, "bpe:300")
    assert a.tokenizer == b.tokenizer and a.tokenizer.startswith("bpe300:")
    assert a.hash == b.hash and np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    code = ("import numpy as np; from ablate.io.corpus import Corpus; from ablate.io import tokenize as tk; "
            "import tests.io.test_tokenize as t; c = tk.tokenize(t._text_corpus(), 'bpe:300'); "
            "print(c.tokenizer, c.hash)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "ABLATE_CACHE": str(tmp_path / "third"),
                              "TOKENIZERS_PARALLELISM": "true"})
    assert out.stdout.split() == [a.tokenizer, a.hash]
    # trained on the training split only: another held-out text leaves the tokenizer as it is
    moved = Corpus("x", c.train, c.val[: len(c.val) // 2], 256, True, "given")
    assert tk.tokenize(moved, "bpe:300").tokenizer == a.tokenizer
    # another corpus, another tokenizer; another size, another tokenizer
    assert tk.tokenize(_text_corpus(seed=1), "bpe:300").tokenizer != a.tokenizer
    assert tk.tokenize(c, "bpe:280").tokenizer != a.tokenizer


def test_tokenised_corpus_records_its_provenance():
    c = _text_corpus()
    t = tk.tokenize(c, "bpe:300")
    assert not t.byte_level and t.vocab_size <= 300 and t.train.dtype == np.uint16
    assert isinstance(t.train, np.memmap) and isinstance(t.val, np.memmap)
    assert (t.name, t.split, t.text_hash) == (c.name, c.split, c.hash)
    assert (t.train_bytes, t.val_bytes) == (len(c.train), len(c.val))
    assert len(t.train) < len(c.train) and t.hash != c.hash
    d = t.describe()
    assert d["data.tokenizer"] == t.tokenizer == d["data.token_unit"] and d["data.text_hash"] == c.hash
    assert d["data.train_tokens"] == len(t.train) and d["data.val_bytes"] == len(c.val)
    # the tokens decode back to the text
    tok = tokenizers.Tokenizer.from_file(str(next((tk.cache_dir() / "tokenizers").glob("*/tokenizer.json"))))
    assert tok.decode(np.asarray(t.val).tolist()) == bytes(c.val).decode()


def test_second_run_reads_the_cache_and_a_corrupt_entry_is_rebuilt(monkeypatch):
    c = _text_corpus()
    first = tk.tokenize(c, "bpe:300")
    train0, val0 = np.array(first.train), np.array(first.val)
    entry = next((tk.cache_dir() / "tokens").iterdir())
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["corpus_hash"] == c.hash and meta["tokenizer"] == first.tokenizer
    assert meta["train_tokens"] == len(train0) and meta["val_bytes"] == len(c.val) and meta["bytes_exact"]

    def boom(*a, **k):
        raise AssertionError("rebuilt although the cache is valid")

    with monkeypatch.context() as m:  # a valid entry is used as it is
        m.setattr(tk, "_build_tokens", boom)
        m.setattr(tk.Path, "write_bytes", boom)  # nor is the tokenizer retrained
        again = tk.tokenize(c, "bpe:300")
    assert again.hash == first.hash
    del first, again

    # same size, other tokens: the hash check catches it
    raw = bytearray((entry / "train.bin").read_bytes())
    raw[:4] = bytes(4) if raw[:4] != bytes(4) else b"\x01\x00\x01\x00"
    (entry / "train.bin").write_bytes(bytes(raw))
    fixed = tk.tokenize(c, "bpe:300")
    assert np.array_equal(fixed.train, train0)
    # a truncated file, a broken sidecar, a missing byte table: rebuilt each time
    for damage in (lambda: (entry / "val.bin").write_bytes((entry / "val.bin").read_bytes()[:-2]),
                   lambda: (entry / "meta.json").write_text("{"),
                   lambda: (entry / "token_bytes.npy").unlink()):
        damage()
        got = tk.tokenize(c, "bpe:300")
        assert np.array_equal(got.train, train0) and np.array_equal(got.val, val0)
    # a tampered tokenizer.json is retrained, not trusted
    tj = next((tk.cache_dir() / "tokenizers").glob("*/tokenizer.json"))
    tj.write_text(tj.read_text().replace('"merges":[', '"merges":[ ', 1) if '"merges":[' in tj.read_text()
                  else tj.read_text() + " ")
    assert tk.tokenize(c, "bpe:300").tokenizer == fixed.tokenizer


def test_tokenizer_json_path(tmp_path):
    c = _text_corpus()
    bpe = tk.tokenize(c, "bpe:300")
    src = next((tk.cache_dir() / "tokenizers").glob("*/tokenizer.json"))
    path = tmp_path / "tokenizer.json"
    path.write_bytes(src.read_bytes())
    t = tk.tokenize(c, str(path))
    assert t.tokenizer == "json:" + bpe.tokenizer.split(":")[1]  # same file, same hash
    assert np.array_equal(t.train, bpe.train) and t.hash == bpe.hash
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read tokenizer"):
        tk.tokenize(c, str(bad))


def test_bits_per_byte_is_loss_times_tokens_over_bytes():
    c = _text_corpus()
    t = tk.tokenize(c, "bpe:300")
    tok = tokenizers.Tokenizer.from_file(str(next((tk.cache_dir() / "tokenizers").glob("*/tokenizer.json"))))
    n, loss = 200, 1.7
    text = tok.decode(np.asarray(t.val[1:n + 1]).tolist())  # the scored targets val[1..n], ASCII text
    assert t.scored_bytes(n) == len(text.encode())
    assert t.bpb(loss, n) == pytest.approx(loss * n / (len(text.encode()) * math.log(2)), rel=1e-12)
    assert c.bpb(loss, n) == pytest.approx(loss / math.log(2))  # byte-level: loss / ln 2
    # with a real evaluation: the harness's number is the definition
    from ablate.core.config import ModelConfig
    from ablate.core.evaluate import evaluate
    from ablate.core.model import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=t.vocab_size, train_len=16,
                                    max_len=16))
    res = evaluate(model, t.val, 16, tokens=64, byte_level=False, device="cpu")
    nbytes = len(tok.decode(np.asarray(t.val[1:65]).tolist()).encode())
    assert t.bpb(res.loss, res.tokens) == pytest.approx(res.loss * 64 / (nbytes * math.log(2)))


def test_runs_with_other_tokenizers_never_share_rows(tmp_path):
    from ablate.registry.keys import load_all

    load_all()  # the variants, as `ablate run` registers them (grid.only=... looks one up before it loads them)
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite

    def run(*extra):
        return run_suite(RunOptions(suite="training", preset="micro", out=tmp_path / "out", device="cpu",
                                    progress=False, overrides=("grid.only=original", "train.steps=2", *extra)))

    path = run("data.tokenizer=bpe:300")
    rows = read_rows(path)
    assert len(rows) == 1
    run("data.tokenizer=bpe:300")
    assert len(read_rows(path)) == 1  # resumed: the same tokenizer on the same corpus
    run("data.tokenizer=bpe:320")
    rows = read_rows(path)
    assert len(rows) == 2 and rows[0]["config_id"] != rows[1]["config_id"]
    assert rows[0]["data.tokenizer"] != rows[1]["data.tokenizer"]
