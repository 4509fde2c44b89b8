"""Figures saved on every core: within :func:`parallel_figures`, :func:`ablate.reporting.tables.savefig` hands
each figure to a forked child process, which writes its PNG and SVG while the report goes on to the next table or
figure; the block's end waits for every child and raises the first child's error (the exception itself, pickled:
an ``OSError`` keeps its errno and file, so a full disk is still one line).

Drawing and encoding a figure (PNG + SVG, each laid out twice for ``bbox_inches="tight"``) is most of an
``ablate report``'s time; a child draws the figure as it stood when ``savefig`` was called, under the same
matplotlib settings, so the files are the bytes the report writes in one process. ``$ABLATE_FIGURE_JOBS`` caps
the children at work at once (default: the CPUs this process may use; 1 saves every figure in the process itself,
as do platforms without ``fork`` and processes with other Python threads running).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import threading
from contextvars import ContextVar
from typing import Callable, Iterator

from ablate.store.parallel_read import env_jobs

__all__ = ["JOBS_ENV", "figure_jobs", "parallel_figures", "submit"]

JOBS_ENV = "ABLATE_FIGURE_JOBS"


def figure_jobs() -> int:
    """How many figures may be saved at once: ``$ABLATE_FIGURE_JOBS``, else the CPUs this process may use."""
    return env_jobs(JOBS_ENV, "save figures one by one")


class _Children:
    """The forked savers of one :func:`parallel_figures` block, oldest first."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.running: dict[int, tuple[int, str]] = {}  # pid -> (read end of its error pipe, what it saves)
        self.errors: list[BaseException] = []

    def start(self, save: Callable[[], object], what: str) -> None:
        while len(self.running) >= self.jobs:
            self.wait_one()
        r, w = os.pipe()
        gc.freeze()  # the child's collections leave the parent's objects alone (no copy of their pages)
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            os.close(r)
            os.close(w)
            raise
        if pid != 0:
            gc.unfreeze()
        if pid == 0:  # the child: save, report an error through the pipe, exit without the parent's atexit work
            code = 0
            try:
                os.close(r)
                save()
            except BaseException as exc:  # noqa: BLE001 -- every error goes back to the parent
                code = 1
                try:
                    data = pickle.dumps(exc)
                except Exception:  # noqa: BLE001 -- an exception that cannot be pickled: its text
                    data = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
                with contextlib.suppress(OSError):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(w, view):]
            finally:
                os._exit(code)
        os.close(w)
        self.running[pid] = (r, what)

    def wait_one(self) -> None:
        pid, (r, what) = next(iter(self.running.items()))
        chunks = []
        with os.fdopen(r, "rb") as fh:  # until the child exits (its end of the pipe closes)
            chunks.append(fh.read())
        _, status = os.waitpid(pid, 0)
        del self.running[pid]
        data = b"".join(chunks)
        if data:
            try:
                self.errors.append(pickle.loads(data))
            except Exception:  # noqa: BLE001
                self.errors.append(RuntimeError(f"saving the figure {what} failed"))
        elif status != 0:
            why = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.waitstatus_to_exitcode(status)}")
            self.errors.append(RuntimeError(f"saving the figure {what} failed: its process was {why}"))

    def wait_all(self) -> None:
        while self.running:
            self.wait_one()


_CHILDREN: ContextVar[_Children | None] = ContextVar("ablate_figure_children", default=None)


@contextlib.contextmanager
def parallel_figures(jobs: int | None = None) -> Iterator[None]:
    """Within the block, figures are saved by forked children, at most ``jobs`` at once (default
    :func:`figure_jobs`); on leaving it every child has finished and the first error is raised. Nested blocks
    share the outer one's children."""
    if _CHILDREN.get() is not None:
        yield
        return
    jobs = figure_jobs() if jobs is None else jobs
    if jobs <= 1 or not hasattr(os, "fork"):
        yield
        return
    children = _Children(jobs)
    token = _CHILDREN.set(children)
    try:
        yield
    finally:
        _CHILDREN.reset(token)
        children.wait_all()  # also when the block failed: no child is left behind
    if children.errors:
        raise children.errors[0]


def submit(save: Callable[[], object], what: str) -> bool:
    """Run ``save`` in a forked child when inside :func:`parallel_figures` (True), else do nothing (False: the
    caller saves). Not with other Python threads running (a fork copies only this one)."""
    children = _CHILDREN.get()
    if children is None or threading.active_count() > 1:
        return False
    children.start(save, what)
    return True
