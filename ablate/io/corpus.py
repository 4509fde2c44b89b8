"""A tokenised corpus and how it is made: :class:`Corpus` (two splits of token ids and what they are), its content
hash (:func:`hash_arrays`, :func:`hash_files`) and the held-out rule for documents (:func:`held_out`,
:func:`by_document`). Below :mod:`ablate.io.data` (the sources), :mod:`ablate.io.hfdata` and
:mod:`ablate.io.tokenize`, which all build on it; every name is importable from :mod:`ablate.io.data` too."""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.errors import ConfigError

_HELD_OUT_BUCKETS = 1000
DOC_SEP = b"\n\n"  # between the documents of one split
_HASH_CHUNK = 1 << 24  # bytes hashed at a time


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: ``train`` and ``val`` are 1-D integer arrays (possibly memory-mapped).

    ``hash`` identifies the tokens of both splits (computed from the arrays, in chunks, when not given);
    ``documents`` is ``(train, val)`` document counts, or None where the split is not by document.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    byte_level: bool  # one token = one byte (bits per byte = loss / ln 2)
    split: str  # how the held-out part was chosen, for the record
    hash: str | None = None
    documents: tuple[int, int] | None = None
    tokenizer: str | None = None  # tokenizer id (ablate.io.tokenize); None: "bytes" for byte-level, a token file's own
    text_hash: str | None = None  # hash of the byte corpus the tokens were made from (= hash when byte-level)
    train_bytes: int | None = None  # UTF-8 bytes of the text of each split (= tokens when byte-level)
    val_bytes: int | None = None
    token_bytes: np.ndarray | None = None  # bytes of each vocabulary entry, when exact (scored bytes for bpb)
    val_docs: tuple[tuple[int, int], ...] | None = None  # (start, end) of each held-out document in ``val``

    def __post_init__(self):
        if self.hash is None:
            object.__setattr__(self, "hash", hash_arrays(self.train, self.val))
        if self.byte_level:
            for f, v in (("tokenizer", "bytes"), ("text_hash", self.hash), ("train_bytes", len(self.train)),
                         ("val_bytes", len(self.val))):
                if getattr(self, f) is None:
                    object.__setattr__(self, f, v)

    @property
    def token_unit(self) -> str:
        """What one token is, for per-token numbers (perplexity): ``"byte"`` or the tokenizer id."""
        return "byte" if self.byte_level else (self.tokenizer or "token")

    def scored_bytes(self, tokens: int, start: int = 1) -> int | None:
        """Bytes of the held-out text behind ``val[start : start + tokens]`` (the targets an evaluation scores):
        exact from the per-token byte lengths where the tokenizer has them, else ``tokens`` times the held-out
        split's bytes per token; None when the bytes are unknown (a token file)."""
        if self.byte_level:
            return int(tokens)
        if self.token_bytes is not None:
            total, step = 0, 1 << 22
            for i in range(start, start + tokens, step):
                ids = np.asarray(self.val[i:min(i + step, start + tokens)], dtype=np.int64)
                total += int(self.token_bytes[ids].sum())
            return total
        if self.val_bytes and len(self.val):
            return int(round(tokens * self.val_bytes / len(self.val)))
        return None

    def bpb(self, loss: float | None, tokens: int) -> float | None:
        """Bits per byte of a mean loss (nats/token) over held-out targets ``val[1 .. tokens]``:
        ``loss * tokens / (bytes * ln 2)``; None where the bytes are unknown."""
        nbytes = self.scored_bytes(tokens)
        if loss is None or not nbytes:
            return None
        return float(loss) * tokens / (nbytes * math.log(2))

    def tokens(self, split: str) -> np.ndarray:
        if split == "train":
            return self.train
        if split in ("val", "validation"):
            return self.val
        raise ConfigError(f"unknown split {split!r}; valid: train, val")

    def describe(self) -> dict:
        """The corpus as flat row columns."""
        docs = self.documents
        return {"data": self.name, "data.vocab_size": int(self.vocab_size), "data.byte_level": bool(self.byte_level),
                "data.train_tokens": int(len(self.train)), "data.val_tokens": int(len(self.val)),
                "data.split": self.split, "data.hash": self.hash,
                "data.train_docs": None if docs is None else int(docs[0]),
                "data.val_docs": None if docs is None else int(docs[1]),
                "data.tokenizer": self.tokenizer, "data.token_unit": self.token_unit,
                "data.text_hash": self.text_hash, "data.train_bytes": self.train_bytes,
                "data.val_bytes": self.val_bytes}


# ---------------------------------------------------------------------------------------------------------------
# Identity


def _hash_header(train: np.ndarray, val: np.ndarray) -> bytes:
    return f"ablate-corpus\0{train.dtype.str}:{len(train)}\0{val.dtype.str}:{len(val)}\0".encode()


def hash_arrays(train: np.ndarray, val: np.ndarray) -> str:
    """sha256 id of the tokens, streamed ``_HASH_CHUNK`` bytes at a time."""
    train, val = np.asarray(train), np.asarray(val)
    h = hashlib.sha256(_hash_header(train, val))
    for arr in (train, val):
        step = max(1, _HASH_CHUNK // max(1, arr.dtype.itemsize))
        for i in range(0, len(arr), step):
            h.update(np.ascontiguousarray(arr[i:i + step]).view(np.uint8))
    return h.hexdigest()[:16]


_FILE_HASHES: dict[tuple, str] = {}


def hash_files(train: np.ndarray, val: np.ndarray, files: list[Path]) -> str:
    """The same id as :func:`hash_arrays` for a corpus whose train tokens followed by its val tokens are exactly
    the bytes of ``files`` in order: read from the files in chunks (the memmap never paged in), cached per process
    by ``(path, size, mtime_ns)``."""
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append((str(Path(f).resolve()), st.st_size, st.st_mtime_ns))
    key = (tuple(stats), train.dtype.str, len(train), val.dtype.str, len(val))
    if key not in _FILE_HASHES:
        h = hashlib.sha256(_hash_header(train, val))
        for f in files:
            with open(f, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()[:16]
    return _FILE_HASHES[key]


# ---------------------------------------------------------------------------------------------------------------
# Held-out documents


def tail_split(arr: np.ndarray, val_frac: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(arr)
    if n == 0:
        raise ConfigError(f"empty corpus: {what} holds no tokens")
    n_val = max(1, int(round(n * val_frac)))
    if n - n_val < 2:
        raise ConfigError(f"corpus too small: {what} holds {n} tokens")
    return arr[: n - n_val], arr[n - n_val:]


def held_out(rel: str, val_frac: float) -> bool:
    """Whether the document named ``rel`` is held out: its crc32 falls in the first ``val_frac`` of the buckets."""
    return zlib.crc32(rel.encode("utf-8")) % _HELD_OUT_BUCKETS < int(round(val_frac * _HELD_OUT_BUCKETS))


def by_document(docs, val_frac: float, name: str, unit: str) -> Corpus:
    """Byte-level corpus from ``(name, bytes)`` documents, held out by :func:`held_out` on the name; a tail split
    of all the documents when the held-out bucket holds too little or too much. Empty documents are skipped."""
    kept = [(rel, data) for rel, data in sorted(docs, key=lambda d: d[0]) if data]
    if not kept:
        raise ConfigError(f"empty corpus: no readable text in {name}")
    flags = [held_out(rel, val_frac) for rel, _ in kept]
    train_parts = [data for (_, data), out in zip(kept, flags) if not out]
    val_parts = [data for (_, data), out in zip(kept, flags) if out]
    train = np.frombuffer(DOC_SEP.join(train_parts), dtype=np.uint8)
    val = np.frombuffer(DOC_SEP.join(val_parts), dtype=np.uint8)
    total = len(train) + len(val)
    share = len(val) / total  # of the bytes, separators included
    if share < 0.25 * val_frac or share > 0.75:  # the bucket cannot split these documents
        everything = np.frombuffer(DOC_SEP.join(data for _, data in kept), dtype=np.uint8)
        train, val = tail_split(everything, val_frac, name)
        rule = (f"tail {val_frac:g} (fallback: the crc32 bucket held out {len(val_parts)} of {len(kept)} {unit}"
                f"{'' if len(kept) == 1 else 's'}, "
                f"{share:.1%} of the bytes; too {'few' if share < val_frac else 'many'} to split by {unit})")
        return Corpus(name, train, val, 256, True, rule)
    bounds, at = [], 0
    for part in val_parts:  # the separator after a document is not part of it
        bounds.append((at, at + len(part)))
        at += len(part) + len(DOC_SEP)
    return Corpus(name, train, val, 256, True, f"by {unit} crc32 {val_frac:g}",
                  documents=(len(train_parts), len(val_parts)), val_docs=tuple(bounds))
