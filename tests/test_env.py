"""The environment fingerprint: keys, caching, and probes that fail without taking the caller down."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ablate import env

KEYS = {"python", "platform", "cpu", "hostname", "torch", "cuda", "cudnn", "gpu", "gpu_count", "driver",
        "git_commit", "git_dirty", "ablate", "flash_attn", "flash_attn_4", "xformers", "triton", "numpy", "pandas"}


@pytest.fixture(autouse=True)
def _fresh_cache():
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
