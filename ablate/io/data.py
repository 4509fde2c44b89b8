"""Token data for the suites: a default corpus that ships with Python, or the user's own (``--data PATH``).

Everything here is a 1-D array of token ids split into ``train`` and ``val``. Wherever the source has document
boundaries the split holds out **whole documents**, chosen by a hash of the document's name: a document is held out
when ``crc32(utf-8 name) % 1000 < round(val_frac * 1000)`` (:func:`held_out`). That rule looks at nothing but the
name, so it is the same on every machine and Python version, and adding, removing or editing one document never moves
another across the split. The documents of each split are joined in sorted-name order with ``"\n\n"`` between them.

* default ``topics``: the English documentation in :mod:`pydoc_data.topics` (~465 KB, 79 topics), byte-level
  (vocab 256); split **by topic** (the name is the topic key). Topic sizes are very uneven (``specialnames`` alone is
  ~13% of the bytes), so the held-out share of the bytes is not ``val_frac``: with ``val_frac=0.1`` the same six
  topics, 23-25% of the bytes, are held out on CPython 3.10-3.13 (on 3.11: 359,193 train / 107,078 val bytes,
  73 / 6 topics). The fixed bucket is kept over a size-aware rule (e.g. taking topics in crc32 order until
  ``val_frac`` of the bytes) because a topic's side then never depends on the other topics' sizes, which change
  from one Python version to the next. The CPU presets use it.
* default ``stdlib``: the ``.py`` sources of this Python's standard library (~30 MB), byte-level; split **by file**
  (the name is the path relative to the library root), so validation text is never a continuation of a training file.
* ``PATH`` a folder of text files: every non-hidden, non-binary file, split by file as for ``stdlib``.
* ``PATH`` a text file: memory-mapped as bytes (no RAM); the tail ``val_frac`` of the bytes held out (one file has
  no document boundaries).
* ``PATH`` a nanoGPT-style token file ``*.bin`` (uint16, or the dtype in the sidecar): memory-mapped with
  :class:`numpy.memmap`; the tail ``val_frac`` held out. A folder holding ``train.bin`` and ``val.bin`` uses both as
  given. The vocabulary size comes from a sidecar (``meta.json`` / ``<name>.json`` with ``{"vocab_size": N}``, or
  nanoGPT's ``meta.pkl``) or from the ``vocab_size`` argument.

A by-document split falls back to the tail split when the held-out bucket holds too little (under a quarter of
``val_frac`` of the bytes) or too much (over three quarters of the bytes); :attr:`Corpus.split` then says so.

Every corpus records its identity, :attr:`Corpus.hash`: the first 16 hex digits of the sha256 of a header (dtypes and
lengths of both splits) followed by the raw bytes of the train tokens, then the val tokens. The default corpora change
with the Python version, so rows made from different corpora differ in ``data.hash``. File-based corpora are hashed
by streaming the files (never the whole memmap in RAM), once per process per ``(path, size, mtime_ns)``.

Batches are sampled deterministically: the windows of step ``s`` under seed ``k`` depend only on ``(k, s)``, so a
run that restarts at step ``s`` sees exactly the data it would have seen.
"""

from __future__ import annotations

import json
import os
import pickle
import sysconfig
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from pydoc_data import topics

import numpy as np
import torch

from ablate.errors import ConfigError
from ablate.io.corpus import DOC_SEP, Corpus, by_document, hash_arrays, hash_files, held_out, tail_split  # noqa: F401

DEFAULT_CORPORA = ("topics", "stdlib")


def load_corpus(path: str | Path | None = None, *, default: str = "topics", val_frac: float = 0.1,
                vocab_size: int | None = None) -> Corpus:
    """Load ``path`` (file, folder or ``.bin``), or the built-in ``default`` corpus when ``path`` is None."""
    if not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be in (0, 1), got {val_frac}")
    if path is not None and str(path).startswith("hf:"):
        from ablate.io.hfdata import load_hf

        return load_hf(str(path)[3:], val_frac)
    if (path is None or str(path) == "") and default.startswith("hf:"):  # a preset's data.corpus = hf:NAME[:CONFIG]
        from ablate.io.hfdata import load_hf

        return load_hf(default[3:], val_frac)
    if path is None or str(path) == "":
        if default == "topics":
            return _topics(val_frac)
        if default == "stdlib":
            return _stdlib(val_frac)
        raise ConfigError(f"unknown default corpus {default!r}; valid: {', '.join(DEFAULT_CORPORA)}, hf:NAME[:CONFIG]")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data path not found: {p}")
    if p.is_dir():
        if (p / "train.bin").is_file() and (p / "val.bin").is_file():
            return _bin_pair(p, vocab_size)
        from ablate.io.hfdata import is_saved_dataset, load_saved

        if is_saved_dataset(p):  # a datasets save_to_disk folder
            return load_saved(p, val_frac)
        return _text_folder(p, val_frac)
    if p.suffix == ".bin":
        return _bin_file(p, val_frac, vocab_size)
    return _text_file(p, val_frac)


# ---------------------------------------------------------------------------------------------------------------
# Sources


def _one_file_rule(val_frac: float) -> str:
    return f"tail {val_frac:g} (one file: no document boundaries)"


def _topics(val_frac: float) -> Corpus:

    return by_document(((k, v.encode("utf-8")) for k, v in topics.topics.items()), val_frac, "topics", "topic")


def _read_text_files(files: list[tuple[str, Path]]):
    """``(name, bytes)`` of the readable, non-empty, non-binary files."""
    for rel, f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if data and b"\x00" not in data[:8192]:
            yield rel, data


def _stdlib(val_frac: float) -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
             if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    return by_document(_read_text_files(files), val_frac, f"stdlib ({root})", "file")


def _text_folder(folder: Path, val_frac: float) -> Corpus:
    files = [(p.relative_to(folder).as_posix(), p) for p in folder.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not files:
        raise ConfigError(f"empty corpus: no files in {folder}")
    return by_document(_read_text_files(files), val_frac, str(folder), "file")


def _text_file(path: Path, val_frac: float) -> Corpus:
    if path.stat().st_size == 0:
        raise ConfigError(f"empty corpus: {path} is empty")
    arr = np.memmap(path, dtype=np.uint8, mode="r")
    train, val = tail_split(arr, val_frac, str(path))
    return Corpus(str(path), train, val, 256, True, _one_file_rule(val_frac), hash=hash_files(train, val, [path]))


def _bin_meta(path: Path) -> dict:
    """Sidecar metadata of a token file: ``<stem>.json``, ``meta.json`` or nanoGPT's ``meta.pkl``."""
    for cand in (path.with_suffix(".json"), path.parent / "meta.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {cand}: {exc}") from None
    pkl = path.parent / "meta.pkl"
    if pkl.is_file():
        try:
            with open(pkl, "rb") as fh:
                meta = pickle.load(fh)  # nanoGPT's format; the user's own file
        except Exception as exc:
            raise ConfigError(f"cannot read {pkl}: {type(exc).__name__}: {exc}") from None
        return {k: meta[k] for k in ("vocab_size", "dtype") if k in meta}
    return {}


def _open_bin(path: Path, vocab_size: int | None) -> tuple[np.ndarray, int]:
    meta = _bin_meta(path)
    dtype = np.dtype(meta.get("dtype", "uint16"))
    vocab = vocab_size or meta.get("vocab_size")
    if not vocab:
        raise ConfigError(f"vocab size of {path} unknown: add meta.json {{\"vocab_size\": N}} next to it "
                          "or set data.vocab_size=N")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"empty corpus: {path} is empty")
    if size % dtype.itemsize:
        raise ConfigError(f"{path}: size {size} is not a multiple of {dtype} ({dtype.itemsize} bytes)")
    return np.memmap(path, dtype=dtype, mode="r"), int(vocab)


def _bin_file(path: Path, val_frac: float, vocab_size: int | None) -> Corpus:
    arr, vocab = _open_bin(path, vocab_size)
    train, val = tail_split(arr, val_frac, str(path))
    return Corpus(str(path), train, val, vocab, vocab == 256 and arr.dtype == np.uint8, _one_file_rule(val_frac),
                  hash=hash_files(train, val, [path]))


def _bin_pair(folder: Path, vocab_size: int | None) -> Corpus:
    train, vocab = _open_bin(folder / "train.bin", vocab_size)
    val, _ = _open_bin(folder / "val.bin", vocab)
    if len(train) < 2:
        raise ConfigError(f"corpus too small: {folder / 'train.bin'} holds {len(train)} tokens")
    return Corpus(str(folder), train, val, vocab, False, "train.bin / val.bin",
                  hash=hash_files(train, val, [folder / "train.bin", folder / "val.bin"]))


# ---------------------------------------------------------------------------------------------------------------
# Batches


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of one training step: depends on ``(seed, step)`` only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step)])


class Batches:
    """``batches(step) -> (x, y)``: ``batch_size`` random windows of ``seq_len`` tokens, targets shifted by one.

    Deterministic in ``(seed, step)``; never materialises more than one batch (works on a memmap).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if len(tokens) < seq_len + 1:
            raise ConfigError(f"training split holds {len(tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.device = torch.device(device)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = step_rng(self.seed, step)
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        buf = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))
        if self.device.type == "cuda":
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        else:
            buf = buf.to(self.device)
        return buf[:, :-1], buf[:, 1:]


def check_eval_span(val: np.ndarray, needed: int, what: str = "evaluation") -> None:
    """One-line error when the held-out split is shorter than an evaluation needs (``needed`` tokens)."""
    if len(val) < needed:
        raise ConfigError(f"{what} needs {needed} held-out tokens but the validation split holds only {len(val)}; "
                          "lower eval.tokens / the eval lengths or give more data")


__all__ = ["Corpus", "load_corpus", "Batches", "step_rng", "check_eval_span", "DEFAULT_CORPORA", "DataSettings",
           "corpus_for", "data_fields"]


@dataclass(frozen=True)
class DataSettings:
    """The ``data.*`` settings of the suites that train (extrapolation, training)."""

    corpus: str = "topics"  # corpus when --data is not given: topics | stdlib (built in) | hf:NAME[:CONFIG] (local cache)
    val_frac: float = 0.1
    vocab_size: int | None = None  # for a .bin token file without a meta.json / meta.pkl sidecar
    tokenizer: str | None = None  # None / "bytes": one token per byte; PATH (tokenizer.json); "bpe:N" (ablate.io.tokenize)


def data_fields(data: DataSettings, corpus=None) -> dict:
    """The ``data.*`` settings as they enter a config id: ``tokenizer`` is left out (byte-level ids stay what they
    were before the setting existed; a path would make ids machine-dependent) and the corpus's tokenizer *id*
    stands in for it when the corpus is tokenised (its token hash, ``corpus_hash``, differs anyway)."""
    from ablate.core.config import flatten

    out = flatten(data)
    out.pop("tokenizer", None)
    tok = getattr(corpus, "tokenizer", None)
    if tok and tok != "bytes" and not getattr(corpus, "byte_level", True):
        out["tokenizer"] = tok
    return out


def corpus_for(cfg, data_path):
    """Load the corpus a suite config names (or the user's ``--data``); returns the config with the model's
    vocabulary set from that corpus, and the corpus."""
    from ablate.io.tokenize import tokenize

    corpus = load_corpus(data_path, default=cfg.data.corpus, val_frac=cfg.data.val_frac,
                         vocab_size=cfg.data.vocab_size)
    corpus = tokenize(corpus, getattr(cfg.data, "tokenizer", None))
    return replace(cfg, model=replace(cfg.model, vocab_size=corpus.vocab_size)), corpus
