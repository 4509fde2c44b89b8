"""ablate.store.atomic: a write either replaces the whole file or leaves it as it was, and leaves no temporary file."""

import pytest

from ablate.store.atomic import write_atomic, write_text


def test_write_text_replaces_the_file_and_creates_folders(tmp_path):
    p = tmp_path / "a" / "b" / "index.md"
    write_text(p, "one\n")
    write_text(p, "two\nlines\n")
    assert p.read_bytes() == b"two\nlines\n"
    assert [f.name for f in p.parent.iterdir()] == ["index.md"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "table.csv"
    write_text(p, "old\n")

    def half(tmp):
        tmp.write_text("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(p, half)
    assert p.read_text() == "old\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["table.csv"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    """A report or export gets the mode a plain open() would give it, not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(umask)
    try:
        p = write_text(tmp_path / "out.csv", "a,b\n")
        write_text(p, "a,b\n1,2\n")  # replacing keeps the umask's mode too
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode == stat.S_IMODE(plain.stat().st_mode)
