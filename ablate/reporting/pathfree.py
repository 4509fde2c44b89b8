"""Text for reports without machine paths (no torch): a row's corpus named by what it is, command lines with their
absolute paths cut to the last component.

    data_text({"data": "stdlib (/root/.pyenv/versions/3.11.7/lib/python3.11)", "data.hash": "b60ac18034a48cd6"})
    # -> 'stdlib (Python 3.11 sources, corpus b60ac180)'
    path_free("ablate run --out /tmp/rr2")   # -> 'ablate run --out …/rr2'

A row's ``data`` column holds the corpus's name as the loader made it: ``topics``, ``hf:NAME``, ``stdlib (ROOT)`` or
the ``--data`` path itself; the corpus hash (``data.hash``) says which text it was, wherever it lay.
``tests/reporting/test_report_paths.py`` scans every generated report for absolute paths.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

__all__ = ["ABS_PATH", "data_text", "path_free", "has_abs_path"]

# An absolute path: POSIX (``/x/y``, not inside a word, a fraction or a URL) or Windows (``C:\x``, ``C:/x``).
_SEG = r"[^\s/\\\"'`<>|(),;\]]+"
ABS_PATH = re.compile(rf"(?<![\w.~:/\\<-])/{_SEG}(?:/{_SEG})*/?|\b[A-Za-z]:[\\/](?:{_SEG}[\\/]?)*")
_PYLIB = re.compile(r"python(\d+\.\d+)$")


def _last(path: str) -> str:
    parts = [p for p in re.split(r"[\\/]+", path) if p and not re.fullmatch(r"[A-Za-z]:", p)]
    return parts[-1] if parts else path


def path_free(text: Any) -> str:
    """``text`` with every absolute path replaced by ``…/`` and its last component (``/tmp/rr2`` → ``…/rr2``)."""
    return ABS_PATH.sub(lambda m: "…/" + _last(m.group(0)), str(text))


def has_abs_path(text: str) -> list[str]:
    """The absolute paths in ``text`` (empty when there is none)."""
    return [m.group(0) for m in ABS_PATH.finditer(text)]


def _where(path: str) -> str:
    m = _PYLIB.search(_last(path).lower())
    return f"Python {m.group(1)} sources" if m else _last(path)


def data_text(row: Mapping[str, Any]) -> str:
    """The corpus of a row for a caption, without a machine path: ``stdlib (Python 3.11 sources, corpus b60ac180)``
    for ``stdlib (/usr/lib/python3.11)``, ``corpus.bin (corpus 1a2b3c4d)`` for ``--data /data/corpus.bin``; a name
    without a path (``topics``, ``hf:wikitext``) unchanged."""
    name = str(row.get("data") or "")
    h = row.get("data.hash")
    h = "" if h is None or (isinstance(h, float) and math.isnan(h)) else str(h)[:8]
    corpus = f"corpus {h}" if h else ""
    m = re.fullmatch(r"(.*?) \((.*)\)", name)
    if m and ABS_PATH.fullmatch(m.group(2).strip()):
        inner = ", ".join(x for x in (_where(m.group(2).strip()), corpus) if x)
        return f"{m.group(1)} ({inner})"
    if ABS_PATH.fullmatch(name.strip()):
        return f"{_last(name)} ({corpus})" if corpus else _last(name)
    return path_free(name)
