"""Token data for the suites: a default corpus that ships with Python, or the user's own (``--data PATH``).

Everything here is a 1-D array of token ids split into ``train`` and ``val``:

* default ``topics``: the English documentation in :mod:`pydoc_data.topics` (~465 KB), byte-level (vocab 256);
  the last ``val_frac`` of the bytes is held out. The CPU presets use it.
* default ``stdlib``: the ``.py`` sources of this Python's standard library (~30 MB), byte-level; split **by file**
  (a file is held out when ``crc32(relative path)`` falls in the held-out bucket), so validation text is never a
  continuation of a training file.
* ``PATH`` a text file: memory-mapped as bytes (no RAM), the tail ``val_frac`` held out.
* ``PATH`` a folder of text files: every non-hidden, non-binary file, sorted, split by file as for ``stdlib``
  (falls back to the tail split when too few files land in the held-out bucket).
* ``PATH`` a nanoGPT-style token file ``*.bin`` (uint16, or the dtype in the sidecar): memory-mapped with
  :class:`numpy.memmap`; the tail ``val_frac`` held out. A folder holding ``train.bin`` and ``val.bin`` uses both as
  given. The vocabulary size comes from a sidecar (``meta.json`` / ``<name>.json`` with ``{"vocab_size": N}``, or
  nanoGPT's ``meta.pkl``) or from the ``vocab_size`` argument.

Batches are sampled deterministically: the windows of step ``s`` under seed ``k`` depend only on ``(k, s)``, so a
run that restarts at step ``s`` sees exactly the data it would have seen.
"""

from __future__ import annotations

import json
import pickle
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate.errors import ConfigError

DEFAULT_CORPORA = ("topics", "stdlib")
_HELD_OUT_BUCKETS = 1000


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: ``train`` and ``val`` are 1-D integer arrays (possibly memory-mapped)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    byte_level: bool  # one token = one byte (bits per byte = loss / ln 2)
    split: str  # how the held-out part was chosen, for the record

    def tokens(self, split: str) -> np.ndarray:
        if split == "train":
            return self.train
        if split in ("val", "validation"):
            return self.val
        raise ConfigError(f"unknown split {split!r}; valid: train, val")

    def describe(self) -> dict:
        return {"data": self.name, "data.vocab_size": self.vocab_size, "data.byte_level": self.byte_level,
                "data.train_tokens": int(len(self.train)), "data.val_tokens": int(len(self.val)),
                "data.split": self.split}


def load_corpus(path: str | Path | None = None, *, default: str = "topics", val_frac: float = 0.1,
                vocab_size: int | None = None) -> Corpus:
    """Load ``path`` (file, folder or ``.bin``), or the built-in ``default`` corpus when ``path`` is None."""
    if not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be in (0, 1), got {val_frac}")
    if path is None or str(path) == "":
        if default == "topics":
            return _topics(val_frac)
        if default == "stdlib":
            return _stdlib(val_frac)
        raise ConfigError(f"unknown default corpus {default!r}; valid: {', '.join(DEFAULT_CORPORA)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data path not found: {p}")
    if p.is_dir():
        if (p / "train.bin").is_file() and (p / "val.bin").is_file():
            return _bin_pair(p, vocab_size)
        return _text_folder(p, val_frac)
    if p.suffix == ".bin":
        return _bin_file(p, val_frac, vocab_size)
    return _text_file(p, val_frac)


# ---------------------------------------------------------------------------------------------------------------
# Sources


def _tail_split(arr: np.ndarray, val_frac: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(arr)
    if n == 0:
        raise ConfigError(f"empty corpus: {what} holds no tokens")
    n_val = max(1, int(round(n * val_frac)))
    if n - n_val < 2:
        raise ConfigError(f"corpus too small: {what} holds {n} tokens")
    return arr[: n - n_val], arr[n - n_val:]


def _topics(val_frac: float) -> Corpus:
    from pydoc_data import topics  # ships with CPython

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    arr = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    train, val = _tail_split(arr, val_frac, "pydoc_data.topics")
    return Corpus("topics", train, val, 256, True, f"tail {val_frac:g}")


def _held_out(rel: str, val_frac: float) -> bool:
    return zlib.crc32(rel.encode("utf-8")) % _HELD_OUT_BUCKETS < int(round(val_frac * _HELD_OUT_BUCKETS))


def _by_file(files: list[tuple[str, Path]], val_frac: float, name: str) -> Corpus:
    """Byte-level corpus from ``(relative name, path)`` pairs, held-out by file hash (tail split as a fallback)."""
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    for rel, f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if not data or b"\x00" in data[:8192]:  # empty or binary
            continue
        (val_parts if _held_out(rel, val_frac) else train_parts).append(data)
    if not train_parts and not val_parts:
        raise ConfigError(f"empty corpus: no readable text files in {name}")
    train = np.frombuffer(b"\n".join(train_parts), dtype=np.uint8)
    val = np.frombuffer(b"\n".join(val_parts), dtype=np.uint8)
    total = len(train) + len(val)
    if len(val) < 0.25 * val_frac * total or len(train) < 0.25 * total:  # too few files to split by file
        everything = np.frombuffer(b"\n".join(train_parts + val_parts), dtype=np.uint8)
        train, val = _tail_split(everything, val_frac, name)
        return Corpus(name, train, val, 256, True, f"tail {val_frac:g}")
    return Corpus(name, train, val, 256, True, f"by file crc32 {val_frac:g}")


def _stdlib(val_frac: float) -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((str(p.relative_to(root)), p) for p in root.rglob("*.py")
                   if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    return _by_file(files, val_frac, f"stdlib ({root})")


def _text_folder(folder: Path, val_frac: float) -> Corpus:
    files = sorted((str(p.relative_to(folder)), p) for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ConfigError(f"empty corpus: no files in {folder}")
    corpus = _by_file(files, val_frac, str(folder))
    return corpus


def _text_file(path: Path, val_frac: float) -> Corpus:
    if path.stat().st_size == 0:
        raise ConfigError(f"empty corpus: {path} is empty")
    arr = np.memmap(path, dtype=np.uint8, mode="r")
    train, val = _tail_split(arr, val_frac, str(path))
    return Corpus(str(path), train, val, 256, True, f"tail {val_frac:g}")


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
    train, val = _tail_split(arr, val_frac, str(path))
    return Corpus(str(path), train, val, vocab, vocab == 256 and arr.dtype == np.uint8, f"tail {val_frac:g}")


def _bin_pair(folder: Path, vocab_size: int | None) -> Corpus:
    train, vocab = _open_bin(folder / "train.bin", vocab_size)
    val, _ = _open_bin(folder / "val.bin", vocab)
    if len(train) < 2:
        raise ConfigError(f"corpus too small: {folder / 'train.bin'} holds {len(train)} tokens")
    return Corpus(str(folder), train, val, vocab, False, "train.bin / val.bin")


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
           "corpus_for"]


@dataclass(frozen=True)
class DataSettings:
    """The ``data.*`` settings of the suites that train (extrapolation, training)."""

    corpus: str = "topics"  # built-in corpus when --data is not given: topics | stdlib
    val_frac: float = 0.1
    vocab_size: int | None = None  # for a .bin token file without a meta.json / meta.pkl sidecar


def corpus_for(cfg, data_path):
    """Load the corpus a suite config names (or the user's ``--data``); returns the config with the model's
    vocabulary set from that corpus, and the corpus."""
    from dataclasses import replace

    corpus = load_corpus(data_path, default=cfg.data.corpus, val_frac=cfg.data.val_frac,
                         vocab_size=cfg.data.vocab_size)
    return replace(cfg, model=replace(cfg.model, vocab_size=corpus.vocab_size)), corpus
