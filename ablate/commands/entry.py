"""The console-script entry of the ``ablate`` command line: run the typer app with one-line errors, one-line
warnings and signals turned into exit codes (``ablate.cli.main`` calls :func:`main` with the app); and the command
classes of the app, whose help wraps long words instead of cutting them (:mod:`ablate.commands.helpfmt`).

User errors print one line ``ablate: error: <message>`` on stderr and exit 2 (a value outside an option's choices
names the valid ones); an OS error (a full disk, a read-only file, too many open files) is one line naming the
file and the errno, exit 2; Ctrl-C exits 130, SIGTERM 143. Imports nothing heavy at import time."""

from __future__ import annotations

import signal
import sys
import warnings
from typing import Any, List, Optional

import typer
import typer.core

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - typer on top of the click package
    from click.exceptions import ClickException as _ClickException  # type: ignore[no-redef]

from ablate.commands.choices import choice_error
from ablate.commands.views import one_line
from ablate.errors import AblateError, Terminated
from ablate.store.atomic import storage_error

__all__ = ["INTERRUPTED", "TERMINATED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "HelpCommand",
           "HelpGroup", "main"]

INTERRUPTED = "interrupted; finished rows are saved, re-run to resume"
TERMINATED = "terminated (SIGTERM); finished rows are saved, re-run the same command to resume"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it


class HelpCommand(typer.core.TyperCommand):
    """A command whose help folds long words (``model.norm=layernorm,rmsnorm``) instead of cutting them."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from ablate.commands.helpfmt import fold_long_words  # rich: only when help is shown

        fold_long_words()
        return super().format_help(ctx, formatter)


class HelpGroup(typer.core.TyperGroup):
    """``ablate --help``, folding as :class:`HelpCommand` does."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from ablate.commands.helpfmt import fold_long_words

        fold_long_words()
        return super().format_help(ctx, formatter)


def die(message: str, code: int) -> None:
    sys.stderr.write(f"ablate: error: {one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one line each; ablate's own (e.g. a skipped torn line) without the category name."""
    text = one_line(str(message))
    if not (category.__module__ or "").startswith("ablate"):
        text = f"{category.__name__}: {text}"
    (file or sys.stderr).write(f"ablate: warning: {text}\n")


_TERMINATED = [False]


def handle_sigterm():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so it unwinds like Ctrl-C:
    state files say it was terminated, and the process exits 143 with one line. Returns the previous handler."""

    def on_term(signum, frame):  # noqa: ANN001
        _TERMINATED[0] = True
        raise Terminated(signum)

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        return None


def main(app: Any, argv: Optional[List[str]] = None) -> None:
    """Run the typer ``app``; user errors → one line on stderr and exit 2, Ctrl-C → exit 130, SIGTERM → 143."""
    command = typer.main.get_command(app)
    previous = warnings.showwarning
    warnings.showwarning = show_warning
    previous_term = handle_sigterm()
    try:
        rc = command.main(args=argv, prog_name="ablate", standalone_mode=False)
    except AblateError as exc:
        die(str(exc) or type(exc).__name__, EXIT_USAGE)
    except OSError as exc:  # where no caller named the file it was writing: the errno and the file the OS names
        die(str(storage_error(exc, doing="read or write")), EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort) as exc:
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated) or _TERMINATED[0]:
            die(TERMINATED, EXIT_TERMINATED)
        die(INTERRUPTED, EXIT_INTERRUPTED)
    except _ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ablate`: show the help
            exc.show()
            raise SystemExit(EXIT_USAGE) from None
        choice = choice_error(exc)  # a bad value of a choice option: "unknown suite 'x'; valid: ..."
        if choice is not None:
            die(choice, EXIT_USAGE)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        code = getattr(exc, "exit_code", EXIT_USAGE)
        die(exc.format_message() + hint, code if isinstance(code, int) and code else EXIT_USAGE)
    finally:
        warnings.showwarning = previous
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
        die(TERMINATED if _TERMINATED[0] else INTERRUPTED, EXIT_TERMINATED if _TERMINATED[0] else EXIT_INTERRUPTED)
    raise SystemExit(rc if isinstance(rc, int) else 0)
