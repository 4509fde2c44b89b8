"""Tasks: the units a sweep is cut into, their one ASCII id form, and which of them a ``--task`` selection names.
Below both the suite contract (:mod:`ablate.plan.runner`) and the run loop (:mod:`ablate.plan.suitekit`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ablate.errors import ConfigError

__all__ = ["task_id", "canonical_task_id", "Task", "select_tasks"]

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,/:%-]")
_OLD_SEEDED = re.compile(r"(.+)-s(\d+)")


def task_id(name: str, seed: int | None = None) -> str:
    """The one form of task id for every suite: ``<name>@s<seed>`` (``<name>`` for a task without a seed), ASCII and
    typeable in a shell: ``→`` (and ``->``) become ``-to-``, any other character outside ``[A-Za-z0-9._+=@,/:%-]``
    becomes ``_`` (``modern-prenorm→postnorm``, seed 0 → ``modern-prenorm-to-postnorm@s0``)."""
    text = _ID_UNSAFE.sub("_", str(name).replace("→", "-to-").replace("->", "-to-"))
    return text if seed is None else f"{text}@s{seed}"


def canonical_task_id(text: str) -> str:
    """A task id as typed or stored by an older version, in its current form: the Unicode arrow of grid points
    (``modern-prenorm→postnorm@s0``) and the extrapolation suite's old ``<name>-s<seed>`` (``rope-s0``,
    ``passkey-rope-s0``) resolve to ``modern-prenorm-to-postnorm@s0``, ``rope@s0``, ``passkey-rope@s0``."""
    text = str(text).strip()
    old = _OLD_SEEDED.fullmatch(text)
    if old and "@" not in text:
        return task_id(old[1], int(old[2]))
    return task_id(text)


@dataclass(frozen=True)
class Task:
    """One unit of a sweep that a launcher can hand to a worker (``RunOptions.only=(id,)``).

    ``keys``: the ``row_key`` of every row the task owes, when the suite knows them ahead (the task is done when
    all of them have a terminal row); ``None`` when it does not (done = its worker finished)."""

    id: str
    keys: tuple[str, ...] | None = None
    label: str = ""


def select_tasks(ids: list[str], only: tuple[str, ...], what: str = "task") -> set[str]:
    """The ids of ``ids`` to run: all when ``only`` is empty; an unknown id is a one-line ConfigError. An id in an
    older form (``modern-prenorm→postnorm@s0``, ``rope-s0``) names its task (:func:`canonical_task_id`)."""
    if not only:
        return set(ids)
    unknown = [t for t in only if canonical_task_id(t) not in ids]
    if unknown:
        shown = ", ".join(ids[:40]) + (f", ... ({len(ids)} in all)" if len(ids) > 40 else "")
        raise ConfigError(f"unknown {what} {unknown[0]!r}; valid: {shown}")
    return {canonical_task_id(t) for t in only}
