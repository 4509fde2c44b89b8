"""Checkpoints written atomically with a checksum, and read back only when they are whole.

A checkpoint file is one header line ``ABLATE-CKPT 1 sha256=<hex> bytes=<n>`` followed by the ``torch.save`` bytes.
It is written to a temporary file in the same folder, flushed to disk and renamed over the target (``os.replace``),
so a reader sees the old file or the new one, never half of one. :func:`load_checkpoint` checks the length and the
checksum before unpickling; a truncated, corrupted or unreadable file raises :class:`CorruptCheckpoint` naming the
file and what is wrong, and the caller retrains instead of failing on every re-run. Files from before the header
(plain ``torch.save``) still load; a failure to read one is reported the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from ablate.errors import AblateError

__all__ = ["CorruptCheckpoint", "save_checkpoint", "load_checkpoint", "MAGIC"]

MAGIC = b"ABLATE-CKPT 1 "


class CorruptCheckpoint(AblateError):
    """A checkpoint that cannot be trusted (truncated, checksum mismatch, unreadable)."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = Path(path), why
        super().__init__(f"checkpoint {path} is corrupt ({why})")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically, with its sha256 in a header line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = MAGIC + f"sha256={hashlib.sha256(body).hexdigest()} bytes={len(body)}\n".encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint` (or a plain ``torch.save`` file); raises
    :class:`CorruptCheckpoint` when it is truncated, fails its checksum or cannot be unpickled."""
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
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CorruptCheckpoint(path, f"cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") \
            from None
    if not isinstance(payload, dict):
        raise CorruptCheckpoint(path, f"holds a {type(payload).__name__}, not a checkpoint")
    return payload
