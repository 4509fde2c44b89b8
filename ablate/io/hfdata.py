"""Hugging Face datasets as corpora: ``--data hf:NAME[:CONFIG]`` and ``--data FOLDER`` for a ``save_to_disk`` folder.

Needs the optional ``datasets`` package (the ``hf`` extra). Nothing is downloaded unless asked: ``hf:`` sets
``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` for the load unless the environment sets them already (set
``HF_DATASETS_OFFLINE=0`` to let ``datasets`` download a dataset once into its cache). A dataset missing from the
local cache is a one-line error.

The text is the ``text`` column (else the first string column). Each row is followed by ``"\\n"`` unless it already
ends with one, so a line-per-row dataset (``load_dataset("text", ...)``, WikiText) gives back its files.

Split: the dataset's own ``train`` split, held out against ``validation`` (else ``valid``, ``val``, ``test``) when
present; otherwise the rows of the one split are documents named by their row index (12 digits, zero-padded), held out by the crc32 rule of
:mod:`ablate.io.data` (``by row crc32 F``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ablate.errors import ConfigError, UnavailableError
from ablate.io.corpus import Corpus, by_document

VAL_SPLITS = ("validation", "valid", "val", "test")
_EXTRA = "the `hf` extra: pip install 'datasets>=2.14' 'tokenizers>=0.15'"


def _datasets():
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.setdefault(var, "1")
    try:
        import datasets
    except ImportError:
        raise UnavailableError(f"--data hf:... and dataset folders need the `datasets` package ({_EXTRA})") from None
    offline = os.environ.get("HF_DATASETS_OFFLINE", "1").upper() in ("1", "ON", "YES", "TRUE")
    if offline:  # in case datasets / huggingface_hub were imported before the environment was set
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
            if hasattr(datasets.config, var):
                setattr(datasets.config, var, True)
        try:
            import huggingface_hub.constants as hub

            hub.HF_HUB_OFFLINE = True
        except (ImportError, AttributeError):
            pass
    return datasets


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` is what ``Dataset(Dict).save_to_disk`` writes."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def load_saved(folder: Path, val_frac: float):
    ds = _datasets()
    try:
        obj = ds.load_from_disk(str(folder))
    except Exception as exc:
        raise ConfigError(f"cannot load the dataset folder {folder}: {_one_line(exc)}") from None
    return _corpus(obj, str(folder), val_frac)


def load_hf(spec: str, val_frac: float):
    """``NAME[:CONFIG]`` from the local cache (or a local dataset folder / script NAME)."""
    name, _, config = spec.partition(":")
    if not name:
        raise ConfigError("--data hf:NAME[:CONFIG] needs a dataset name")
    ds = _datasets()
    p = Path(name).expanduser()
    if p.is_dir() and is_saved_dataset(p):
        return load_saved(p, val_frac)
    try:
        obj = ds.load_dataset(name, config or None)
    except Exception as exc:
        hint = ("" if os.environ.get("HF_DATASETS_OFFLINE") in ("0", "false", "False") else
                "; not in the local cache? fetch it once with HF_DATASETS_OFFLINE=0, or give a save_to_disk folder")
        raise ConfigError(f"cannot load dataset hf:{spec}: {_one_line(exc)}{hint}") from None
    return _corpus(obj, f"hf:{spec}", val_frac)


def _text_column(d) -> str:
    feats = d.features
    if "text" in feats:
        return "text"
    for col, f in feats.items():
        if getattr(f, "dtype", None) in ("string", "large_string"):
            return col
    raise ConfigError(f"dataset has no text column (columns: {', '.join(feats) or 'none'})")


def _rows(d, col: str):
    for batch in d.select_columns([col]).iter(batch_size=4096):
        for text in batch[col]:
            yield "" if text is None else str(text)


def _split_bytes(d, col: str) -> np.ndarray:
    buf = bytearray()
    for text in _rows(d, col):
        buf += text.encode("utf-8")
        if not text.endswith("\n"):
            buf += b"\n"
    return np.frombuffer(bytes(buf), dtype=np.uint8)


def _corpus(obj, name: str, val_frac: float):
    splits = dict(obj) if hasattr(obj, "keys") else {"train": obj}
    if not splits:
        raise ConfigError(f"dataset {name} has no splits")
    val_name = next((s for s in VAL_SPLITS if s in splits), None)
    if "train" in splits and val_name is not None:
        col = _text_column(splits["train"])
        train, val = _split_bytes(splits["train"], col), _split_bytes(splits[val_name], col)
        if len(train) < 2 or len(val) < 2:
            raise ConfigError(f"dataset {name}: the train / {val_name} splits hold {len(train)} / {len(val)} bytes")
        return Corpus(name, train, val, 256, True, f"dataset splits train / {val_name}",
                      documents=(splits["train"].num_rows, splits[val_name].num_rows))
    only = "train" if "train" in splits else sorted(splits)[0]
    d = splits[only]
    col = _text_column(d)
    docs = ((f"{i:012d}", (t if t.endswith("\n") else t + "\n").encode("utf-8")) for i, t in enumerate(_rows(d, col)))
    return by_document(docs, val_frac, name, "row")


__all__ = ["load_hf", "load_saved", "is_saved_dataset", "VAL_SPLITS"]
