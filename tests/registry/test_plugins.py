"""Third-party variants (ablate.registry.plugins): a variant defined outside the package registers like a built-in.

* a ``.py`` file plugin (the example of docs/adding-a-variant.md, ``docs/examples/partial_rope_plugin.py``) is listed
  with its origin, checked against an independent reference, and trained by a suite (``--plugin``);
* an installed distribution's ``ablate.variants`` entry point (``tests/data/plugin_pkg``, pip-installed offline
  into a temporary folder) is loaded by ``load_all()`` in a fresh process;
* a broken plugin is one line and exit 2; a plugin reusing a built-in key gets the duplicate error naming both;
* ``$ABLATE_PLUGINS`` and the worker spec reach other processes: ``python -m ablate.cli`` and the
  ``python -m ablate.launchers.launch`` worker that the gpus and slurm launchers start.

In-process tests restore the registries, the plugin state and ``$ABLATE_PLUGINS`` afterwards (``isolated``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from ablate.launchers import launch
from ablate.registry import plugins
from ablate.core.config import ModelConfig
from ablate.errors import AblateError
from ablate.registry.plugins import DISABLE_ENTRY_POINTS_ENV, PLUGINS_ENV, PluginError
from ablate.registry.keys import NORM, POSITION, REGISTRIES, DuplicateKeyError, Registry, load_all
from ablate.store.results import read_rows, shard_files
from ablate.plan.runner import RunOptions, suite_tasks
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "partial_rope_plugin.py"
PKG = Path(__file__).resolve().parents[1] / "data" / "plugin_pkg"
EXAMPLE_ORIGIN = f"plugin {EXAMPLE}"
PKG_ORIGIN = "entry point ablate-toy-plugin:toyvariants"


@pytest.fixture
def isolated(monkeypatch):
    """Registries, loaded plugins, plugin modules and $ABLATE_PLUGINS as they were before the test."""
    monkeypatch.setenv(PLUGINS_ENV, "")  # recorded, so that what --plugin adds to os.environ is undone
    monkeypatch.delenv(PLUGINS_ENV)
    load_all()
    entries = {axis: dict(reg._entries) for axis, reg in REGISTRIES.items()}
    state = (dict(plugins._LOADED), dict(plugins._FAILED), plugins._ENTRY_POINTS_SCANNED[0],
             list(plugins._ENTRY_POINTS))
    modules = set(sys.modules)
    yield
    for axis, reg in REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(entries[axis])
    plugins._LOADED.clear()
    plugins._LOADED.update(state[0])
    plugins._FAILED.clear()
    plugins._FAILED.update(state[1])
    plugins._ENTRY_POINTS_SCANNED[0] = state[2]
    plugins._ENTRY_POINTS[:] = state[3]
    for name in set(sys.modules) - modules:
        if name.startswith(("ablate_plugin_", "ablate_toy_plugin", "plugin_test_")):
            del sys.modules[name]


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PLUGINS_ENV, DISABLE_ENTRY_POINTS_ENV)}
    env.update(extra)
    return env


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Origins


def test_builtins_record_origin_ablate():
    load_all()
    for reg in REGISTRIES.values():
        for e in reg.entries():
            if e.fn.__module__.startswith("ablate."):
                assert e.origin == "ablate", (reg.axis, e.key, e.origin)


def test_origin_from_the_loader_context_and_outside_it():
    from ablate.registry.keys import registering_from

    reg = Registry("toy")
    with registering_from("plugin somewhere.py"):
        reg.register("a", description="a")(lambda: None)
    reg.register("b", description="b")(lambda: None)  # defined in this test module: not ablate's
    assert reg["a"].origin == "plugin somewhere.py"
    assert reg["b"].origin == f"module {__name__}"
    with pytest.raises(DuplicateKeyError) as ei:
        reg.register("a", description="again")(lambda: None)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, AblateError)
    assert str(ei.value).startswith("duplicate toy key 'a': registered by plugin somewhere.py and again by module ")


# ---------------------------------------------------------------------------------------------------------------
# A .py file plugin: the docs example


def test_file_plugin_listed_with_its_origin(isolated, capsys):
    code, out, err = cli(capsys, "list", "--plugin", EXAMPLE, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert {e["origin"] for e in data["attention"]} == {"ablate"}
    row = {e["key"]: e for e in data["position"]}["rope_partial"]
    assert row["origin"] == EXAMPLE_ORIGIN and row["available"] is True
    assert row["paper"].startswith("Black et al. 2022") and row["supports"]["kind"] == "rotary"
    assert os.environ[PLUGINS_ENV] == str(EXAMPLE)  # what workers started from here inherit
    code, out, err = cli(capsys, "list", "--axis", "position", "--plugin", EXAMPLE)  # table: an origin column
    assert code == 0, err
    assert "origin" in out and "rope_partial" in out and "plugin" in out
    # loading it again (a relative spelling, a second load_all) registers nothing twice
    rel = os.path.relpath(EXAMPLE)
    assert plugins.use([rel]) == (str(EXAMPLE),)
    assert [p.origin for p in plugins.loaded()].count(EXAMPLE_ORIGIN) == 1


def _example():
    load_all()
    return sys.modules[plugins.module_name_for_file(EXAMPLE)]


def _rotate_ref(x: torch.Tensor, positions: list[int], rot: int, base: float) -> torch.Tensor:
    """Independent reference: the pairs (i, i + rot/2), i < rot/2, as complex numbers times e^(i pos theta_i) with
    theta_i = base^(-2i/rot) (RoPE's frequencies for a head of width rot); dims from rot on untouched."""
    half = rot // 2
    theta = torch.tensor([base ** (-2 * i / rot) for i in range(half)], dtype=torch.float64)
    ang = torch.tensor(positions, dtype=torch.float64)[:, None] * theta[None, :]
    z = torch.complex(x[..., :half], x[..., half:rot]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat((z.real, z.imag, x[..., rot:]), dim=-1)


def test_file_plugin_matches_an_independent_reference(isolated, monkeypatch):
    """What docs/adding-a-variant.md asks of a new position encoding, as the built-in RoPE tests do: the formula
    against an independent computation, scores that depend only on the relative position, KV-cache consistency
    (a slice rotated at its offset is the slice of the full rotation), and the built-in RoPE when it rotates all."""
    monkeypatch.setenv(PLUGINS_ENV, str(EXAMPLE))
    mod = _example()
    cfg = ModelConfig(d_model=64, n_heads=2, train_len=32, max_len=32)  # head_dim 32: 8 dims rotated
    m = POSITION["rope_partial"].fn(cfg)
    assert m.rot_dim == mod.rotary_dim(32) == 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 20, 32, generator=g, dtype=torch.float64)
    got = m.rotate(x[None], 5, 25)[0]
    torch.testing.assert_close(got, _rotate_ref(x, list(range(5, 25)), 8, cfg.rope_base), rtol=1e-12, atol=1e-12)
    assert torch.equal(got[..., 8:], x[..., 8:])
    q, k = torch.randn(32, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64)

    def score(i: int, j: int) -> float:
        at = lambda v, p: m.rotate(v.view(1, 1, 1, -1), p, 4096).view(-1)  # noqa: E731
        return torch.dot(at(q, i), at(k, j)).item()

    for delta in (0, 3, 40):
        assert score(100 + delta, 100) == pytest.approx(score(7 + delta, 7), rel=1e-9, abs=1e-9)
    full = m.rotate(x[None], 0, 20)
    for off, t in ((0, 1), (3, 5), (19, 1)):
        torch.testing.assert_close(m.rotate(x[None, :, off:off + t], off, 20), full[:, :, off:off + t],
                                   rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(mod, "rotary_dim", lambda head_dim, fraction=1.0: head_dim)
    everything = POSITION["rope_partial"].fn(cfg)
    torch.testing.assert_close(everything.rotate(x[None], 2, 22), POSITION["rope"].fn(cfg).rotate(x[None], 2, 22),
                               rtol=0, atol=0)


def test_suite_runs_with_a_file_plugin(isolated, tmp_path, capsys):
    code, out, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--plugin", EXAMPLE,
                         "--set", "model.position=rope_partial", "--set", "train.steps=5", "--out", tmp_path,
                         "--device", "cpu", "--no-progress")
    assert code == 0, err[-3000:]
    path = tmp_path / "extrapolation" / "cpu-micro.jsonl"  # <out>/<suite>/<device>-<preset>.jsonl
    rows = read_rows(path)
    assert rows and {r["position"] for r in rows} == {"rope_partial"} and {r["status"] for r in rows} == {"ok"}
    plan = json.loads((tmp_path / "extrapolation" / "cpu-micro.launch" / "plan.json").read_text())  # beside it
    assert plan["opts"]["plugins"] == [str(EXAMPLE)]  # what `ablate status` and a resumed sweep see


# ---------------------------------------------------------------------------------------------------------------
# An installed distribution with an entry point


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """tests/data/plugin_pkg, pip-installed offline (no deps, no build isolation) into a temporary folder."""
    tmp = tmp_path_factory.mktemp("plugin_pkg")
    src = tmp / "src"
    shutil.copytree(PKG, src)  # build outputs (build/, *.egg-info) land in the copy, not in tests/data
    target = tmp / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return target


def test_installed_entry_point_registers_with_its_origin(installed):
    code = ("import json; from ablate.registry.keys import load_all, NORM; load_all(); "
            "print(json.dumps({k: NORM[k].origin for k in NORM.keys()}))")
    env = clean_env(PYTHONPATH=str(installed))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    origins = json.loads(proc.stdout)
    assert origins["toy_scalenorm"] == PKG_ORIGIN and origins["layernorm"] == "ablate"

    listed = subprocess.run([sys.executable, "-m", "ablate.cli", "list", "--axis", "norm", "--format", "json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {e["key"]: e for e in json.loads(listed.stdout)["norm"]}
    assert rows["toy_scalenorm"]["origin"] == PKG_ORIGIN
    assert rows["toy_scalenorm"]["paper"] == "Nguyen & Salazar 2019, Transformers without Tears"

    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=clean_env(PYTHONPATH=str(installed), **{DISABLE_ENTRY_POINTS_ENV: "1"}))
    assert off.returncode == 0, off.stderr[-3000:]
    assert "toy_scalenorm" not in json.loads(off.stdout)


def test_broken_entry_point_is_fatal_in_one_line(isolated, monkeypatch, capsys):
    bad = EntryPoint(name="broken", value="plugin_test_no_such_module_xyz", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [bad])
    plugins._ENTRY_POINTS_SCANNED[0] = False
    plugins._ENTRY_POINTS.clear()
    code, _, err = cli(capsys, "list", "--format", "json")
    one_line_error(code, err, "could not load entry point", ":broken", "plugin_test_no_such_module_xyz",
                   "ModuleNotFoundError", DISABLE_ENTRY_POINTS_ENV)
    with pytest.raises(PluginError):  # every later load, not only the first
        load_all()
    monkeypatch.setenv(DISABLE_ENTRY_POINTS_ENV, "1")
    load_all()


# ---------------------------------------------------------------------------------------------------------------
# Broken plugins, clashes


BROKEN = {
    "raises.py": ("from ablate.registry.keys import NORM\nfrom ablate.variants.norms import RMSNorm\n"
                  "NORM.register('half_done', description='registered before the failure')(RMSNorm)\n"
                  "x = 1 / 0\n", ("ZeroDivisionError: division by zero", "raises.py:4")),
    "syntax.py": ("def f(:\n", ("SyntaxError", "syntax.py, line 1")),
    "imports.py": ("import plugin_test_missing_dependency\n", ("ModuleNotFoundError", "missing_dependency")),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_plugin_file_is_one_line_exit_2(name, isolated, tmp_path, capsys):
    text, needles = BROKEN[name]
    path = write(tmp_path, name, text)
    code, _, err = cli(capsys, "list", "--plugin", path)
    one_line_error(code, err, f"could not load plugin {path.resolve()}", *needles)
    assert "half_done" not in NORM  # a plugin that failed half-way leaves nothing registered


@pytest.mark.parametrize("spec,needle", [
    ("no_such_dir/missing.py", "--plugin no_such_dir/missing.py: no such file"),
    ("plugin_test_no_such.module", "plugin module 'plugin_test_no_such.module' not found"),
    ("not a module", "not a .py file or a dotted module name"),
])
def test_unknown_plugin_is_one_line_exit_2(spec, needle, isolated, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--plugin", spec, "--out",
                       tmp_path / "out", "--device", "cpu", "--no-progress")
    one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_clash_with_a_builtin_key_names_both_origins(isolated, tmp_path, capsys):
    path = write(tmp_path, "clash.py", "from ablate.registry.keys import POSITION\n"
                                       "from ablate.variants.positions import NoPE\n"
                                       "POSITION.register('clash_first', description='fine')(NoPE)\n"
                                       "POSITION.register('rope', description='mine')(NoPE)\n")
    code, _, err = cli(capsys, "list", "--plugin", path)
    line = one_line_error(code, err, "duplicate position key 'rope'", "registered by ablate",
                          f"and again by plugin {path.resolve()}")
    assert "could not load" not in line  # the registry's own line
    assert "clash_first" not in POSITION and POSITION["rope"].origin == "ablate"


# ---------------------------------------------------------------------------------------------------------------
# Other processes: $ABLATE_PLUGINS, the worker spec, torchrun ranks


def test_env_var_reaches_a_fresh_process(tmp_path):
    other = write(tmp_path, "other_plugin.py", "from ablate.registry.keys import ACTIVATION\n"
                                               "from ablate.variants.activations import ReLUFFN\n"
                                               "ACTIVATION.register('relu_again', description='ReLU, again')"
                                               "(ReLUFFN)\n")
    env = clean_env(**{PLUGINS_ENV: os.pathsep.join([str(EXAMPLE), str(other)])})
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "list", "--format", "json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert {e["key"]: e["origin"] for e in data["position"]}["rope_partial"] == EXAMPLE_ORIGIN
    assert {e["key"]: e["origin"] for e in data["activation"]}["relu_again"] == f"plugin {other}"


def test_no_plugin_state_leaks_out_of_a_test():
    """``isolated`` undoes what the tests above did: the next test file sees ablate's own variants only."""
    assert PLUGINS_ENV not in os.environ
    assert "rope_partial" not in POSITION and not any(p.origin.startswith("plugin ") for p in plugins.loaded())


def test_launchers_pass_plugins_on():
    base = RunOptions(suite="training", preset="micro", out=Path("o"), device="cpu")
    assert "plugins" not in launch.spec_opts(base)  # no plugins: the plan id of existing sweeps is unchanged
    opts = dataclasses.replace(base, plugins=(str(EXAMPLE), "mypkg.variants"))
    assert launch.spec_opts(opts)["plugins"] == [str(EXAMPLE), "mypkg.variants"]
    assert RunOptions(**launch.spec_opts(opts)).plugins == opts.plugins  # what run_task rebuilds
    cmd = launch.torchrun_args(opts, launch.DistOptions(nproc_per_node=2))
    i = cmd.index("ablate.cli")
    assert [cmd[j + 1] for j in range(i, len(cmd)) if cmd[j] == "--plugin"] == [str(EXAMPLE), "mypkg.variants"]


def test_worker_process_loads_the_spec_plugins(isolated, tmp_path, monkeypatch):
    """``python -m ablate.launchers.launch SPEC`` (what --launcher gpus runs per task, and a slurm job runs through
    run_task), with no $ABLATE_PLUGINS in its environment: the spec's plugins give it the key."""
    monkeypatch.setenv(PLUGINS_ENV, str(EXAMPLE))  # this process knows the key, to list the tasks
    opts = RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu", progress=False,
                      overrides=("model.position=rope_partial", "train.steps=5", "eval.factors=1,2"),
                      plugins=(str(EXAMPLE),))
    results, tasks = suite_tasks(opts)
    assert len(tasks) == 1
    spec = {"opts": launch.spec_opts(opts), "task": tasks[0].id, "results": str(results), "plan_id": "test",
            "run_id": "plugin-test-run", "worker": "w0"}
    proc = subprocess.run([sys.executable, "-m", "ablate.launchers.launch", json.dumps(spec)], capture_output=True,
                          text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for f in shard_files(results) for r in read_rows(f)]
    assert rows and {r["position"] for r in rows} == {"rope_partial"} and {r["status"] for r in rows} == {"ok"}
