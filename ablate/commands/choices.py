"""The fixed vocabularies of the ``ablate`` command line, as choices that shell completion lists
(``ablate --install-completion``), and the one line a bad choice gets.

Fixed sets are :class:`enum.Enum` options (typer completes and checks them): ``--suite``, ``--device``, ``--format``,
``--launcher``, ``--to``, ``--slurm-cluster``. Open-ended values complete from their
vocabulary but stay strings, checked where they are used with a one-line error: ``--preset`` (the presets of the
suite given, ``cpu`` being a deprecated alias of ``tiny``), ``--axis`` (plurals accepted), ``--suites`` (a comma list).

Imports nothing heavy at import time: completion runs the CLI on every <TAB>; only completing a preset imports the
suite, for its ``PRESETS``.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

from ablate.commands.views import AXES
from ablate.plan.runner import DEVICES, PRESET_HELP, SUITES, suite_presets

__all__ = ["Suite", "Device", "Format", "CompareFormat", "Launcher", "SlurmCluster", "ExportTarget", "plain", "complete_preset", "complete_latency_preset", "complete_extrapolation_preset",
           "complete_axis", "complete_suites", "choice_error"]

Suite = enum.Enum("Suite", {s: s for s in SUITES}, type=str)  # training, extrapolation, latency
Suite.__doc__ = "The suites of ``ablate run --suite``."
Device = enum.Enum("Device", {d: d for d in ("auto",) + DEVICES}, type=str)  # auto, cpu, cuda
Device.__doc__ = "``--device``: auto (cuda if visible, else cpu), cpu, cuda."


class Format(str, enum.Enum):
    """``--format`` of list, env, status."""
    table = "table"
    json = "json"


class CompareFormat(str, enum.Enum):
    """``ablate compare --format``."""
    table = "table"
    json = "json"
    markdown = "markdown"


class Launcher(str, enum.Enum):
    """``ablate run --launcher``."""
    local = "local"
    gpus = "gpus"
    slurm = "slurm"


class SlurmCluster(str, enum.Enum):
    """``ablate run --slurm-cluster``: the submitit executor."""
    slurm = "slurm"
    local = "local"


class ExportTarget(str, enum.Enum):
    """``ablate export --to``."""
    parquet = "parquet"
    csv = "csv"
    wandb = "wandb"
    mlflow = "mlflow"
    tensorboard = "tensorboard"


# A bad choice names what was asked for: "unknown suite 'x'; valid: ..." (as ablate.plan.runner says it); options not
# listed here say "invalid value 'x' for --flag; valid: ...".
_NOUNS = {"suite": "suite", "device": "device"}


def plain(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every enum value replaced by its name (what the functions behind the commands take)."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in params.items()}


def _suite_given(ctx: Any, name: str = "suite") -> Optional[str]:
    value = (getattr(ctx, "params", None) or {}).get(name)
    value = value.value if isinstance(value, enum.Enum) else value
    return value if value in SUITES else None


def _presets(suites: Any, incomplete: str) -> list[tuple[str, str]]:
    names: list[str] = []
    for s in suites:
        names += [p for p in suite_presets(s) if p not in names]
    return [(p, PRESET_HELP.get(p, "")) for p in names if p.startswith(incomplete)]


def complete_preset(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """``ablate run --preset``: the presets of the suite already on the command line (before it: of every suite)."""
    suite = _suite_given(ctx)
    return _presets([suite] if suite else SUITES, incomplete)


def complete_latency_preset(incomplete: str) -> list[tuple[str, str]]:
    """``ablate nightly --preset-latency``."""
    return _presets(["latency"], incomplete)


def complete_extrapolation_preset(incomplete: str) -> list[tuple[str, str]]:
    """``ablate nightly --preset-extrapolation``."""
    return _presets(["extrapolation"], incomplete)


def complete_axis(incomplete: str) -> list[str]:
    return [a for a in AXES if a.startswith(incomplete)]


def complete_suites(incomplete: str) -> list[str]:
    """``ablate nightly --suites``: a comma-separated list; completes its last item."""
    head, _, last = incomplete.rpartition(",")
    done = set(head.split(",")) if head else set()
    return [(head + "," if head else "") + s for s in ("latency", "extrapolation") if s.startswith(last)
            and s not in done]


def choice_error(exc: BaseException) -> Optional[str]:
    """The one line for a value a choice option does not take (``None`` when ``exc`` is something else):
    ``unknown suite 'nope'; valid: training, extrapolation, latency``."""
    param = getattr(exc, "param", None)
    desc = getattr(param, "type_descriptor", None)
    choices = getattr(desc, "choices", None) if getattr(desc, "is_choice", False) else None
    if not choices:
        return None
    try:  # typer checks choices with pydantic: the ValidationError it wraps holds the value given
        value = exc.__cause__.errors()[0]["input"]  # type: ignore[union-attr]
    except Exception:
        return None
    valid = ", ".join(str(c.value if isinstance(c, enum.Enum) else c) for c in choices)
    noun = _NOUNS.get(getattr(param, "name", "") or "")
    if noun:
        return f"unknown {noun} {value!r}; valid: {valid}"
    opts = list(getattr(param, "opts", ()) or ())
    flag = max(opts, key=len) if opts else str(getattr(param, "name", "option"))
    return f"invalid value {value!r} for {flag}; valid: {valid}"
