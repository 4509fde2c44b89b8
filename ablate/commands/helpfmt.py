"""Help that wraps instead of cutting: typer's rich help sets each option in a table whose cells cut a word longer
than their column with an ellipsis (``model.position=rop…``, ``--slurm-array-para…`` at 80 columns, the width rich
assumes when stdout is not a terminal). :func:`fold_long_words` makes such words wrap onto the next line instead.

Imported only when a help text is formatted (``ablate.commands.entry.HelpCommand``), so a command that shows no
help never loads rich; a typer without these hooks keeps its own behaviour."""

from __future__ import annotations

from typing import Any

from typer import rich_utils

__all__ = ["fold_long_words"]


def _fold(renderable: Any) -> Any:
    if hasattr(renderable, "overflow"):  # rich Text (markdown help, a Markdown object, wraps by itself)
        renderable.overflow = "fold"
    for item in getattr(renderable, "renderables", ()) or ():  # Columns: help text, [default: ...], [required]
        _fold(item)
    return renderable


def fold_long_words() -> bool:
    """Make the cells of typer's rich help fold long words; returns whether typer offered the hooks."""
    help_of = getattr(rich_utils, "_get_parameter_help", None)
    table = getattr(rich_utils, "Table", None)
    if help_of is None or table is None:
        return False
    if getattr(help_of, "_ablate_folds", False):
        return True

    def folding_help(*args: Any, **kwargs: Any) -> Any:
        return _fold(help_of(*args, **kwargs))

    class FoldingTable(table):  # type: ignore[misc, valid-type]
        """Option names (``--slurm-array-parallelism``) and types fold too."""

        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            super().add_row(*renderables, **kwargs)
            for column in self.columns:
                column.overflow = "fold"

    folding_help._ablate_folds = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folding_help
    rich_utils.Table = FoldingTable
    return True
