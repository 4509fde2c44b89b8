"""Multi-query associative recall (MQAR; Arora et al. 2023, *Zoology*), generated on the fly.

The semantics follow the reference generator (HazyResearch ``zoology``, ``zoology/data/multiquery_ar.py``):

* an example opens with ``num_kv_pairs`` key-value pairs: keys drawn without replacement from ``[1, V/2)``, values
  without replacement from ``[V/2, V)`` (``key value key value ...``, ``2 * num_kv_pairs`` tokens);
* the rest of the sequence (``space = (seq_len - 2 * kv) / 2`` slots of two tokens) holds one query per key: key ``i``
  is asked at slot ``gap_i``, i.e. at position ``2 kv + 2 gap_i``, the gaps drawn without replacement with
  probability ``p(g) ∝ a (g + 1)^(a - 1)`` (power law, ``a = power_a``; 0.01 in the paper: short gaps are likely);
* the label at a query position is the value of the asked key; every other label is ``IGNORE`` (-100), so loss and
  accuracy count the answer positions only;
* the remaining tokens are 0, or uniform random tokens of the whole vocabulary (``random_non_queries``, the
  reference's default; the Figure 2 configs turn it off).

Weighted sampling without replacement is done with the Gumbel top-k trick (the same distribution as the reference's
sequential ``np.random.choice(replace=False, p=p)``); keys and values by rejection of rows holding a repeat (uniform
over ordered distinct tuples, as ``choice(replace=False)``). Numpy only: the report side may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ablate.errors import ConfigError

__all__ = ["IGNORE", "MQAR", "check_shape", "multiquery_ar", "gap_probs", "answer_distance", "row_hashes",
           "TRAIN_STREAM", "VAL_STREAM", "TEST_STREAM"]

IGNORE = -100  # label of every position that is not an answer (torch's cross_entropy ignore_index)
# Disjoint random streams (numpy SeedSequence entropy): training examples, the validation set (learning-rate choice)
# and the test set never share a generator.
TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0x7EA1, 0x5A11, 0x7E57


@dataclass(frozen=True)
class MQAR:
    """A block of MQAR examples: ``inputs``/``labels`` (N, T) int64 (labels ``IGNORE`` off the answers); ``query_pos``
    (N, kv): where key ``i`` is asked; ``distance`` (N, kv): query position minus the position of its key."""

    inputs: np.ndarray
    labels: np.ndarray
    query_pos: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


def check_shape(vocab_size: int, seq_len: int, num_kv_pairs: int) -> None:
    """The reference's preconditions, as one-line ConfigErrors: an even length, a vocabulary larger than the
    length, room for the pairs and one query per key, and keys enough for distinct pairs."""
    if seq_len % 2:
        raise ConfigError(f"MQAR seq_len must be even, got {seq_len}")
    if num_kv_pairs < 1:
        raise ConfigError(f"MQAR num_kv_pairs must be >= 1, got {num_kv_pairs}")
    if vocab_size <= seq_len:
        raise ConfigError(f"MQAR vocab_size ({vocab_size}) must be larger than seq_len ({seq_len})")
    if 4 * num_kv_pairs > seq_len:
        raise ConfigError(f"MQAR needs 4 * num_kv_pairs <= seq_len (pairs, then one query slot per key); got "
                          f"{num_kv_pairs} pairs at seq_len {seq_len}")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ConfigError(f"MQAR num_kv_pairs ({num_kv_pairs}) exceeds the {vocab_size // 2 - 1} distinct keys of "
                          f"vocab_size {vocab_size}")


def gap_probs(space: int, power_a: float) -> np.ndarray:
    """The power-law distribution of query gaps over ``space`` slots: ``p(g) ∝ a (g + 1)^(a - 1)``."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1.0)
    return p / p.sum()


def _distinct(rng: np.random.Generator, n: int, lo: int, hi: int, k: int) -> np.ndarray:
    """(n, k) integers in ``[lo, hi)``, distinct within each row, uniform over ordered distinct tuples."""
    out = rng.integers(lo, hi, size=(n, k))
    todo = np.arange(n)
    for _ in range(10_000):
        s = np.sort(out[todo], axis=1)
        bad = todo[(s[:, 1:] == s[:, :-1]).any(axis=1)] if k > 1 else todo[:0]
        if len(bad) == 0:
            return out
        out[bad] = rng.integers(lo, hi, size=(len(bad), k))
        todo = bad
    # dense draws (k close to hi - lo): a random permutation per row
    for r in todo:
        out[r] = rng.permutation(np.arange(lo, hi))[:k]
    return out


def multiquery_ar(vocab_size: int, num_examples: int, seq_len: int, num_kv_pairs: int, seed,
                  power_a: float = 0.01, random_non_queries: bool = True) -> MQAR:
    """``num_examples`` MQAR examples from a generator seeded with ``seed`` (an int or a sequence of ints)."""
    check_shape(vocab_size, seq_len, num_kv_pairs)
    if not power_a > 0:
        raise ConfigError(f"MQAR power_a must be > 0, got {power_a}")
    rng = np.random.default_rng(seed)
    n, kv, half = int(num_examples), int(num_kv_pairs), vocab_size // 2
    context = 2 * kv
    keys = _distinct(rng, n, 1, half, kv)
    values = _distinct(rng, n, half, vocab_size, kv)
    space = (seq_len - context) // 2
    logp = np.log(gap_probs(space, power_a))
    gumbel = logp[None, :] - np.log(-np.log(rng.random((n, space))))
    gaps = np.argsort(-gumbel, axis=1, kind="stable")[:, :kv]  # the first kv of a weighted draw w/o replacement
    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    rows = np.arange(n)[:, None]
    qpos = context + 2 * gaps
    inputs[rows, qpos] = keys
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    labels[rows, qpos] = values
    if random_non_queries:
        fill = rng.integers(0, vocab_size, size=(n, seq_len))
        zero = inputs == 0
        inputs[zero] = fill[zero]
    return MQAR(inputs, labels, qpos, qpos - 2 * np.arange(kv)[None, :])


def answer_distance(block: MQAR) -> np.ndarray:
    """The distance (query position - key position) of every answer, in the row-major order of
    ``labels != IGNORE`` (the order a masked accuracy sees them)."""
    order = np.argsort(block.query_pos, axis=1, kind="stable")
    return np.take_along_axis(block.distance, order, axis=1).reshape(-1)


def row_hashes(inputs: np.ndarray) -> set[bytes]:
    """One key per example (its tokens' bytes), to keep test and validation examples out of training."""
    a = np.ascontiguousarray(inputs, dtype=np.int64)
    return {a[i].tobytes() for i in range(len(a))}
