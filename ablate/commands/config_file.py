"""Sweep files: ``ablate run --config FILE`` and ``ablate run ... --print-config``.

A file holds what the command line's "What to run" options hold, with the same keys and the same checks::

    # sweep.toml -- ablate run --config sweep.toml
    suite = "training"
    preset = "tiny"
    seeds = 2

    [set]                        # --set KEY=VALUE, one line each
    "train.steps" = 200
    model.d_model = 128          # a TOML dotted key is the same key

    [sweep]                      # --sweep KEY=V1,V2: a list of values per key
    "model.norm" = ["layernorm", "rmsnorm"]
    "model.activation" = ["relu", "swiglu"]

TOML is read with the standard library (``tomllib``); a ``.yaml``/``.yml`` file needs PyYAML (the ``yaml`` extra) and
has the same shape (``set:`` and ``sweep:`` mappings). Every key is optional; nested tables are joined with dots
(``[set.train]`` ``steps = 200`` is ``train.steps=200``). Values become the ``--set`` text they stand for: ``true`` /
``false``, numbers as written, a list in ``[set]`` as ``V1,V2``. The command line adds to the file: its ``--set``
come after the file's (the last one of a key wins, as with repeated ``--set``), its ``--sweep`` next to the file's
(one key swept twice is refused), and ``--suite``/``--preset``/``--seeds`` given there must agree with / win over
the file's. A mistake in the file is the same one-line error as on the command line, prefixed ``FILE:LINE:``.

``--print-config`` writes the run's "what to run" as such a TOML file on stdout (``> sweep.toml``), and runs
nothing; ``--config`` reads it back to the same plan (compare their ``--dry-run``).
"""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ablate.errors import ConfigError

__all__ = ["RunFile", "Item", "load", "dump", "checked"]

TOP_KEYS = ("suite", "preset", "seeds", "set", "sweep")
YAML_EXTRA = "pip install 'ablate-bench[yaml]'"


@dataclasses.dataclass(frozen=True)
class Item:
    """One ``--set`` / ``--sweep`` of a file: its command-line text and where it was written."""

    text: str  # KEY=VALUE (set) or KEY=V1,V2 (sweep)
    line: Optional[int]


@dataclasses.dataclass(frozen=True)
class RunFile:
    path: Path
    suite: Optional[str] = None
    preset: Optional[str] = None
    seeds: Optional[int] = None
    sets: tuple[Item, ...] = ()
    sweeps: tuple[Item, ...] = ()
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict)  # "suite", "set.KEY", ... -> line

    def line_of(self, key: str | None) -> Optional[int]:
        """The line ``key`` is written on; an inline table's key: the line of the key that holds it."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None

    def where(self, key: str | None = None, line: int | None = None) -> str:
        line = line if line is not None else self.line_of(key)
        return f"{self.path}:{line}" if line else str(self.path)


# ---------------------------------------------------------------------------------------------------------------
# Reading


def load(path: str | Path) -> RunFile:
    """Read and check a sweep file (TOML, or YAML with PyYAML); any mistake is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file" if not path.exists() else f"--config {path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        data, lines = _read_yaml(path, text)
    elif path.suffix.lower() in (".toml", ""):
        data, lines = _read_toml(path, text)
    else:
        raise ConfigError(f"--config {path}: unknown format {path.suffix!r}; use .toml (or .yaml/.yml with PyYAML)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a table of {', '.join(TOP_KEYS)}, got {type(data).__name__}")
    return _from_data(path, data, lines)


def _read_toml(path: Path, text: str) -> tuple[dict, dict[str, int]]:
    if tomllib is None:
        raise ConfigError(f"--config {path}: reading TOML on Python 3.10 needs tomli (pip install tomli)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"{where}: not valid TOML: {msg}") from None
    return data, _toml_lines(text)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=""")


def _toml_key(raw: str) -> str:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""", raw)
    return ".".join(a or b or c for a, b, c in parts)


def _toml_lines(text: str) -> dict[str, int]:
    """Dotted key (table and key joined) -> the line it is written on (tomllib gives no positions)."""
    out: dict[str, int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m and not _KEYLINE.match(line):
            table = _toml_key(m.group(1))
            out.setdefault(table, n)
            continue
        m = _KEYLINE.match(line)
        if m:
            out.setdefault(f"{table}.{_toml_key(m.group(1))}" if table else _toml_key(m.group(1)), n)
    return out


def _read_yaml(path: Path, text: str) -> tuple[Any, dict[str, int]]:
    try:
        import yaml
    except ModuleNotFoundError:
        raise ConfigError(f"--config {path}: YAML needs PyYAML ({YAML_EXTRA}); or write the file as TOML") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(getattr(exc, 'problem', exc)).split())}") from None
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines.setdefault(key, k.start_mark.line + 1)
                walk(v, key)

    if root is not None:
        walk(root, "")
    return data if data is not None else {}, lines


def _flat(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out += _flat(v, key)
        else:
            out.append((key, v))
    return out


def _text(value: Any, where: str, key: str) -> str:
    """A file value as the command-line text it stands for."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key} = {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {key}: a {type(value).__name__} is not a setting value (give a string, a number, "
                      f"true/false or a list of them)")


def _from_data(path: Path, data: dict, lines: Mapping[str, int]) -> RunFile:
    rf = RunFile(path=path, lines=dict(lines))
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        k = unknown[0]
        hint = (f" (a setting goes under [set]: \"{k}\" = ...)" if "." in k or k in ("model", "train", "eval", "data")
                else "")
        raise ConfigError(f"{rf.where(k)}: unknown key {k!r}; valid: {', '.join(TOP_KEYS)}{hint}")
    fields: dict[str, Any] = {}
    for key, typ in (("suite", str), ("preset", str)):
        if key in data:
            if not isinstance(data[key], typ) or not data[key].strip():
                raise ConfigError(f"{rf.where(key)}: {key} must be a name (a string), got {data[key]!r}")
            fields[key] = data[key].strip()
    if "seeds" in data:
        s = data["seeds"]
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ConfigError(f"{rf.where('seeds')}: seeds must be a whole number >= 1, got {s!r}")
        fields["seeds"] = s
    for section in ("set", "sweep"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{rf.where(section)}: {section} must be a table of KEY = value"
                              + (" lists" if section == "sweep" else "s") + f", got {data[section]!r}")
    sets = []
    for key, value in _flat(data.get("set") or {}):
        where = rf.where(f"set.{key}")
        if isinstance(value, list):
            text = ",".join(_text(v, where, key) for v in value)
        else:
            text = _text(value, where, key)
        sets.append(Item(f"{key}={text}", rf.line_of(f"set.{key}")))
    sweeps = []
    for key, value in _flat(data.get("sweep") or {}):
        where = rf.where(f"sweep.{key}")
        if isinstance(value, list):
            vals = [_text(v, where, key) for v in value]
            if any("," in v for v in vals):
                raise ConfigError(f"{where}: sweep {key}: a value holds a comma; list the values one by one")
            text = ",".join(vals)
        elif isinstance(value, str):
            text = value  # "a,b": as on the command line
        else:
            raise ConfigError(f"{where}: sweep {key} must be a list of values, e.g. {key} = [\"a\", \"b\"]; got "
                              f"{value!r}")
        sweeps.append(Item(f"{key}={text}", rf.line_of(f"sweep.{key}")))
    return dataclasses.replace(rf, sets=tuple(sets), sweeps=tuple(sweeps), **fields)


# ---------------------------------------------------------------------------------------------------------------
# Checking, with the file's line


def checked(rf: RunFile, fn: Callable[[], Any], item: Item | None = None, key: str | None = None) -> Any:
    """Run ``fn``; a ConfigError it raises gets the file and line of ``item`` (or ``key``) in front."""
    try:
        return fn()
    except ConfigError as exc:
        where = rf.where(key, item.line if item is not None else None)
        raise ConfigError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Writing (--print-config)


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return ".".join(p if _BARE.match(p) else '"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for p in key.split("."))


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _scalar(text: str) -> str:
    """The TOML for one command-line value: typed where that reads back to the same text, else a string."""
    if text in ("true", "false"):
        return text
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return text
    try:
        f = float(text)
    except ValueError:
        f = None
    if f is not None and math.isfinite(f) and repr(f) == text:
        return text
    return _string(text)


def _value(text: str, as_list: bool) -> str:
    if as_list:
        return "[" + ", ".join(_scalar(v.strip()) for v in text.split(",") if v.strip()) + "]"
    if "," in text and all(v.strip() == v and v for v in text.split(",")) and "=" not in text:
        return "[" + ", ".join(_scalar(v) for v in text.split(",")) + "]"
    return _scalar(text)


def dump(suite: str, preset: Optional[str], seeds: int, sets: Sequence[str], sweeps: Sequence[str],
         resolved: Mapping[str, Any] | None = None, command: str = "") -> str:
    """A TOML sweep file for these options (``--config`` reads it back to the same plan). ``resolved``: every
    setting after presets, --set and --sweep, written as comments for reference."""
    lines = ["# ablate run --config FILE (docs/training.md, \"Sweep files\")"]
    if command:
        lines.append(f"# written by: {command}")
    lines.append(f"suite = {_string(suite)}")
    if preset:
        lines.append(f"preset = {_string(preset)}")
    lines.append(f"seeds = {int(seeds)}")
    if sets:
        lines += ["", "[set]"]
        seen: dict[str, str] = {}
        for s in sets:
            key, _, value = s.partition("=")
            seen[key.strip()] = value  # the last --set of a key wins
        lines += [f"{_key(k)} = {_value(v, False)}" for k, v in seen.items()]
    if sweeps:
        lines += ["", "[sweep]"]
        for s in sweeps:
            key, _, value = s.partition("=")
            lines.append(f"{_key(key.strip())} = {_value(value, True)}")
    if resolved:
        lines += ["", "# Every setting as resolved (preset, [set] and [sweep] applied), for reference; the run is made",
                  "# from the keys above."]
        lines += [f"#   {k} = {v!r}" for k, v in resolved.items()]
    return "\n".join(lines) + "\n"
