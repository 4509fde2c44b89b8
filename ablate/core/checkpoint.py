"""Checkpoints written atomically with a checksum, and read back only when they are whole.

A checkpoint file is one header line ``ABLATE-CKPT 1 sha256=<hex> bytes=<n>`` followed by the ``torch.save`` bytes.
It is written to a temporary file in the same folder, flushed to disk and renamed over the target (``os.replace``),
so a reader sees the old file or the new one, never half of one. :func:`load_checkpoint` checks the length and the
checksum before unpickling; a truncated, corrupted or unreadable file raises :class:`CorruptCheckpoint` naming the
file and what is wrong, and the caller retrains instead of failing on every re-run. Files from before the header
(plain ``torch.save``) still load; a failure to read one is reported the same way.

Loading never runs code: ``torch.load(..., weights_only=True)`` unpickles tensors and plain types only (dicts, lists,
tuples, strings, numbers, booleans, None), so a crafted ``.pt`` in a run folder is refused as unreadable rather than
executed; :func:`save_checkpoint` turns numpy scalars into Python numbers and refuses anything else that is not plain.
``load_checkpoint(path, expect={...})`` also compares what the checkpoint was saved for (its model settings, its
task) with what the caller is about to use it for: a checkpoint of another model -- even one with the same tensor
shapes -- raises :class:`CheckpointMismatch` (a :class:`CorruptCheckpoint`: the caller retrains, with one warning).
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from ablate.errors import AblateError
from ablate.store.atomic import writing

__all__ = ["CorruptCheckpoint", "CheckpointMismatch", "save_checkpoint", "load_checkpoint", "plain", "MAGIC"]

MAGIC = b"ABLATE-CKPT 1 "


class CorruptCheckpoint(AblateError):
    """A checkpoint that cannot be trusted (truncated, checksum mismatch, unreadable)."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = Path(path), why
        super().__init__(f"checkpoint {path} is corrupt ({why})")


class CheckpointMismatch(CorruptCheckpoint):
    """A whole checkpoint saved for something else (another model's settings, another task)."""

    def __init__(self, path: Path, why: str):
        super().__init__(path, why)
        self.args = (f"checkpoint {path} was {why}",)


def plain(obj: Any, where: str = "payload") -> Any:
    """``obj`` as tensors and plain types only (what ``torch.load(weights_only=True)`` reads back): numpy scalars
    and arrays become Python numbers and lists, tuples stay tuples, dict keys must be plain; anything else raises
    TypeError naming where it sits."""
    if obj is None or type(obj) in (bool, int, float, str, bytes) or \
            isinstance(obj, (torch.Tensor, torch.dtype, torch.device)):
        return obj
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # numpy scalars (np.float64 is a float) and arrays
        return plain(obj.tolist(), where)
    for base in (bool, int, float, str):  # subclasses (enums, ...) pickle as their class: keep the plain value
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise TypeError(f"checkpoint {where} has a key of type {type(k).__name__}")
            out[k] = plain(v, f"{where}[{k!r}]")
        return type(obj)(out) if type(obj) is not dict and isinstance(obj, collections.OrderedDict) else out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f"checkpoint {where} is a {type(obj).__name__}; a checkpoint holds tensors and plain types only")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically, with its sha256 in a header line. ``payload`` must hold tensors and
    plain types only (:func:`plain`; numpy numbers are converted): it is read back with ``weights_only=True``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(plain(payload), buf)
    body = buf.getvalue()
    header = MAGIC + f"sha256={hashlib.sha256(body).hexdigest()} bytes={len(body)}\n".encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path, "write the checkpoint"):  # a full disk: one line naming the checkpoint, no half file
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, expect: dict[str, Any] | None = None,
                    expect_if_saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint` (or a plain ``torch.save`` file); raises
    :class:`CorruptCheckpoint` when it is truncated, fails its checksum or cannot be unpickled with
    ``weights_only=True`` (anything but tensors and plain types: a crafted pickle is refused, never run).

    ``expect``: payload entries that must be there and equal (e.g. ``{"model_cfg": dataclasses.asdict(mcfg)}``);
    ``expect_if_saved``: the same for entries older checkpoints lack (e.g. the task's identity). A difference raises
    :class:`CheckpointMismatch` naming the first setting that differs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(path, f"unreadable: {exc.strerror or exc}") from None
    if data.startswith(MAGIC):
        end = data.find(b"\n")
        try:
            fields = dict(f.split("=", 1) for f in data[len(MAGIC):end].decode("ascii").split())
            want, size = fields["sha256"], int(fields["bytes"])
        except (ValueError, KeyError, UnicodeDecodeError):
            raise CorruptCheckpoint(path, "malformed header") from None
        body = data[end + 1:]
        if len(body) != size:
            raise CorruptCheckpoint(path, f"truncated: {len(body)} of {size} bytes")
        got = hashlib.sha256(body).hexdigest()
        if got != want:
            raise CorruptCheckpoint(path, f"sha256 mismatch: {got[:12]}… instead of {want[:12]}…")
    else:
        body = data
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptCheckpoint(path, f"cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") \
            from None
    if not isinstance(payload, dict):
        raise CorruptCheckpoint(path, f"holds a {type(payload).__name__}, not a checkpoint")
    for entries, required in ((expect or {}, True), (expect_if_saved or {}, False)):
        for key, want in entries.items():
            if key not in payload:
                if required:
                    raise CheckpointMismatch(path, f"it records no {key}; saved by another version or suite")
                continue
            diff = _difference(payload[key], want, key)
            if diff:
                raise CheckpointMismatch(path, f"saved for another model or task: {diff}")
    return payload


def _difference(got: Any, want: Any, where: str) -> str | None:
    """The first place where the saved ``got`` differs from the expected ``want`` (``where``: its dotted name), as
    ``position='sinusoidal' saved, 'alibi' here``; None when they agree (tuples and lists compare alike)."""
    if isinstance(want, dict) and isinstance(got, dict):
        for k in list(want) + [k for k in got if k not in want]:
            if k not in got or k not in want:
                side = "saved" if k in got else "here"
                return f"{where}.{k} only {side}"
            d = _difference(got[k], want[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        if len(got) == len(want) and all(_difference(g, w, where) is None for g, w in zip(got, want)):
            return None
    elif type(got) is type(want) and got == want or (isinstance(got, (int, float)) and isinstance(want, (int, float))
                                                      and not isinstance(got, bool) and not isinstance(want, bool)
                                                      and got == want):
        return None
    short = where.split(".", 1)[1] if "." in where else where
    return f"{short}={got!r} saved, {want!r} here"
