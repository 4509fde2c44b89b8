"""The environment fingerprint: keys, caching, probes that fail without taking the caller down, and the source
commit's provenance (git checkout, then $ABLATE_GIT_COMMIT / $ABLATE_GIT_DIRTY, then a wheel's build stamp)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from ablate.store import env

KEYS = {"python", "platform", "cpu", "hostname", "torch", "cuda", "cudnn", "gpu", "gpu_count", "driver",
        "git_commit", "git_dirty", "git_source", "ablate", "flash_attn", "flash_attn_4", "xformers", "triton", "numpy", "pandas"}


ROOT = Path(__file__).resolve().parents[2]
HAS_GIT = shutil.which("git") is not None


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    # A launcher may have set the provenance variables for this very process, and a stamp may lie next to env.py:
    # neither may leak into these tests.
    monkeypatch.delenv(env.GIT_COMMIT_ENV, raising=False)
    monkeypatch.delenv(env.GIT_DIRTY_ENV, raising=False)
    monkeypatch.setattr(env, "STAMP_FILE", tmp_path / "no-stamp" / env.STAMP_NAME)
    env.clear_cache()
    yield
    env.clear_cache()


def test_fingerprint_keys_and_values():
    import numpy
    import torch

    import ablate

    fp = env.fingerprint()
    assert KEYS <= set(fp)
    json.dumps(fp)  # plain values only
    assert fp["ablate"] == ablate.__version__
    assert fp["torch"] == torch.__version__
    assert fp["cuda"] == torch.version.cuda
    assert fp["numpy"] == numpy.__version__
    if not torch.cuda.is_available():
        assert fp["gpu"] is None and fp["gpu_count"] == 0
    assert isinstance(fp["python"], str) and fp["python"].count(".") == 2


def test_fingerprint_is_cached_and_returned_as_a_copy(monkeypatch):
    first = env.fingerprint()
    first["python"] = "mutated"
    calls = []
    monkeypatch.setattr(env, "_torch_info", lambda: calls.append(1) or {})
    second = env.fingerprint()
    assert second["python"] != "mutated"
    assert calls == []  # not probed again


def test_env_columns_prefix():
    cols = env.env_columns()
    assert set(cols) == {"env." + k for k in env.fingerprint()}
    assert cols["env.ablate"] == env.fingerprint()["ablate"]


def test_git_commit_of_the_source_checkout():
    root = Path(env.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not usable here")
    if head.returncode != 0 or env.source_root() is None:
        pytest.skip("ablate is not running from a git checkout")
    fp = env.fingerprint()
    assert fp["git_commit"] == head.stdout.strip()
    assert isinstance(fp["git_dirty"], bool)
    assert fp["git_source"] == "git"


def test_failing_probes_give_none(monkeypatch):
    def boom(*a, **k):
        raise OSError("no such tool")

    import torch

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: (_ for _ in ()).throw(RuntimeError("driver broken")))
    monkeypatch.setattr(env.socket, "gethostname", boom)
    monkeypatch.setattr(env, "_cpu_name", boom)
    fp = env.fingerprint()
    assert KEYS <= set(fp)
    assert fp["hostname"] is None and fp["cpu"] is None
    assert fp["git_commit"] is None and fp["git_dirty"] is None and fp["driver"] is None
    assert fp["git_source"] is None
    assert fp["gpu"] is None


def test_driver_from_nvidia_smi(monkeypatch):
    monkeypatch.setattr(env.shutil, "which", lambda name: f"/usr/bin/{name}")

    class Done:
        returncode, stdout, stderr = 0, "550.54.15\n550.54.15\n", ""

    monkeypatch.setattr(env.subprocess, "run", lambda cmd, **k: Done())
    assert env._driver_version() == "550.54.15"


def test_missing_optional_packages_are_none():
    assert env._package_version(("surely-not-installed-pkg",), "surely_not_installed_pkg") is None
    assert env._package_version(("surely-not-installed-pkg",), "surely_not_installed_pkg.sub") is None


# ---------------------------------------------------------------------------------------------------------------
# Provenance: git, then $ABLATE_GIT_COMMIT / $ABLATE_GIT_DIRTY, then the build stamp

C1, C2 = "1" * 40, "abcdef0123" * 4


def _no_checkout(monkeypatch):
    monkeypatch.setattr(env, "source_root", lambda: None)


def _stamp(monkeypatch, tmp_path, content) -> Path:
    path = tmp_path / "stamp" / env.STAMP_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    monkeypatch.setattr(env, "STAMP_FILE", path)
    return path


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git checkout with one commit: src.py, results/r.jsonl."""
    if not HAS_GIT:
        pytest.skip("git is not installed")
    r = tmp_path / "repo"
    (r / "results").mkdir(parents=True)
    (r / "src.py").write_text("x = 1\n")
    (r / "results" / "r.jsonl").write_text("{}\n")
    _git(r, "init", "-q")
    _git(r, "add", "-A")
    _git(r, "commit", "-qm", "first")
    return r


def test_no_source_at_all_records_none(monkeypatch):
    _no_checkout(monkeypatch)
    fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (None, None, None)


@pytest.mark.parametrize("raw, dirty", [("true", True), ("1", True), ("TRUE", True), ("false", False),
                                        ("0", False), ("False", False), (None, None)])
def test_env_vars_when_there_is_no_checkout(monkeypatch, raw, dirty):
    _no_checkout(monkeypatch)
    monkeypatch.setenv(env.GIT_COMMIT_ENV, f"  {C2.upper()}\n")  # whitespace and case are normalised
    if raw is not None:
        monkeypatch.setenv(env.GIT_DIRTY_ENV, raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid commit with a valid (or absent) dirty flag warns about nothing
        cols = env.env_columns()
    assert cols["env.git_commit"] == C2 and cols["env.git_dirty"] is dirty and cols["env.git_source"] == "env"


@pytest.mark.parametrize("bad", ["abc1234", "HEAD", "g" * 40, "1" * 41, C1 + " " + C1, "main"])
def test_malformed_commit_env_var_is_ignored_with_a_warning(monkeypatch, bad):
    _no_checkout(monkeypatch)
    monkeypatch.setenv(env.GIT_COMMIT_ENV, bad)
    monkeypatch.setenv(env.GIT_DIRTY_ENV, "false")
    with pytest.warns(RuntimeWarning, match="ABLATE_GIT_COMMIT"):
        fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (None, None, None)


def test_malformed_commit_env_var_falls_through_to_the_stamp(monkeypatch, tmp_path):
    _no_checkout(monkeypatch)
    _stamp(monkeypatch, tmp_path, {"git_commit": C1, "git_dirty": True})
    monkeypatch.setenv(env.GIT_COMMIT_ENV, "deadbeef")
    with pytest.warns(RuntimeWarning, match="ABLATE_GIT_COMMIT"):
        fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (C1, True, "stamp")


def test_malformed_dirty_env_var_keeps_the_commit_with_dirty_unknown(monkeypatch):
    _no_checkout(monkeypatch)
    monkeypatch.setenv(env.GIT_COMMIT_ENV, C1)
    monkeypatch.setenv(env.GIT_DIRTY_ENV, "maybe")
    with pytest.warns(RuntimeWarning, match="ABLATE_GIT_DIRTY"):
        fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (C1, None, "env")


def test_empty_commit_env_var_is_unset(monkeypatch):
    _no_checkout(monkeypatch)
    monkeypatch.setenv(env.GIT_COMMIT_ENV, "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env.fingerprint()["git_source"] is None


def test_stamp_when_there_is_no_checkout_and_no_env(monkeypatch, tmp_path):
    _no_checkout(monkeypatch)
    _stamp(monkeypatch, tmp_path, env.stamp_text({"git_commit": C1, "git_dirty": False}))
    fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (C1, False, "stamp")


@pytest.mark.parametrize("content", ["not json", "[]", {"git_commit": "abc"}, {"git_dirty": False}])
def test_malformed_stamp_is_ignored_with_a_warning(monkeypatch, tmp_path, content):
    _no_checkout(monkeypatch)
    _stamp(monkeypatch, tmp_path, content)
    with pytest.warns(RuntimeWarning, match="build stamp"):
        fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (None, None, None)


def test_env_vars_win_over_the_stamp(monkeypatch, tmp_path):
    _no_checkout(monkeypatch)
    _stamp(monkeypatch, tmp_path, {"git_commit": C1, "git_dirty": False})
    monkeypatch.setenv(env.GIT_COMMIT_ENV, C2)
    monkeypatch.setenv(env.GIT_DIRTY_ENV, "1")
    assert env.provenance() == {"git_commit": C2, "git_dirty": True, "git_source": "env"}


def test_the_checkout_wins_over_env_vars_and_stamp(monkeypatch, tmp_path):
    _stamp(monkeypatch, tmp_path, {"git_commit": C1, "git_dirty": False})
    monkeypatch.setenv(env.GIT_COMMIT_ENV, C2)
    monkeypatch.setenv(env.GIT_DIRTY_ENV, "0")
    monkeypatch.setattr(env, "source_root", lambda: tmp_path)
    monkeypatch.setattr(env, "git_info", lambda root: {"git_commit": "c" * 40, "git_dirty": True})
    assert env.provenance() == {"git_commit": "c" * 40, "git_dirty": True, "git_source": "git"}


def test_a_checkout_without_a_commit_falls_through(monkeypatch, tmp_path):
    """A copied tree given a fresh ``git init`` has no HEAD: its dirty flag would compare with nothing."""
    monkeypatch.setattr(env, "source_root", lambda: tmp_path)
    monkeypatch.setattr(env, "git_info", lambda root: {"git_commit": None, "git_dirty": None})
    monkeypatch.setenv(env.GIT_COMMIT_ENV, C2)
    monkeypatch.setenv(env.GIT_DIRTY_ENV, "false")
    assert env.provenance() == {"git_commit": C2, "git_dirty": False, "git_source": "env"}


def test_git_info_of_a_real_checkout(repo, tmp_path):
    head = _git(repo, "rev-parse", "HEAD")
    assert env.checkout_root(repo) == repo.resolve()
    assert env.checkout_root(repo / "results") is None  # inside a checkout, not the top of one
    assert env.git_info(repo) == {"git_commit": head, "git_dirty": False}
    (repo / "results" / "r.jsonl").write_text("{}\n{}\n")  # outputs do not count
    (repo / "untracked.py").write_text("")  # nor do untracked files
    assert env.git_info(repo)["git_dirty"] is False
    (repo / "src.py").write_text("x = 2\n")
    assert env.git_info(repo) == {"git_commit": head, "git_dirty": True}
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _git(fresh, "init", "-q")
    assert env.git_info(fresh) == {"git_commit": None, "git_dirty": None}


def test_provenance_env_round_trips(repo, monkeypatch):
    head = _git(repo, "rev-parse", "HEAD")
    assert env.provenance_env(repo) == {"ABLATE_GIT_COMMIT": head, "ABLATE_GIT_DIRTY": "false"}
    (repo / "src.py").write_text("x = 3\n")
    passed = env.provenance_env(repo)
    assert passed == {"ABLATE_GIT_COMMIT": head, "ABLATE_GIT_DIRTY": "true"}
    # ... and on the machine that gets them (no checkout there), the rows record the same
    _no_checkout(monkeypatch)
    for k, v in passed.items():
        monkeypatch.setenv(k, v)
    fp = env.fingerprint()
    assert (fp["git_commit"], fp["git_dirty"], fp["git_source"]) == (head, True, "env")


def test_provenance_env_of_this_checkout_and_of_nothing(monkeypatch):
    here = env.provenance()
    got = env.provenance_env()
    if here["git_commit"]:
        assert got["ABLATE_GIT_COMMIT"] == here["git_commit"]
    _no_checkout(monkeypatch)
    assert env.provenance_env() == {}
    monkeypatch.setenv(env.GIT_COMMIT_ENV, C1)  # a chain of launches passes the commit on, dirty unknown
    assert env.provenance_env() == {"ABLATE_GIT_COMMIT": C1}


def _script_copy(tmp_path) -> Path:
    """scripts/stamp_commit.py and ablate/store/env.py alone in a folder that is no git checkout."""
    copy = tmp_path / "copy"
    (copy / "scripts").mkdir(parents=True)
    (copy / "ablate" / "store").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "stamp_commit.py", copy / "scripts")
    shutil.copy2(ROOT / "ablate" / "store" / "env.py", copy / "ablate" / "store")
    return copy


def _run_script(script: Path, **extra: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in (env.GIT_COMMIT_ENV, env.GIT_DIRTY_ENV)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**clean, **extra}, cwd=script.parent)


def test_stamp_commit_script(repo, tmp_path):
    copy = _script_copy(tmp_path)
    script = copy / "scripts" / "stamp_commit.py"
    proc = _run_script(script)
    assert proc.returncode == 1 and proc.stdout == "" and "no commit known" in proc.stderr
    proc = _run_script(script, ABLATE_GIT_COMMIT=C1)  # passes on what it was given
    assert proc.returncode == 0 and proc.stdout == f"ABLATE_GIT_COMMIT={C1}\n"
    # in a checkout: its HEAD and dirty state, as `VAR=value VAR=value` for `env $(...)`
    shutil.copytree(copy / "scripts", repo / "scripts")
    shutil.copytree(copy / "ablate", repo / "ablate")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "script")
    head = _git(repo, "rev-parse", "HEAD")
    proc = _run_script(repo / "scripts" / "stamp_commit.py", ABLATE_GIT_COMMIT=C1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"ABLATE_GIT_COMMIT={head} ABLATE_GIT_DIRTY=false\n"


def test_stamp_commit_script_in_this_checkout():
    if env.source_root() is None:
        pytest.skip("ablate is not running from a git checkout")
    proc = _run_script(ROOT / "scripts" / "stamp_commit.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"{k}={v}" for k, v in env.provenance_env().items()]


# ---------------------------------------------------------------------------------------------------------------
# The build stamp: setup.py's build_py / sdist hooks


def _build(src: Path, out: Path, *what: str) -> list[Path]:
    """Run setuptools' PEP 517 hooks (as pip does with --no-build-isolation) in ``src``; the files made in ``out``."""
    calls = "; ".join(f"print('@made ' + b.{w}({str(out)!r}))" for w in what)
    proc = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; {calls}"], cwd=src,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [out / line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("@made ")]


def _stamp_in(whl: Path) -> dict | None:
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        return json.loads(zf.read("ablate/_build_stamp.json")) if "ablate/_build_stamp.json" in names else None


def test_wheels_carry_the_build_stamp(repo, tmp_path):
    pytest.importorskip("setuptools", minversion="64", reason="building the wheel needs setuptools>=64")
    if not (ROOT / "setup.py").exists():
        pytest.skip("not running from a source checkout")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".benchmarks", "runs", "results", "reports", ".whl", ".wa",
                                    ".wb", "*.pyc", "tests", "docs", env.STAMP_NAME)
    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    _git(src, "init", "-q")
    _git(src, "add", "-A")
    _git(src, "commit", "-qm", "snapshot")
    head = _git(src, "rev-parse", "HEAD")

    # a wheel (and an sdist) built from the checkout: stamped with its HEAD, clean
    sdist, whl = _build(src, tmp_path / "dist", "build_sdist", "build_wheel")
    assert _stamp_in(whl) == {"git_commit": head, "git_dirty": False}
    assert not (src / "ablate" / env.STAMP_NAME).exists()  # never written into the checkout
    assert _git(src, "status", "--porcelain") == ""  # nor does the build dirty it

    # a wheel built later from the sdist, where there is no .git: the stamp the sdist ships
    import tarfile

    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    (whl2,) = _build(unpacked, tmp_path / "dist2", "build_wheel")
    assert _stamp_in(whl2) == {"git_commit": head, "git_dirty": False}

    # no commit known (a copy without .git and without a stamp): no stamp, and the build still works
    (unpacked / "ablate" / env.STAMP_NAME).unlink()  # build/ keeps the last build's stamp: it must go too
    (whl3,) = _build(unpacked, tmp_path / "dist3", "build_wheel")
    assert _stamp_in(whl3) is None

    # an editable install (pip install -e .) builds and stamps nothing: it runs from the checkout, git answers
    (editable,) = _build(src, tmp_path / "dist4", "build_editable")
    assert _stamp_in(editable) is None and not (src / "ablate" / env.STAMP_NAME).exists()

    # a dirty checkout stamps dirty
    src_env = src / "ablate" / "store" / "env.py"
    src_env.write_text(src_env.read_text() + "\n# local change\n")
    (whl5,) = _build(src, tmp_path / "dist5", "build_wheel")
    assert _stamp_in(whl5) == {"git_commit": head, "git_dirty": True}

    # the installed wheel (unpacked, no checkout anywhere) records the stamp in its rows
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)
    clean = {k: v for k, v in os.environ.items() if k not in (env.GIT_COMMIT_ENV, env.GIT_DIRTY_ENV, "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", "import json, ablate.store.env as e; print(json.dumps(e.provenance()))"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"git_commit": head, "git_dirty": False, "git_source": "stamp"}
