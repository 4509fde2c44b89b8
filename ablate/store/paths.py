"""Where rows live on disk: results files, the launch folder beside each (``X.launch/``) and its workers' shards,
the expansion of files and folders into results files (:func:`iter_files`) and the suite a file is named for
(:func:`named_suite`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

from ablate.errors import ResultsFileError
from ablate.store.schema import SUITES

__all__ = ["PathLike", "Paths", "SHARD_DIR", "launch_dir", "shard_path", "shard_files", "iter_files", "named_suite"]

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]

SHARD_DIR = "shards"


def _stem(path: Path) -> str:
    return path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name


def launch_dir(path: PathLike) -> Path:
    """The folder beside results file ``X.jsonl`` that holds what launched workers leave: ``X.launch/``
    (``plan.json``, ``shards/<task>.jsonl``, ``state/<task>.json``, ``logs/``; see :mod:`ablate.launchers.launch`)."""
    path = Path(path)
    return path.parent / f"{_stem(path)}.launch"


def shard_path(path: PathLike, shard: str) -> Path:
    """Where worker ``shard`` writes the rows of results file ``path``: ``X.launch/shards/<shard>.jsonl``."""
    if not shard or "/" in shard or shard.startswith("."):
        raise ValueError(f"bad shard name {shard!r}")
    return launch_dir(path) / SHARD_DIR / f"{shard}.jsonl"


def shard_files(path: PathLike) -> list[Path]:
    """The worker shards of results file ``path`` (sorted), if any."""
    folder = launch_dir(path) / SHARD_DIR
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def iter_files(paths: Paths, *, missing_ok: bool = False) -> list[Path]:
    """Expand files and folders (all ``*.jsonl`` below, sorted) into a list of results files.

    A results file ``X.jsonl`` stands for itself and its workers' shards (``X.launch/shards/*.jsonl``), so reading,
    resuming and reporting see the rows of every worker. Each file is listed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob("*.jsonl"), key=lambda f: f.relative_to(p).as_posix()))
        elif p.exists() or shard_files(p):
            if p.exists():
                files.append(p)
            files.extend(shard_files(p))
        elif not missing_ok:
            raise ResultsFileError(f"results file {p} does not exist")
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


def named_suite(path: PathLike) -> str | None:
    """The suite a results file is named for, if any: ``<suite>.jsonl``, a file in a folder named ``<suite>``
    (``results/extrapolation/cpu-tiny.jsonl``, ``runs/training/cpu-tiny.jsonl``), or a worker shard of such a file.

    When such a file holds rows of that suite, the readers (:mod:`ablate.store.reader`) read it as that suite's
    results file: a row of another suite in it is invalid. (A file named for a suite that holds none of its rows --
    say ``--out`` was named after another suite -- is read as it is.)"""
    path = Path(path)
    if path.parent.name == SHARD_DIR and path.parent.parent.name.endswith(".launch"):
        launch = path.parent.parent
        path = launch.parent / (launch.name[: -len(".launch")] + ".jsonl")
    for name in (_stem(path), path.parent.name):
        if name in SUITES:
            return name
    return None
