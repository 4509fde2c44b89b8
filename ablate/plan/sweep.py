"""One sweep vocabulary for every suite: ``--sweep KEY=V1,V2`` on ``ablate run``.

A sweep names the *setting it varies* (``model.position``, ``model.attention``, ``model.norm``, ``train.lr``, ...),
whatever the suite calls its own list. Each suite declares what it can sweep in ``SWEEPS``: sweep key (or a
``prefix.*`` pattern) -> the suite setting that takes the values, e.g. the extrapolation suite's
``{"model.position": "positions"}``, the latency suite's ``{"model.attention": "kernels.keys"}``; the special target
:data:`GRID` collects keys into the training grid's axes (factorial, over the suite's ``model.*`` base).

The sweep is turned into ordinary ``--set`` overrides before the suite resolves its config, so launchers and
workers see one list of settings. Refused in one line (exit 2), before anything runs:

* a key the suite cannot sweep (the message lists those it can);
* a key swept twice, a value repeated, an empty list;
* a key that ``--set`` also sets, or whose suite setting ``--set`` also sets: the sweep would override it.
"""

from __future__ import annotations

import importlib
from typing import Mapping, Sequence

from ablate.core.config import split_list
from ablate.errors import ConfigError

__all__ = ["GRID", "parse_sweeps", "suite_sweeps", "sweep_overrides", "sweepable"]

GRID = "grid.axes"  # target: the key becomes an axis of the training grid (ablate.plan.grid)


def parse_sweeps(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``["model.position=rope,alibi", ...]`` -> ``{"model.position": ("rope", "alibi"), ...}``, checked."""
    out: dict[str, tuple[str, ...]] = {}
    for item in values:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--sweep {item!r} is not KEY=V1,V2 (e.g. --sweep model.position=rope,alibi)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if not raw.strip():
            raise ConfigError(f"--sweep {key} has no values (e.g. --sweep {key}=V1,V2)")
        # an empty value (rope,,alibi) is refused, not dropped; a ; or newline would split the sweep into grid axes
        vals = tuple(split_list(raw, f"--sweep {key}"))
        bad = [v for v in vals if "=" in v or any(c.isspace() for c in v)]
        if bad:
            raise ConfigError(f"--sweep {key}: value {bad[0]!r} holds '=' or a space; one --sweep per key, values "
                              f"separated by commas (e.g. --sweep {key}=V1,V2)")
        if not vals:
            raise ConfigError(f"--sweep {key} has no values (e.g. --sweep {key}=V1,V2)")
        if len(set(vals)) != len(vals):
            raise ConfigError(f"--sweep {key} repeats a value: {raw}")
        if key in out:
            raise ConfigError(f"--sweep {key} given twice; list all its values once: --sweep {key}=V1,V2")
        out[key] = vals
    return out


def suite_sweeps(suite: str) -> Mapping[str, str]:
    """The suite's ``SWEEPS`` table (empty when it declares none)."""
    from ablate.plan.runner import check_suite

    check_suite(suite)
    module = importlib.import_module(f"ablate.suites.{suite}")
    return dict(getattr(module, "SWEEPS", {}) or {})


def _target(table: Mapping[str, str], key: str) -> str | None:
    if key in table:
        return table[key]
    for pattern, target in table.items():
        if pattern.endswith(".*") and key.startswith(pattern[:-1]) and len(key) > len(pattern) - 1:
            return target
    return None


def sweepable(suite: str) -> list[str]:
    """What ``--sweep`` accepts for ``suite`` (patterns as written, e.g. ``model.*``)."""
    return list(suite_sweeps(suite))


def _set_keys(sets: Sequence[str]) -> set[str]:
    return {s.split("=", 1)[0].strip() for s in sets if "=" in s}


def sweep_overrides(suite: str, sweeps: Sequence[str], sets: Sequence[str] = ()) -> list[str]:
    """The ``--set`` overrides that run ``sweeps`` in ``suite``, refusing conflicts with ``sets``."""
    parsed = parse_sweeps(sweeps)
    if not parsed:
        return []
    table = suite_sweeps(suite)
    set_keys = _set_keys(sets)
    out: list[str] = []
    axes: list[str] = []
    for key, vals in parsed.items():
        target = _target(table, key)
        if target is None:
            valid = ", ".join(table) or "nothing"
            raise ConfigError(f"--sweep {key}: the {suite} suite cannot sweep it; sweepable: {valid}")
        clash = sorted(k for k in set_keys if k == key or k == target or k.startswith(target + "."))
        if clash:
            raise ConfigError(f"--sweep {key} and --set {clash[0]} both choose {key}: the sweep would override "
                              f"the setting; drop one of them")
        if target == GRID:
            axes.append(f"{key}={','.join(vals)}")
        else:
            out.append(f"{target}={','.join(vals)}")
    if axes:
        from ablate.plan.grid import to_override

        out.append(to_override(axes))
    return out
