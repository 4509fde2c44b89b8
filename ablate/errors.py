"""Errors a user can cause. The CLI prints each as one line and exits 2 (no traceback)."""

from __future__ import annotations


class AblateError(Exception):
    """Base class for user-facing errors: the message is the whole story, in one line."""


class UnknownKeyError(AblateError, KeyError):
    """A registry was asked for a key it does not hold."""

    def __init__(self, axis: str, key: str, valid: list[str]):
        self.axis, self.key, self.valid = axis, key, list(valid)
        super().__init__(f"unknown {axis} {key!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ConfigError(AblateError, ValueError):
    """A configuration that cannot run (invalid combination, impossible shape, bad override)."""


class UnavailableError(AblateError, RuntimeError):
    """A variant that exists but cannot run here (no GPU, package missing, unsupported shape)."""


class PositionRangeError(AblateError, ValueError):
    """A position encoding asked for positions it has no parameters for (e.g. learned past max_len)."""


class ResultsFileError(AblateError, ValueError):
    """A results file that cannot be read (corrupt JSONL, wrong schema)."""


class StorageError(AblateError, OSError):
    """A file the run writes cannot be written: a full disk, a read-only file or file system, no permission, too
    many open files. One line naming the file, the errno and what to do; built by
    :func:`ablate.store.atomic.storage_error`. Never a status row: the run stops (rows already written are kept)."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:  # OSError would print "[Errno n] ..."
        return self.args[0]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``): handled like Ctrl-C -- finished rows are kept, states say why it stopped."""

    def __init__(self, signum: int = 15):
        self.signum = signum
        super().__init__(f"terminated by signal {signum} (SIGTERM)")
