"""Every OS error on a file a run writes is one line, exit 2, and nothing half-written (issue #24, item 2).

Loop devices and size-limited tmpfs need root mounts the test machines do not allow, so each class of error is
injected where the OS would raise it (``os.open``, ``os.write``, ``Path.write_bytes``), with the errno it would carry:
ENOSPC (a full disk), EACCES / EROFS / EPERM (a read-only file or file system), EMFILE (too many open files).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from ablate.cli import main
from ablate.errors import StorageError
from ablate.store import atomic
from ablate.store.atomic import append_all, check_appendable, write_text
from ablate.store.results import append_row, read_rows
from ablate.store.runstate import Claims, claim_path

MICRO_X = ["run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu", "--no-progress",
           "--set", "positions=rope", "--set", "rope_scalings=", "--set", "train.steps=5", "--set", "cpu_threads=1"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr().err


def one_line(rc: int, err: str, *words: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ablate: warning:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("ablate: error: cannot "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def results_of(out: Path) -> Path:
    return out / "extrapolation" / "cpu-micro.jsonl"


def fail_open(monkeypatch, match, code: int, writing_only: bool = True) -> list[str]:
    """``os.open`` raises ``OSError(code)`` for paths ``match(path)`` accepts (opened for writing)."""
    real, hits = os.open, []

    def fake(path, flags, *args, **kwargs):
        wants_write = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if match(Path(os.fsdecode(path))) and (wants_write or not writing_only):
            hits.append(os.fsdecode(path))
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)
    return hits


# ---------------------------------------------------------------------------------------------------------------
# The building blocks


def test_storage_error_is_one_line_with_the_file_the_errno_and_advice():
    for code, words in [(errno.ENOSPC, ["ENOSPC", "disk is full", "re-run to resume"]),
                        (errno.EACCES, ["EACCES", "writable"]), (errno.EROFS, ["EROFS", "read-only"]),
                        (errno.EMFILE, ["EMFILE", "ulimit -n"])]:
        e = atomic.storage_error(OSError(code, os.strerror(code)), "/x/r.jsonl", "append to")
        assert isinstance(e, StorageError) and isinstance(e, OSError) and e.errno == code
        assert str(e).startswith("cannot append to /x/r.jsonl: ") and "\n" not in str(e)
        for w in words:
            assert w in str(e)


def test_a_full_disk_mid_line_leaves_no_half_line(tmp_path, monkeypatch):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\n')
    real = os.write

    def half_then_full(fd, data):  # the kernel takes half the line, then the disk is full
        if len(data) > 4:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    fd = os.open(p, os.O_RDWR | os.O_APPEND)
    try:
        with pytest.raises(StorageError, match=r"cannot append to .*r\.jsonl: .*\(ENOSPC\)"):
            append_all(fd, b'{"b": 2222222}\n', p)
    finally:
        os.close(fd)
    assert p.read_bytes() == b'{"a": 1}\n'


def test_write_atomic_names_the_target_and_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "plan.json"
    write_text(p, "old\n")

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError) as exc:
        write_text(p, "new\n")
    assert str(exc.value).startswith(f"cannot write {p}: ") and "ENOSPC" in str(exc.value)
    assert ".tmp" not in str(exc.value)
    assert sorted(files(tmp_path)) == ["plan.json"] and p.read_text() == "old\n"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EPERM])
def test_check_appendable_refuses_a_read_only_results_file(tmp_path, monkeypatch, code):
    p = tmp_path / "r.jsonl"
    p.write_text("")
    fail_open(monkeypatch, lambda q: q == p, code)
    with pytest.raises(StorageError, match=errno.errorcode[code]):
        check_appendable(p)
    check_appendable(tmp_path / "new" / "r.jsonl")  # missing: probed in its nearest folder, nothing left
    assert sorted(files(tmp_path)) == ["r.jsonl"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; the injected EACCES covers it")
def test_check_appendable_refuses_a_chmod_444_file(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text("")
    p.chmod(0o444)
    with pytest.raises(StorageError, match="EACCES"):
        check_appendable(p)


def test_a_half_written_claim_is_removed(tmp_path, monkeypatch):
    results = tmp_path / "r.jsonl"
    import json as _json

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_json, "dump", full)
    with pytest.raises(StorageError, match="cannot write the claim .*ENOSPC"):
        Claims(results).claim("t@s0")
    assert not claim_path(results, "t@s0").exists()


def test_a_claim_being_written_is_held_not_a_crash(tmp_path):
    """An empty claim (its writer between create and write) is another live run's, not an unreadable file."""
    results = tmp_path / "r.jsonl"
    claim_path(results, "t@s0").parent.mkdir(parents=True)
    claim_path(results, "t@s0").write_text("")
    c = Claims(results)
    assert c.claim("t@s0") is False and "t@s0" in c.skipped
    old = claim_path(results, "t@s0")
    os.utime(old, (0, 0))  # an empty claim left long ago: nobody's, taken over
    assert c.claim("t@s0") is True
    c.release_all()


# ---------------------------------------------------------------------------------------------------------------
# Through the command line: one line, exit 2, nothing half-written


def test_a_full_disk_writing_plan_json_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".plan.json."):
            real(self, data[: len(data) // 2])  # half of it reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    rc, err = run_cli(capsys, *MICRO_X, "--out", str(out))
    one_line(rc, err, "plan.json", "No space left on device (ENOSPC)", "free space")
    assert files(tmp_path) == {}  # no plan, no half plan, no state, no rows


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_read_only_results_file_is_refused_before_training(tmp_path, monkeypatch, capsys, code):
    out = tmp_path / "out"
    results = results_of(out)
    results.parent.mkdir(parents=True)
    results.write_text("")
    hits = fail_open(monkeypatch, lambda q: q == results, code)
    trained = []
    import ablate.suites.extrapolation.measure as measure

    monkeypatch.setattr(measure, "train", lambda *a, **k: trained.append(1) or (_ for _ in ()).throw(AssertionError))
    rc, err = run_cli(capsys, *MICRO_X, "--out", str(out))
    one_line(rc, err, str(results), errno.errorcode[code])
    assert hits and not trained
    assert files(tmp_path) == {"out/extrapolation/cpu-micro.jsonl": b""}  # no plan, state or checkpoint


def test_a_full_disk_while_appending_rows_is_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    results = results_of(out)
    real, appended = os.write, []

    def full_after_one_row(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == str(results):
            appended.append(len(data))
            if len(appended) > 1:  # the second row: half of it, then the disk is full
                if len(appended) == 2:
                    return real(fd, bytes(data[: len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", full_after_one_row)
    rc, err = run_cli(capsys, *MICRO_X, "--out", str(out))
    one_line(rc, err, str(results), "ENOSPC")
    lines = results.read_bytes().splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith(b"\n") and json.loads(lines[0])["status"] == "ok"
    monkeypatch.setattr(os, "write", real)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*MICRO_X, "--out", str(out)])
    assert exc.value.code in (0, None)
    rows = list(read_rows(results))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert len({r["row_key"] for r in rows}) == 3


def test_too_many_open_files_is_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    results = results_of(out)
    real = os.open

    def emfile(path, flags, *args, **kwargs):  # the results file's append (O_CREAT | O_APPEND) finds no free fd
        if Path(os.fsdecode(path)) == results and flags & os.O_CREAT and flags & os.O_APPEND:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fsdecode(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", emfile)
    rc, err = run_cli(capsys, *MICRO_X, "--out", str(out))
    one_line(rc, err, str(results), "EMFILE", "ulimit -n")
    assert not results.exists() or results.read_bytes() == b""


def test_a_full_disk_under_report_is_one_line(tmp_path, monkeypatch, capsys):
    """Any command, any file: the entry point turns an OS error no caller named into one line too."""
    results = tmp_path / "r.jsonl"
    from ablate.store.results import make_row

    append_row(results, make_row("latency", "ok", {"part": "kernel", "attention": "sdpa"}, {"time_ms": 1.0}))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "rep" / "x.md"))

    import ablate.reporting.report as report

    monkeypatch.setattr(report, "build_report", full)
    rc, err = run_cli(capsys, "report", str(results), "--out", str(tmp_path / "rep"))
    one_line(rc, err, "ENOSPC", "x.md")


def test_a_full_disk_saving_a_checkpoint_stops_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    """Not an ``error`` row per measurement: the checkpoint is named, and no half checkpoint is left."""
    out = tmp_path / "out"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the first fsync of the run is the trained model's checkpoint
    rc, err = run_cli(capsys, *MICRO_X, "--out", str(out))
    one_line(rc, err, "cannot write the checkpoint", ".pt", "ENOSPC")
    results = results_of(out)
    assert not results.exists() or not [r for r in read_rows(results) if r["status"] == "error"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".pt"]
