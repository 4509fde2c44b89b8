"""Tokenizers for the suites that train: ``--tokenizer bytes | PATH | bpe:N`` (setting ``data.tokenizer``).

* ``bytes`` (default; also ``None``): one token per byte, vocabulary 256 -- the corpus as loaded.
* ``PATH``: a Hugging Face ``tokenizer.json`` (``tokenizers.Tokenizer.from_file``); id ``json:<sha256[:16] of the
  file>``.
* ``bpe:N``: a byte-level BPE of ``N`` tokens (256 byte tokens + merges; fewer when the text runs out of pairs)
  trained with the ``tokenizers`` library on the **training split only**, single-threaded so the merges are the
  same on every run; id ``bpeN:<sha256[:16] of its tokenizer.json>``. Cached under
  ``<cache>/tokenizers/bpe<N>-<corpus hash>/`` (``tokenizer.json`` + ``meta.json`` with the file's sha256).

Text is cut into pieces of about 1 MiB at line ends (never inside a UTF-8 character) and each piece is encoded on
its own, for BPE training and for encoding alike; invalid UTF-8 is replaced (U+FFFD) and bytes are counted on the
text the tokenizer saw.

Tokenised corpora are cached under ``<cache>/tokens/<key>/`` (``<cache>``: ``$ABLATE_CACHE`` or
``~/.cache/ablate``; ``key`` hashes the corpus hash and the tokenizer id): ``train.bin`` / ``val.bin`` (uint16 when
the vocabulary fits, else uint32; memory-mapped when used), ``token_bytes.npy`` (bytes of each vocabulary entry,
when the tokenizer is byte-level and they add up to the text) and the sidecar ``meta.json`` (vocabulary size,
dtype, tokenizer id and hash, corpus hash, token hash, token and byte counts per split). An entry is used only if
the sidecar parses, names the same corpus and tokenizer, the file sizes match and the tokens hash to the recorded
hash; anything else is rebuilt. Entries are written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ablate.errors import ConfigError, UnavailableError
from ablate.io.corpus import hash_arrays, hash_files

CACHE_FORMAT = 1
_PIECE = 1 << 20  # bytes of text per encoded piece
_BATCH = 16  # pieces per encode_batch call
_EXTRA = "the `hf` extra: pip install 'tokenizers>=0.15'"


def cache_dir() -> Path:
    """``$ABLATE_CACHE`` or ``~/.cache/ablate``."""
    return Path(os.environ.get("ABLATE_CACHE") or Path.home() / ".cache" / "ablate").expanduser()


def parse(spec: str | None) -> tuple[str, object]:
    """``("bytes", None)``, ``("file", Path)`` or ``("bpe", N)``; a one-line ConfigError otherwise."""
    text = "" if spec is None else str(spec).strip()
    if text in ("", "bytes", "byte", "none"):
        return "bytes", None
    if text.startswith("bpe:"):
        try:
            n = int(text[4:])
        except ValueError:
            raise ConfigError(f"tokenizer {text!r}: bpe:N needs an integer vocabulary size") from None
        if not 257 <= n <= 1 << 20:
            raise ConfigError(f"tokenizer {text!r}: N must be in 257..{1 << 20} (256 byte tokens + merges)")
        return "bpe", n
    p = Path(text).expanduser()
    if p.is_file():
        return "file", p
    raise ConfigError(f"unknown tokenizer {text!r}: use bytes, bpe:N or the path of a tokenizer.json")


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UnavailableError(f"--tokenizer needs the `tokenizers` package ({_EXTRA})") from None
    return tokenizers


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Text pieces


def _next_cut(arr: np.ndarray, j: int) -> int:
    """Index just past the first newline at or after ``j`` (within one more piece), else the first UTF-8 character
    boundary at or after ``j + _PIECE``; ``len(arr)`` at the end."""
    n = len(arr)
    limit = min(n, j + _PIECE)
    nl = np.flatnonzero(np.asarray(arr[j:limit]) == 10)
    if len(nl):
        return j + int(nl[0]) + 1
    k = limit
    while k < n and (int(arr[k]) & 0xC0) == 0x80:  # continuation byte: not a character start
        k += 1
    return k


def pieces(arr: np.ndarray):
    """The text of a byte array as ``str`` pieces of about ``_PIECE`` bytes, cut after a newline."""
    n, i = len(arr), 0
    while i < n:
        j = n if n - i <= _PIECE else _next_cut(arr, i + _PIECE)
        yield bytes(np.asarray(arr[i:j])).decode("utf-8", errors="replace")
        i = j


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_byte_lengths(tok) -> np.ndarray | None:
    """Bytes of every vocabulary entry of a byte-level tokenizer (each entry spelled in GPT-2's byte alphabet);
    None when some entry is not (special tokens of a non-byte-level tokenizer)."""
    alphabet = _byte_alphabet()
    vocab = tok.get_vocab(with_added_tokens=True)
    out = np.zeros(max(vocab.values()) + 1 if vocab else 0, dtype=np.int64)
    for piece, i in vocab.items():
        if any(c not in alphabet for c in piece):
            return None
        out[i] = len(piece)
    return out


def _train_bpe(corpus, n: int) -> tuple[bytes, str]:
    """Train (or load from the cache) the byte-level BPE of ``n`` tokens on ``corpus.train``:
    ``(tokenizer.json bytes, path)``."""
    folder = cache_dir() / "tokenizers" / f"bpe{n}-{corpus.hash}"
    tj, meta_f = folder / "tokenizer.json", folder / "meta.json"
    try:
        data = tj.read_bytes()
        meta = json.loads(meta_f.read_text())
        if meta.get("format") == CACHE_FORMAT and meta.get("sha256") == _sha(data) and \
                meta.get("corpus_hash") == corpus.hash and meta.get("vocab_size") == n:
            return data, str(tj)
    except (OSError, ValueError, AttributeError):
        pass
    tk = _tokenizers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    parallel = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread: the same merges on every run
    try:
        tok.train_from_iterator(pieces(corpus.train), trainer=trainer)
    finally:
        if parallel is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallel
    data = tok.to_str().encode("utf-8")
    _write_entry(folder, {"tokenizer.json": data},
                 {"format": CACHE_FORMAT, "sha256": _sha(data), "corpus_hash": corpus.hash, "vocab_size": n,
                  "tokenizers": tk.__version__})
    return data, str(tj)


def _write_entry(folder: Path, files: dict[str, bytes], meta: dict) -> None:
    """Write ``files`` and ``meta.json`` into a temporary folder and rename it to ``folder`` (replacing a bad one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        _install(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process installed it meanwhile: theirs is as good (checked when read)
        pass


# ---------------------------------------------------------------------------------------------------------------
# Tokenised corpora


def tokenize(corpus, spec: str | None):
    """``corpus`` (byte-level) under the tokenizer ``spec``: the corpus itself for ``bytes``, else a tokenised
    :class:`ablate.io.corpus.Corpus` from the cache (built on a miss)."""
    kind, arg = parse(spec)
    if kind == "bytes":
        return corpus
    if not corpus.byte_level:
        raise ConfigError(f"--tokenizer {spec}: {corpus.name} is already tokens (vocab {corpus.vocab_size}); "
                          "a tokenizer needs text data")
    _tokenizers()
    from tokenizers import Tokenizer

    if kind == "bpe":
        data, source = _train_bpe(corpus, int(arg))
        tok_hash = _sha(data)[:16]
        tok_id = f"bpe{arg}:{tok_hash}"
    else:
        path = Path(arg)
        data, source = path.read_bytes(), str(path)
        tok_hash = _sha(data)[:16]
        tok_id = f"json:{tok_hash}"
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:
        raise ConfigError(f"cannot read tokenizer {source}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") \
            from None
    key = _sha(f"ablate-tokens\0{CACHE_FORMAT}\0{corpus.hash}\0{tok_id}".encode())[:16]
    folder = cache_dir() / "tokens" / key
    expect = {"corpus_hash": corpus.hash, "tokenizer": tok_id, "tokenizer_hash": tok_hash}
    loaded = _load_tokens(folder, expect)
    if loaded is None:
        _build_tokens(folder, corpus, tok, expect)
        loaded = _load_tokens(folder, expect)
        if loaded is None:
            raise ConfigError(f"tokenised corpus cache {folder} cannot be written or read back")
    train, val, meta, table = loaded
    return replace(corpus, train=train, val=val, vocab_size=int(meta["vocab_size"]), byte_level=False,
                   hash=meta["hash"], tokenizer=tok_id, text_hash=corpus.hash,
                   train_bytes=int(meta["train_bytes"]), val_bytes=int(meta["val_bytes"]), token_bytes=table,
                   val_docs=None)  # document offsets are byte offsets: blocks of tokens stand in for them


def _dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)


def _encode_split(tok, arr: np.ndarray, out: Path, dtype: np.dtype) -> tuple[int, int]:
    """Encode a byte split into the token file ``out``: (tokens, bytes)."""
    n_tok = n_bytes = 0
    with open(out, "wb") as fh:
        batch: list[str] = []

        def flush():
            nonlocal n_tok
            for enc in tok.encode_batch(batch, add_special_tokens=False):
                ids = np.asarray(enc.ids, dtype=dtype)
                fh.write(ids.tobytes())
                n_tok += len(ids)
            batch.clear()

        for piece in pieces(arr):
            n_bytes += len(piece.encode("utf-8"))
            batch.append(piece)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()
    return n_tok, n_bytes


def _build_tokens(folder: Path, corpus, tok, expect: dict) -> None:
    vocab = int(tok.get_vocab_size(with_added_tokens=True))
    dtype = _dtype(vocab)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        counts = {}
        for split, arr in (("train", corpus.train), ("val", corpus.val)):
            counts[split] = _encode_split(tok, arr, tmp / f"{split}.bin", dtype)
            if counts[split][0] < 2:
                raise ConfigError(f"tokenised {split} split of {corpus.name} holds {counts[split][0]} tokens")
        train = np.memmap(tmp / "train.bin", dtype=dtype, mode="r")
        val = np.memmap(tmp / "val.bin", dtype=dtype, mode="r")
        table = token_byte_lengths(tok)
        exact = table is not None and len(table) <= vocab and all(
            int(_table_sum(table, a)) == counts[s][1] for s, a in (("train", train), ("val", val)))
        if exact:
            np.save(tmp / "token_bytes.npy", np.pad(table, (0, vocab - len(table))).astype(np.int32))
        meta = {"format": CACHE_FORMAT, **expect, "name": corpus.name, "split": corpus.split,
                "vocab_size": vocab, "dtype": dtype.name, "hash": hash_arrays(train, val),
                "train_tokens": counts["train"][0], "val_tokens": counts["val"][0],
                "train_bytes": counts["train"][1], "val_bytes": counts["val"][1], "bytes_exact": bool(exact)}
        del train, val
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        _install(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _table_sum(table: np.ndarray, arr: np.ndarray) -> int:
    total, step = 0, 1 << 22
    for i in range(0, len(arr), step):
        total += int(table[np.asarray(arr[i:i + step], dtype=np.int64)].sum())
    return total


def _load_tokens(folder: Path, expect: dict):
    """``(train, val, meta, token_bytes | None)`` of a valid cache entry, else None (missing or not trusted)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT or any(meta.get(k) != v for k, v in expect.items()):
            return None
        dtype = np.dtype(meta["dtype"])
        if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
            return None
        files = [folder / "train.bin", folder / "val.bin"]
        for f, n in zip(files, (meta["train_tokens"], meta["val_tokens"])):
            if not isinstance(n, int) or n < 2 or f.stat().st_size != n * dtype.itemsize:
                return None
        train = np.memmap(files[0], dtype=dtype, mode="r")
        val = np.memmap(files[1], dtype=dtype, mode="r")
        if hash_files(train, val, files) != meta["hash"]:
            return None
        table = None
        if meta.get("bytes_exact"):
            table = np.load(folder / "token_bytes.npy", allow_pickle=False).astype(np.int64)
            if table.shape != (int(meta["vocab_size"]),) or (table < 0).any():
                return None
        for k in ("vocab_size", "train_bytes", "val_bytes"):
            if not isinstance(meta.get(k), int) or meta[k] < 1:
                return None
        return train, val, meta, table
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


__all__ = ["tokenize", "parse", "cache_dir", "pieces", "token_byte_lengths", "CACHE_FORMAT"]
