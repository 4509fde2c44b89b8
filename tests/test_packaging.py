"""The wheel maps the top-level folders into the `ablate` namespace and installs nothing else at the top."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent



def _copy_tree(dst: Path) -> Path:
    """A private copy of the working tree, so the build's build/ and *.egg-info never race other test runs."""
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".benchmarks", "runs", "results", "reports", ".whl", ".wa",
                                    ".wb", "*.pyc")
    src = dst / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    # --no-build-isolation builds with this environment's setuptools (Python >= 3.12 venvs start without it).
    pytest.importorskip("setuptools", minversion="64", reason="building the wheel needs setuptools>=64")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_tree(tmp)
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           str(src), "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("ablate_bench-*.whl")  # the distribution ablate-bench (wheel names spell "-" as "_")
    return whl


def test_wheel_layout(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        infos = {i.filename: i for i in zf.infolist()}
        cli_text = zf.read("ablate/cli.py").decode()
    top = {n.split("/", 1)[0] for n in names}
    assert {n for n in top if not n.endswith(".dist-info")} == {"ablate"}, top
    for needed in ("ablate/__init__.py", "ablate/registry/keys.py", "ablate/cli.py", "ablate/variants/__init__.py",
                   "ablate/suites/__init__.py", "ablate/store/results.py", "ablate/plan/runner.py", "ablate/store/env.py",
                   "ablate/reporting/tables.py"):
        assert needed in names, needed
    assert any(n.startswith("ablate/variants/") and n.endswith(".py") and "__init__" not in n for n in names)
    for stray in ("variants/", "suites/", "cli.py", "tests/"):
        assert not any(n == stray or n.startswith(stray) for n in names), stray
    # cli.py sits at the top of the checkout; the wheel holds it as ablate/cli.py, a real file (not S_IFLNK).
    mode = infos["ablate/cli.py"].external_attr >> 16
    assert (mode & 0o170000) != 0o120000
    assert "def main(" in cli_text


def test_wheel_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        (ep,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(ep).decode()
    assert "ablate = ablate.cli:main" in text


def test_wheel_imports_without_the_checkout(wheel, tmp_path):
    """Unpacked on its own (no source tree on sys.path), the namespace mapping holds."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = ("import ablate, ablate.suites, ablate.registry.keys, ablate.cli, ablate.store.results; "
            "print(ablate.__file__); print(ablate.cli.__file__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(str(site)) for line in proc.stdout.split())


def test_wheel_metadata_names_the_free_distribution(wheel):
    """Distribution ablate-bench (``ablate`` on PyPI is another project); import name and command stay ``ablate``;
    the MIT LICENSE ships with it."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = zf.read(meta).decode()
    assert "\nName: ablate-bench\n" in text
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names), names
    for extra in ("parquet", "wandb", "mlflow", "tensorboard"):
        assert f"Provides-Extra: {extra}\n" in text, extra


def test_sdist_carries_cli_py_and_builds_the_same_wheel(tmp_path):
    """``python -m build`` makes the wheel from the sdist: the sdist must hold cli.py (MANIFEST.in), and the wheel
    built from it has ablate/cli.py and no top-level cli.py."""
    pytest.importorskip("setuptools", minversion="64", reason="building the sdist needs setuptools>=64")
    src = _copy_tree(tmp_path)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sd")], cwd=src,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sd,) = (tmp_path / "sd").glob("ablate_bench-*.tar.gz")
    with tarfile.open(sd) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    assert "cli.py" in members and "variants/__init__.py" in members, sorted(members)[:20]
    out = tmp_path / "whl"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(sd),
                           "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("ablate_bench-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "ablate/cli.py" in names and "cli.py" not in names
    assert "def main(" in zipfile.ZipFile(whl).read("ablate/cli.py").decode()


def test_checkout_maps_exactly_the_three_names():
    """In a checkout, ablate.CHECKOUT_NAMES (variants/, suites/, cli.py) resolve to the checkout's files, and
    nothing else of the checkout joins the namespace (tests/, scripts/, docs/ do not import as ablate.*)."""
    import importlib.util

    import ablate
    import ablate.cli
    import ablate.suites
    import ablate.variants

    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    assert set(ablate.CHECKOUT_NAMES) == {"ablate.variants", "ablate.suites", "ablate.cli"}
    assert Path(ablate.cli.__file__).resolve() == ROOT / "cli.py"
    assert Path(ablate.variants.__file__).resolve() == ROOT / "variants" / "__init__.py"
    assert Path(ablate.suites.__file__).resolve() == ROOT / "suites" / "__init__.py"
    assert not (ROOT / "ablate" / "cli.py").exists()  # no symlink
    for stray in ("ablate.tests", "ablate.scripts", "ablate.docs"):
        assert importlib.util.find_spec(stray) is None, stray
