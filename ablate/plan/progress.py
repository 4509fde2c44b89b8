"""The rich progress bar every suite shows (description, bar, done/total, a free-text field, elapsed, ETA)."""

from __future__ import annotations

from typing import Any


def start_progress(enabled: bool) -> Any | None:
    """A started ``rich.progress.Progress`` (tasks take an ``info`` field), or None when progress is off."""
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    prog.start()
    return prog
