"""Held-out evaluation at a given context length, and a synthetic passkey-retrieval probe.

Protocol (``evaluate``): the scored targets are always the tokens ``val[1 .. tokens]`` of the array given — the
same tokens, the same count, at every evaluation length and in both modes — so lengths and modes differ only in how
much context each prediction sees. The suites pass the stream of an :class:`ablate.core.evalset.EvalSet` (whole held-out
documents drawn across the split) and its unit bounds, and get the loss summed per document back (``unit_loss``).

* ``mode="nonoverlap"`` (default; ALiBi paper Fig. 1): consecutive windows of ``eval_len`` tokens; every position
  of every window is scored, so the loss averages over in-window positions ``0 .. eval_len-1``. When ``tokens`` is
  not a multiple of ``eval_len`` the last window is moved back to end at the last target and scores only the targets
  not scored before (they see more context, never less).
* ``mode="sliding"``: windows of ``eval_len`` tokens advancing by ``stride``; the first window scores all its
  positions, every later one only its last ``stride`` positions (those not scored before), so almost every scored
  token sees at least ``eval_len - stride`` tokens of context. ``stride == eval_len`` is the non-overlapping case.
  The ALiBi paper reports both protocols; YaRN's Table 1 uses sliding windows with S = 256.

Metrics: mean loss in nats/token, perplexity ``exp(loss)``, bits per byte ``loss / ln 2`` when one token is one byte,
and the mean loss at each in-window position (binned to at most ``pos_bins`` bins) — where a variant breaks.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablate.io.data import check_eval_span
from ablate.errors import ConfigError
from ablate.core.train import autocast_for, sync
from ablate.variants.attention.blockwise import blockwise_logits

MODES = ("nonoverlap", "sliding")


@dataclass(frozen=True)
class Window:
    start: int  # window input = val[start : start + eval_len], targets = val[start + 1 : start + eval_len + 1]
    lo: int  # scored in-window positions lo .. hi-1
    hi: int


def plan_windows(tokens: int, eval_len: int, mode: str = "nonoverlap", stride: int | None = None) -> list[Window]:
    """The windows that score exactly targets ``1..tokens`` at ``eval_len`` (see the module docstring)."""
    if mode not in MODES:
        raise ConfigError(f"unknown eval mode {mode!r}; valid: {', '.join(MODES)}")
    if eval_len < 1 or tokens < 1:
        raise ConfigError(f"eval_len and tokens must be >= 1 (got {eval_len}, {tokens})")
    out: list[Window] = []
    if mode == "nonoverlap":
        for start in range(0, tokens, eval_len):
            n = min(eval_len, tokens - start)
            if n < eval_len and start > 0:  # a short last window ends at the last target: more context, same targets
                out.append(Window(tokens - eval_len, eval_len - n, eval_len))
            else:
                out.append(Window(start, 0, n))
        return out
    stride = eval_len if stride is None else int(stride)
    if not 1 <= stride <= eval_len:
        raise ConfigError(f"eval stride must be in 1..eval_len={eval_len}, got {stride}")
    out.append(Window(0, 0, min(eval_len, tokens)))
    scored = out[0].hi  # targets 1..scored are done
    while scored < tokens:
        n = min(stride, tokens - scored)
        # score targets scored+1 .. scored+n at the end of a window: last target index = start + eval_len
        end = scored + n  # the window whose last n targets are scored+1 .. scored+n (n < stride only at the end)
        start = end - eval_len
        out.append(Window(start, eval_len - n, eval_len))
        scored += n
    return out


def span_needed(tokens: int, eval_len: int, mode: str = "nonoverlap", stride: int | None = None) -> int:
    """Held-out tokens an evaluation reads (inputs and targets)."""
    return max(w.start + eval_len + 1 for w in plan_windows(tokens, eval_len, mode, stride))


@dataclass
class EvalResult:
    eval_len: int
    mode: str
    stride: int | None
    tokens: int  # targets scored
    windows: int
    loss: float  # nats / token
    ppl: float
    bpb: float | None  # bits per byte (byte-level data only)
    pos_loss: list[float | None] = field(default_factory=list)  # mean loss per in-window position bin
    pos_bin: int = 1  # bin width in tokens: bin b covers positions b*pos_bin .. (b+1)*pos_bin - 1
    elapsed_s: float = 0.0
    unit_loss: list[float] | None = None  # loss summed over each unit's targets (``units`` given), nats

    def as_dict(self) -> dict:
        return asdict(self)


def incremental_logits(model: nn.Module, x: torch.Tensor, prefill: int | None, chunk: int) -> torch.Tensor:
    """Logits of ``x`` (B, T) computed as in generation: the first ``prefill`` tokens in one forward, then ``chunk``
    tokens per forward through a fresh KV cache (positions continue from the cache)."""
    if chunk < 1:
        raise ConfigError(f"decode chunk must be >= 1, got {chunk}")
    T = x.shape[1]
    first = T if prefill is None else max(1, min(int(prefill), T))
    # preallocated: a step writes its keys in place instead of copying the whole cache (O(T) per step)
    cache = model.new_cache(static_len=T, batch=x.shape[0]) if first < T else model.new_cache()
    out = [model(x[:, :first], cache=cache)]
    for s in range(first, T, chunk):
        out.append(model(x[:, s:s + chunk], cache=cache))
    return torch.cat(out, dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, val: np.ndarray, eval_len: int, *, tokens: int, mode: str = "nonoverlap",
             stride: int | None = None, batch_tokens: int = 16384, byte_level: bool = True,
             device: str | torch.device | None = None, amp: str | None = None, pos_bins: int = 64,
             decode_chunk: int | None = None, prefill: int | None = None,
             units: np.ndarray | None = None, block: int | None = None) -> EvalResult:
    """Loss of ``model`` on the held-out ``val`` at context ``eval_len`` (no grad, batched windows).

    ``decode_chunk``: score each window as a model is used when it generates: ``prefill`` tokens in one forward
    (default: all of them, i.e. a plain forward), then the rest ``decode_chunk`` tokens at a time through the KV
    cache (see :func:`incremental_logits`). Length-dependent positions (dynamic NTK) need it; for every other
    variant it equals the full forward up to float rounding.

    ``block``: blockwise causal attention with that block size (xPos's BCA,
    :func:`ablate.variants.attention.blockwise.blockwise_logits`) for windows longer than it; not with ``decode_chunk``.

    ``units``: bounds ``b`` (ascending, ``b[0] = 1``, ``b[-1] = tokens + 1``) of the documents the targets belong to
    (:attr:`ablate.core.evalset.EvalSet.bounds`): ``unit_loss[i]`` sums the loss of targets ``b[i] .. b[i+1]-1``.

    Position-range errors of the model (``learned`` past its table) propagate to the caller.
    """
    if units is not None:
        units = np.asarray(units, dtype=np.int64)
        if len(units) < 2 or units[0] != 1 or units[-1] != tokens + 1 or (np.diff(units) <= 0).any():
            raise ConfigError(f"unit bounds must rise from 1 to tokens + 1 = {tokens + 1}")
    if block is not None and decode_chunk is not None:
        raise ConfigError("blockwise causal attention (block) and incremental decoding (decode_chunk) exclude each other")
    windows = plan_windows(tokens, eval_len, mode, stride)
    need = max(w.start + eval_len + 1 for w in windows)
    check_eval_span(val, need, f"evaluation at eval_len={eval_len} ({tokens} tokens, {mode})")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    per_batch = max(1, batch_tokens // eval_len)
    pos_sum = torch.zeros(eval_len, dtype=torch.float64, device=device)
    pos_cnt = torch.zeros(eval_len, dtype=torch.float64, device=device)
    offs = np.arange(eval_len + 1)
    ar = torch.arange(eval_len, device=device)
    target_loss = torch.zeros(tokens + 1, dtype=torch.float64, device=device) if units is not None else None
    try:
        for i in range(0, len(windows), per_batch):
            chunk = windows[i:i + per_batch]
            idx = np.stack([w.start + offs for w in chunk])
            buf = torch.from_numpy(np.asarray(val[idx], dtype=np.int64)).to(device)
            x, y = buf[:, :-1], buf[:, 1:]
            with autocast_for(device, amp):
                if block is not None:
                    logits = blockwise_logits(model, x, block)
                elif decode_chunk is None:
                    logits = model(x)
                else:
                    logits = incremental_logits(model, x, prefill, decode_chunk)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            loss = loss.view(len(chunk), eval_len).double()
            lo = torch.tensor([w.lo for w in chunk], device=device)[:, None]
            hi = torch.tensor([w.hi for w in chunk], device=device)[:, None]
            mask = ((ar[None, :] >= lo) & (ar[None, :] < hi)).double()
            pos_sum += (loss * mask).sum(0)
            pos_cnt += mask.sum(0)
            if target_loss is not None:  # target index of (window, position) = start + position + 1
                starts = torch.tensor([w.start for w in chunk], device=device)[:, None]
                idx = (starts + 1 + ar[None, :]).clamp(max=tokens)
                target_loss.index_add_(0, idx.reshape(-1), (loss * mask).reshape(-1))
    finally:
        model.train(was_training)
    sync(device)
    elapsed = time.perf_counter() - t0
    total, count = float(pos_sum.sum()), int(pos_cnt.sum())
    assert count == tokens, (count, tokens)
    mean = total / count
    width = max(1, math.ceil(eval_len / max(1, pos_bins)))
    n_bins = math.ceil(eval_len / width)
    s = torch.zeros(n_bins * width, dtype=torch.float64, device=device)
    c = torch.zeros_like(s)
    s[:eval_len], c[:eval_len] = pos_sum, pos_cnt
    s, c = s.view(n_bins, width).sum(1).tolist(), c.view(n_bins, width).sum(1).tolist()
    pos_loss = [round(a / b, 5) if b else None for a, b in zip(s, c)]
    unit_loss = None
    if target_loss is not None:
        per = target_loss[1:].cpu().numpy()
        unit_loss = [float(x) for x in np.add.reduceat(per, units[:-1] - 1)]
    return EvalResult(eval_len=eval_len, mode=mode, stride=stride if mode == "sliding" else None, tokens=count,
                      windows=len(windows), loss=mean, ppl=math.exp(min(mean, 700.0)),
                      bpb=mean / math.log(2) if byte_level else None, pos_loss=pos_loss, pos_bin=width,
                      elapsed_s=elapsed, unit_loss=unit_loss)


# ---------------------------------------------------------------------------------------------------------------
# Passkey retrieval (synthetic, byte-level)
#
# A sequence is filler text with a needle "key=DDDD;" planted at a chosen depth, ending with the query "key=" and
# the answer digits: "...grass is green. key=4821; The sky is blue...the sun is yellow. key=4821". The answer is
# predictable only by retrieving the needle (an induction-style copy). Models are trained on such sequences of
# train_len bytes (random depth, key, filler phase) and scored at longer lengths: a trial is correct when the
# argmax prediction of every answer digit is right (teacher forcing).

PASSKEY_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
                  "The river runs to the sea. A bird sings in the tree. ")
NEEDLE_PREFIX = "key="
NEEDLE_END = ";"


def passkey_overhead(digits: int) -> int:
    """Bytes that are not filler: needle ``key=D..D;`` plus query ``key=D..D``."""
    return 2 * (len(NEEDLE_PREFIX) + digits) + len(NEEDLE_END) + 1  # +1: space before the query


def passkey_sequences(n: int, length: int, depth: float | None, digits: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` byte sequences of ``length`` + 1 bytes (inputs + the last target) and their keys ``(n, digits)``.

    ``depth`` in [0, 1]: fraction of the filler placed before the needle; None draws it uniformly per sequence.
    """
    filler_len = length + 1 - passkey_overhead(digits)
    if filler_len < 0:
        raise ConfigError(f"passkey needs length >= {passkey_overhead(digits) - 1} for {digits} digits, got {length}")
    filler = PASSKEY_FILLER.encode()
    reps = (filler_len + len(filler)) // len(filler) + 2
    big = np.frombuffer(filler * reps, dtype=np.uint8)
    out = np.empty((n, length + 1), dtype=np.uint8)
    keys = rng.integers(0, 10, size=(n, digits))
    for i in range(n):
        d = rng.random() if depth is None else float(depth)
        before = int(round(d * filler_len))
        phase = int(rng.integers(0, len(filler)))
        fill = big[phase:phase + filler_len]
        key = bytes(ord("0") + int(k) for k in keys[i])
        needle = NEEDLE_PREFIX.encode() + key + NEEDLE_END.encode()
        query = b" " + NEEDLE_PREFIX.encode() + key
        seq = fill[:before].tobytes() + needle + fill[before:].tobytes() + query
        out[i] = np.frombuffer(seq, dtype=np.uint8)
    return out, keys


def passkey_loss(digits: int, answer_weight: float = 1.0):
    """Training loss for passkey models: LM loss on every byte + ``answer_weight`` x the loss on the answer digits.

    The extra term makes the (otherwise rare) retrieval signal dominate the gradient: with plain LM loss a 2-layer
    byte model at train_len 64 retrieves nothing after a few hundred steps; with it, it does (docs/extrapolation.md).
    """

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()
        v = logits.size(-1)
        lm = F.cross_entropy(logits.reshape(-1, v), y.reshape(-1))
        if not answer_weight:
            return lm
        ans = F.cross_entropy(logits[:, -digits:].reshape(-1, v), y[:, -digits:].reshape(-1))
        return lm + answer_weight * ans

    return loss_fn


# ---------------------------------------------------------------------------------------------------------------
# Multi-key needle in a haystack (RULER's MK-NIAH, byte-level)
#
# The filler is English sentences that carry numbers of the same length as the answer ("Bus 47 goes to the sea."),
# with ``keys`` labelled needles "C=47;" (distinct capital letters) planted in it; the sequence ends with the query
# " C=" for one of them and its digits. Being digits no longer singles the needle out, and a model that copies the
# value of a random needle is right 1 time in ``keys``: retrieval needs the label bound to the value that follows it.
#
# Placement: the needles are exchangeable. Every needle's insert point is drawn independently and uniformly from the
# same window of the filler (``MULTIKEY_SPREAD`` of it, centred on the depth and shifted to fit inside the filler),
# needles that share an insert point are put in a random order, and the queried needle is drawn uniformly among them.
# So at every depth the queried needle is the first, the last or any other one of the needles with probability
# 1/keys: "copy the latest needle" or "copy the first needle" is right no more often than copying a random one.
# ``multikey_heuristics`` computes these accuracies exactly from the same placement rule; the chance level of a trial
# is the best of them (``Probe.chance_at``).

MULTIKEY_SENTENCES = ("There are {n} birds in the tree. ", "The river is {n} miles long. ", "Bus {n} goes to the sea. ",
                      "The sun rose at {n}. ", "We walked {n} steps today. ", "Room {n} is open. ",
                      "The box holds {n} apples. ", "It costs {n} coins. ", "The grass is green. ",
                      "The sky is blue. ")
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PROBES = ("passkey", "multikey")
MULTIKEY_SPREAD = 0.25  # fraction of the filler the needles of one sequence are spread over, centred on the depth


def multikey_overhead(digits: int, keys: int) -> int:
    """Bytes that are not filler: ``keys`` needles ``C=D..D;`` plus the query `` C=D..D``."""
    return keys * (2 + digits + 1) + 3 + digits


def multikey_window(filler_len: int, depth: float, spread: float = MULTIKEY_SPREAD) -> tuple[int, int]:
    """The insert points ``lo .. hi`` (inclusive; 0 = before the first filler byte) the needles are drawn from at
    ``depth``: ``spread`` of the filler centred on ``depth * filler_len``, shifted to fit inside the filler."""
    width = min(filler_len, int(round(spread * filler_len)))
    lo = int(round(depth * filler_len - width / 2))
    lo = min(max(lo, 0), filler_len - width)
    return lo, lo + width


def _number_filler(n_bytes: int, digits: int, rng: np.random.Generator) -> bytes:
    """``n_bytes`` of sentences carrying random ``digits``-digit numbers, starting at a random phase."""
    parts: list[str] = []
    size = 0
    templates = MULTIKEY_SENTENCES
    while size < n_bytes + 40:
        t = templates[int(rng.integers(0, len(templates)))]
        if "{n}" in t:
            t = t.format(n="".join(str(int(d)) for d in rng.integers(0, 10, size=digits)))
        parts.append(t)
        size += len(t)
    text = "".join(parts).encode()
    phase = int(rng.integers(0, 40))
    return text[phase:phase + n_bytes]


def multikey_sequences(n: int, length: int, depth: float | None, digits: int, keys: int,
                       rng: np.random.Generator, *, queried: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` byte sequences of ``length`` + 1 bytes and their answers ``(n, digits)``.

    ``depth``: the centre of the window of the filler the ``keys`` needles are drawn from (:func:`multikey_window`;
    None: a uniform depth per sequence). Every needle's insert point is uniform in that window, independently, and
    the queried needle is one of them drawn uniformly, so no needle order (first, last) singles it out.
    ``queried``: optional out-array ``(n,)`` that receives the rank (0 = first in the text) of the queried needle.
    """
    if keys < 1 or keys > len(LABELS):
        raise ConfigError(f"multikey needs 1 <= keys <= {len(LABELS)}, got {keys}")
    filler_len = length + 1 - multikey_overhead(digits, keys)
    if filler_len < 0:
        raise ConfigError(f"multikey needs length >= {multikey_overhead(digits, keys) - 1} for {digits} digits and "
                          f"{keys} keys, got {length}")
    out = np.empty((n, length + 1), dtype=np.uint8)
    answers = np.empty((n, digits), dtype=np.int64)
    for i in range(n):
        fill = _number_filler(filler_len, digits, rng)
        labels = rng.choice(len(LABELS), size=keys, replace=False)
        values = rng.integers(0, 10, size=(keys, digits))
        d = rng.random() if depth is None else float(depth)
        lo, hi = multikey_window(filler_len, d)
        at = rng.integers(lo, hi + 1, size=keys)
        order = np.lexsort((rng.random(keys), at))  # by insert point; ties in a random order
        q = int(rng.integers(0, keys))  # the queried needle: uniform among the needles
        seq, prev = [], 0
        needle = [f"{LABELS[labels[j]]}={''.join(map(str, values[j]))};".encode() for j in range(keys)]
        for j in order:
            seq += [fill[prev:at[j]], needle[j]]
            prev = int(at[j])
        seq.append(fill[prev:])
        seq.append(f" {LABELS[labels[q]]}={''.join(map(str, values[q]))}".encode())
        out[i] = np.frombuffer(b"".join(seq), dtype=np.uint8)
        answers[i] = values[q]
        if queried is not None:
            queried[i] = int(np.flatnonzero(order == q)[0])
    return out, answers


def _order_odds(p_q: np.ndarray, p_o: np.ndarray, others: int) -> tuple[float, float]:
    """P(the queried needle comes first), P(it comes last) when its insert point has pmf ``p_q``, each of the
    ``others`` needles' has pmf ``p_o`` (independently) and needles at one insert point are in a random order."""
    below = np.concatenate([[0.0], np.cumsum(p_o)[:-1]])  # P(other < x)
    above = np.clip(1.0 - below - p_o, 0.0, 1.0)  # P(other > x)
    first = last = 0.0
    for j in range(others + 1):  # j others at the same insert point; the queried one wins the tie 1/(j+1)
        ties = math.comb(others, j) * p_o ** j / (j + 1)
        last += float((p_q * ties * below ** (others - j)).sum())
        first += float((p_q * ties * above ** (others - j)).sum())
    return first, last


def multikey_heuristics(length: int, depth: float, digits: int, keys: int) -> dict[str, float]:
    """Exact accuracy of the content-only answers to a multikey trial at ``length`` and ``depth``, from the placement
    rule of :func:`multikey_sequences`: copy a random needle's value, the first needle's, the latest needle's, or
    guess a random number. Copying a wrong needle is still right when its value happens to equal the answer."""
    filler_len = length + 1 - multikey_overhead(digits, keys)
    lo, hi = multikey_window(filler_len, depth)
    p = np.zeros(filler_len + 1)
    p[lo:hi + 1] = 1.0 / (hi - lo + 1)
    first, last = _order_odds(p, p, keys - 1)
    coincide = 10.0 ** -digits  # a wrong needle's value equals the answer

    def copy(pick: float) -> float:
        return pick + (1.0 - pick) * coincide

    return {"random needle": copy(1.0 / keys), "first needle": copy(first), "latest needle": copy(last),
            "random number": coincide}


@dataclass(frozen=True)
class Probe:
    """A retrieval probe: ``passkey`` (one needle, digit-free filler) or ``multikey`` (labelled needles in filler
    that carries numbers). Every sequence ends with the answer's ``digits`` bytes."""

    name: str = "passkey"
    digits: int = 2
    keys: int = 4  # multikey only: needles per sequence (one is queried)

    def __post_init__(self):
        if self.name not in PROBES:
            raise ConfigError(f"unknown probe {self.name!r}; valid: {', '.join(PROBES)}")
        if self.digits < 1:
            raise ConfigError(f"probe digits must be >= 1, got {self.digits}")

    @property
    def overhead(self) -> int:
        return passkey_overhead(self.digits) if self.name == "passkey" else multikey_overhead(self.digits, self.keys)

    @property
    def chance(self) -> float:
        """Accuracy of the best content-only guess at a depth-free level: a random number (passkey), a random
        needle's value (multikey). The chance of a trial is :meth:`chance_at` (it depends on the placement)."""
        return 10.0 ** -self.digits if self.name == "passkey" else \
            max(1.0 / self.keys + (1.0 - 1.0 / self.keys) * 10.0 ** -self.digits, 10.0 ** -self.digits)

    def heuristics(self, length: int, depth: float) -> dict[str, float]:
        """Exact accuracy of each content-only answer at ``length`` and ``depth`` (computed from the generator's
        placement rule): passkey, a random number (the filler has no digits, so copying the one number in the
        sequence *is* retrieval by content, the probe's point); multikey, :func:`multikey_heuristics`."""
        if self.name == "passkey":
            return {"random number": 10.0 ** -self.digits}
        return multikey_heuristics(length, depth, self.digits, self.keys)

    def chance_at(self, length: int, depth: float) -> float:
        """The chance level of a trial: the best content-only accuracy of :meth:`heuristics`."""
        return max(self.heuristics(length, depth).values())

    def sequences(self, n: int, length: int, depth: float | None, rng: np.random.Generator):
        if self.name == "passkey":
            return passkey_sequences(n, length, depth, self.digits, rng)
        return multikey_sequences(n, length, depth, self.digits, self.keys, rng)


class PasskeyBatches:
    """Training batches of probe sequences at ``seq_len`` (random depth, needles and filler per sequence)."""

    def __init__(self, batch_size: int, seq_len: int, digits: int, seed: int = 0, device="cpu",
                 probe: Probe | None = None):
        self.probe = probe or Probe("passkey", digits)
        self.probe.sequences(1, seq_len, 0.0, np.random.default_rng(0))  # validates the length
        self.batch_size, self.seq_len, self.digits, self.seed = batch_size, seq_len, self.probe.digits, seed
        self.device = torch.device(device)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ablate.io.data import step_rng

        seqs, _ = self.probe.sequences(self.batch_size, self.seq_len, None, step_rng(self.seed, step))
        buf = torch.from_numpy(seqs.astype(np.int64)).to(self.device)
        return buf[:, :-1], buf[:, 1:]


@torch.no_grad()
def probe_correct(model: nn.Module, probe: Probe, length: int, depth: float, *, trials: int, seed: int = 0,
                  device: str | torch.device | None = None, amp: str | None = None,
                  batch_tokens: int = 16384) -> int:
    """How many of ``trials`` answers the model gets exactly right (argmax of every answer digit, teacher forced)
    at context ``length`` with the (queried) needle at ``depth``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    salt = 0 if probe.name == "passkey" else 1 + probe.keys
    rng = np.random.default_rng([int(seed), int(length), int(round(depth * 1000))] + ([salt] if salt else []))
    seqs, _ = probe.sequences(trials, length, depth, rng)
    digits = probe.digits
    was_training = model.training
    model.eval()
    correct = 0
    per_batch = max(1, batch_tokens // length)
    try:
        for i in range(0, trials, per_batch):
            buf = torch.from_numpy(seqs[i:i + per_batch].astype(np.int64)).to(device)
            x = buf[:, :-1]
            with autocast_for(device, amp):
                logits = model(x)
            pred = logits[:, -digits:].argmax(-1)  # predictions of the last `digits` targets = the answer
            want = buf[:, -digits:]
            correct += int((pred == want).all(-1).sum())
    finally:
        model.train(was_training)
    return correct


def passkey_accuracy(model: nn.Module, length: int, depth: float, *, trials: int, digits: int, seed: int = 0,
                     device: str | torch.device | None = None, amp: str | None = None,
                     batch_tokens: int = 16384) -> float:
    """Fraction of ``trials`` passkeys retrieved exactly (all digits) at context ``length`` and needle ``depth``."""
    return probe_correct(model, Probe("passkey", digits), length, depth, trials=trials, seed=seed, device=device,
                         amp=amp, batch_tokens=batch_tokens) / trials


__all__ = ["MODES", "Window", "plan_windows", "span_needed", "EvalResult", "evaluate", "incremental_logits",
           "passkey_sequences", "passkey_overhead", "PasskeyBatches", "passkey_accuracy", "passkey_loss",
           "PASSKEY_FILLER", "PROBES", "Probe", "multikey_sequences", "multikey_overhead", "probe_correct"]
