"""Figures saved by forked children (ablate.reporting.figure_jobs): the same bytes as saved in the process, every
child finished when the block ends, a child's error raised in the parent as itself."""

from __future__ import annotations

import errno
import os
import signal
import threading

import pytest

from ablate.errors import ConfigError
from ablate.reporting.figure_jobs import JOBS_ENV, figure_jobs as jobs_asked, parallel_figures, submit
from ablate.reporting.tables import plot_style, pyplot as plt, savefig

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="figures are saved in parallel only where fork is")


@pytest.fixture
def alone():
    """A fork copies one thread, so figures go to children only while no other Python thread runs. tqdm's monitor
    thread, which an earlier test's progress bar may have started in this process, is stopped first."""
    for t in threading.enumerate():
        if type(t).__name__ == "TMonitor":  # tqdm's monitor (tqdm.std.TMonitor): exit() stops and joins it
            t.exit()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        pytest.skip(f"other threads run in this process ({', '.join(others)}): figures would be saved inline")


def _figure(k: int):
    with plot_style():
        fig, ax = plt.subplots(figsize=(2.0, 1.5))
        ax.plot([0, 1, 2], [k, k + 1, k * k], marker="o", label=f"series {k}")
        ax.set_title(f"figure {k}")
        ax.legend()
        return fig


def _save_all(folder, n: int = 3) -> dict[str, bytes]:
    for k in range(n):
        with plot_style():
            savefig(_figure(k), folder / f"f{k}")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_children_write_the_bytes_the_process_writes(tmp_path, alone):
    inline = _save_all(tmp_path / "inline")
    with parallel_figures(jobs=2):
        returned = []
        for k in range(3):
            with plot_style():
                returned.append(savefig(_figure(k), tmp_path / "forked" / f"f{k}"))
    forked = {p.name: p.read_bytes() for p in sorted((tmp_path / "forked").iterdir())}
    assert len(inline) == 6 and forked == inline  # every file there when the block ends, byte for byte
    assert [tuple(p.name for p in x) for x in returned] == [(f"f{k}.png", f"f{k}.svg") for k in range(3)]


def test_a_childs_error_is_raised_as_itself_when_the_block_ends(tmp_path, monkeypatch, alone):
    import matplotlib.figure

    real = matplotlib.figure.Figure.savefig

    def full(self, fname, *a, **k):
        if "bad" in str(fname):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))
        return real(self, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(OSError) as exc:
        with parallel_figures(jobs=2):
            savefig(_figure(1), tmp_path / "good")
            savefig(_figure(2), tmp_path / "bad")
            savefig(_figure(3), tmp_path / "good2")
    assert exc.value.errno == errno.ENOSPC and "bad.png" in exc.value.filename
    assert (tmp_path / "good.svg").exists() and (tmp_path / "good2.svg").exists()  # the others finished


def test_a_child_killed_is_an_error_naming_the_figure(tmp_path, alone):
    with pytest.raises(RuntimeError, match=r"saving the figure dead failed: its process was killed by signal"):
        with parallel_figures(jobs=2):
            assert submit(lambda: os.kill(os.getpid(), signal.SIGKILL), "dead")


def test_jobs_from_the_environment(monkeypatch):
    monkeypatch.setenv(JOBS_ENV, "3")
    assert jobs_asked() == 3
    for bad in ("0", "x", "-1", "２"):
        monkeypatch.setenv(JOBS_ENV, bad)
        with pytest.raises(ConfigError, match=JOBS_ENV):
            jobs_asked()
    monkeypatch.setenv(JOBS_ENV, "1")
    with parallel_figures():  # one job: the process saves every figure itself
        assert not submit(lambda: None, "x")
    monkeypatch.delenv(JOBS_ENV)
    assert jobs_asked() >= 1


def test_outside_the_block_nothing_is_forked():
    assert not submit(lambda: os._exit(3), "x")
