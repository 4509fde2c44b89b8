"""The held-out text a suite scores: whole documents sampled across the entire held-out split.

Scoring a prefix of the held-out split (``val[1 .. tokens]``) measures whatever file happens to sort first: on the
stdlib corpus 89% of the first 32k bytes came from one truncated file. An :class:`EvalSet` instead draws documents
uniformly at random (a fixed seed) from **every** document of the held-out split, so the scored text represents the
split, and records which documents it drew, so intervals can resample them (:mod:`ablate.analysis.stats`,
``crossed_difference``: seeds *and* documents).

* **Documents.** Where the corpus records its held-out documents (:attr:`ablate.io.corpus.Corpus.val_docs`: the built-in
  corpora and folders of text files) a unit is one document; elsewhere (one text file, a ``.bin`` token file, a
  tokenised corpus) the held-out split is cut into consecutive *blocks* of ``max_doc_tokens`` tokens and a unit is
  one block.
* **Size.** Units are taken in the permuted order until the stream holds at least ``tokens`` targets. A unit longer
  than ``max_doc_tokens`` contributes its first ``max_doc_tokens`` tokens (its own beginning), so that no single long
  document dominates the sample; the rows say how many were cut (``eval_docs_cut``).
* **Roles.** ``role="test"`` takes units from the front of the permutation, ``role="tune"`` (learning-rate sweeps,
  anything chosen by looking at a score) from the back: the two never share a unit, and a request that would make
  them overlap is refused.
* **Stream.** The drawn units are joined in their drawn order (byte-level corpora put ``\\n\\n`` between documents,
  as the splits do); the scored targets are ``stream[1 .. len - 1]``, each belonging to the unit it lies in (a
  separator belongs to the unit before it). Every evaluation length scores exactly these targets.

``EvalSet.hash`` identifies the drawn text (unit ids, their bytes, the rule); rows carry it with the unit ids, so
two rows compare only when they scored the same text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ablate.io.corpus import DOC_SEP
from ablate.errors import ConfigError

__all__ = ["EvalSet", "draw", "ROLES", "unigram_loss"]

ROLES = ("test", "tune")


@dataclass(frozen=True)
class EvalSet:
    """Drawn held-out units joined into one ``stream``; unit ``i`` owns the targets ``bounds[i] .. bounds[i+1]-1``
    (target ``t`` is ``stream[t]`` predicted from ``stream[:t]``; target 0 is never scored)."""

    stream: np.ndarray
    bounds: np.ndarray  # int64, (units + 1,); bounds[0] = 1, bounds[-1] = len(stream)
    ids: tuple[int, ...]  # index of each unit among the held-out split's units (documents or blocks)
    unit: str  # "document" | "block"
    cut_flags: tuple[bool, ...]  # per unit: shortened to max_doc_tokens
    max_doc_tokens: int
    seed: int
    role: str
    hash: str

    @property
    def cut(self) -> int:
        """Units shortened to ``max_doc_tokens``."""
        return sum(self.cut_flags)

    @property
    def tokens(self) -> int:
        """Targets scored."""
        return int(self.bounds[-1] - self.bounds[0])

    @property
    def unit_tokens(self) -> np.ndarray:
        return np.diff(self.bounds)

    def unit_sums(self, target_loss: np.ndarray) -> np.ndarray:
        """Per-unit sums of a per-target array (``target_loss[t - 1]`` for target ``t``)."""
        arr = np.asarray(target_loss, dtype=np.float64)
        if len(arr) != self.tokens:
            raise ValueError(f"expected {self.tokens} per-target values, got {len(arr)}")
        return np.add.reduceat(arr, (self.bounds[:-1] - 1).astype(np.int64))

    def describe(self) -> dict:
        """The set as flat row columns."""
        return {"eval_set": self.hash, "eval_docs": len(self.ids), "eval_doc_unit": self.unit,
                "eval_doc_ids": list(self.ids), "eval_docs_cut": self.cut, "eval_max_doc_tokens": self.max_doc_tokens,
                "eval_doc_seed": self.seed, "doc_tokens": [int(n) for n in self.unit_tokens]}

    def scored_bytes(self, corpus) -> int | None:
        """Bytes of text behind the scored targets (bits per byte): the targets themselves on byte-level data, the
        tokenizer's exact byte lengths where known, else the held-out split's bytes per token; None if unknown."""
        if corpus.byte_level:
            return self.tokens
        table = getattr(corpus, "token_bytes", None)
        if table is not None:
            return int(table[np.asarray(self.stream[1:], dtype=np.int64)].sum())
        if getattr(corpus, "val_bytes", None) and len(corpus.val):
            return int(round(self.tokens * corpus.val_bytes / len(corpus.val)))
        return None

    def subsample(self, tokens: int) -> "EvalSet":
        """The first units of this set holding at least ``tokens`` targets (curves score a stated subsample)."""
        if tokens >= self.tokens:
            return self
        k = int(np.searchsorted(self.bounds, self.bounds[0] + tokens)) if tokens > 0 else 1
        k = max(1, min(k, len(self.ids)))
        end = int(self.bounds[k])
        return _make(self.stream[:end], self.bounds[:k + 1].copy(), self.ids[:k], self.unit, self.max_doc_tokens,
                     self.seed, self.role, self.cut_flags[:k])


def _units(corpus, max_doc_tokens: int) -> tuple[list[tuple[int, int]], str]:
    """``[(start, end)]`` of every held-out unit in ``corpus.val``, and the unit's name."""
    docs = getattr(corpus, "val_docs", None)
    n = len(corpus.val)
    if docs:
        return [(int(s), int(e)) for s, e in docs], "document"
    return [(s, min(s + max_doc_tokens, n)) for s in range(0, n, max_doc_tokens)], "block"


def _make(stream, bounds, ids, unit, cap, seed, role, cut_flags) -> EvalSet:
    h = hashlib.sha256(f"ablate-evalset\0{unit}\0{cap}\0{seed}\0{role}\0{','.join(map(str, ids))}\0".encode())
    h.update(np.ascontiguousarray(stream).view(np.uint8))
    return EvalSet(stream, np.asarray(bounds, dtype=np.int64), tuple(int(i) for i in ids), unit,
                   tuple(bool(c) for c in cut_flags), int(cap), int(seed), role, h.hexdigest()[:16])


def draw(corpus, tokens: int, *, max_doc_tokens: int | None = None, min_doc_tokens: int = 2048, seed: int = 0,
         role: str = "test", reserve: int = 0) -> EvalSet:
    """Draw units of ``corpus``'s held-out split (see the module docstring) until at least ``tokens`` targets.

    ``max_doc_tokens`` None: the smallest of ``min_doc_tokens``, 2x, 4x, ... with which the split holds ``tokens``
    (a split of few documents gets a larger cap rather than a refusal). ``reserve``: targets the other role will draw
    (its ``tokens``); the two roles must fit without sharing a unit.
    """
    if max_doc_tokens is None:
        cap, most = max(2, int(min_doc_tokens)), max(2, len(corpus.val))
        while True:  # the cap is chosen for this role alone; the other role's reserve is checked at that cap
            try:
                draw(corpus, tokens, max_doc_tokens=cap, seed=seed, role=role)
                break
            except ConfigError:
                if cap >= most:
                    raise
                cap *= 2
        max_doc_tokens = cap
    if role not in ROLES:
        raise ConfigError(f"unknown evaluation role {role!r}; valid: {', '.join(ROLES)}")
    if tokens < 1 or max_doc_tokens < 2:
        raise ConfigError(f"evaluation needs tokens >= 1 and max_doc_tokens >= 2 (got {tokens}, {max_doc_tokens})")
    units, kind = _units(corpus, int(max_doc_tokens))
    units = [(s, e) for s, e in units if e - s >= 2]
    if not units:
        raise ConfigError("the validation split holds no document to score")
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE5A1]).permutation(len(units))
    if role == "tune":
        order = order[::-1]
    sep = DOC_SEP if kind == "document" and corpus.byte_level else b""
    sep_arr = np.frombuffer(sep, dtype=np.uint8).astype(corpus.val.dtype)
    parts, ids, bounds, cut, length = [], [], [1], [], 0
    for i in order:
        s, e = units[int(i)]
        cut.append(e - s > max_doc_tokens)
        e = min(e, s + max_doc_tokens)
        piece = np.asarray(corpus.val[s:e])
        if parts and len(sep_arr):  # the separator closes the unit before
            parts.append(sep_arr)
            length += len(sep_arr)
            bounds[-1] = length
        parts.append(piece)
        ids.append(int(i))
        length += len(piece)
        bounds.append(length)
        if length - 1 >= tokens:
            break
    if length - 1 < tokens:
        raise ConfigError(f"the validation split holds only {length - 1} scorable tokens in {len(units)} {kind}s "
                          f"(at most {max_doc_tokens} each), fewer than eval.tokens={tokens}; lower eval.tokens or "
                          "give more data")
    if reserve:
        other = draw(corpus, reserve, max_doc_tokens=max_doc_tokens, seed=seed,
                     role="tune" if role == "test" else "test")
        if set(other.ids) & set(ids):
            raise ConfigError(f"the validation split's {len(units)} {kind}s cannot hold both the test set "
                              f"({tokens if role == 'test' else reserve} tokens) and the tuning set "
                              f"({reserve if role == 'test' else tokens} tokens) without sharing one; lower "
                              "eval.tokens or give more data")
    stream = np.concatenate(parts)
    return _make(stream, bounds, ids, kind, max_doc_tokens, seed, role, cut)


_UNIGRAM: dict[tuple, np.ndarray] = {}


def unigram_loss(corpus, es: EvalSet) -> float:
    """Mean loss (nats/token) of a context-free unigram model on ``es``'s targets: add-one token counts of the
    training split. A reference line: a model scoring above it past train_len is worse than using no context."""
    key = (getattr(corpus, "hash", None), len(corpus.train), int(corpus.vocab_size))
    if key not in _UNIGRAM:
        counts = np.ones(int(corpus.vocab_size), dtype=np.float64)
        step = 1 << 24
        for i in range(0, len(corpus.train), step):
            counts += np.bincount(np.asarray(corpus.train[i:i + step], dtype=np.int64), minlength=len(counts))
        _UNIGRAM[key] = np.log(counts / counts.sum())
    logp = _UNIGRAM[key]
    return float(-logp[np.asarray(es.stream[1:], dtype=np.int64)].mean())
