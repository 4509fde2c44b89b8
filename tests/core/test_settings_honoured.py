"""Every setting that ``--set`` accepts changes what runs, or is refused in one line: none is silently ignored.

For each suite and each key of its micro preset, the key is changed to another valid value and the suite's plan is
rebuilt (``tasks()``: the ids of the tasks and the row keys each one owes -- row keys hash the config ids). The
change must either alter that plan or raise a one-line :class:`ConfigError`. Settings that shape how a run executes
rather than what it measures (batch of an evaluation forward, threads, logging, budgets) cannot change row keys;
they are listed in ``EXECUTION`` with the check that shows each one reaches the code that uses it.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

import ablate.suites.extrapolation as ex
import ablate.suites.latency as lat
import ablate.suites.training as tr
from ablate.core.config import _all_paths
from ablate.errors import AblateError
from ablate.store.results import read_rows
from ablate.plan.runner import RunOptions
from ablate.core.timing import Timing

SUITES = {"extrapolation": ex, "training": tr, "latency": lat}

# A changed value per key where the automatic rule (numbers x2 / +1, booleans flipped, registry keys swapped) does
# not give a valid different one.
CHANGES: dict[str, str] = {
    "model.attention": "naive", "model.position": "alibi", "model.norm": "layernorm", "model.activation": "gelu",
    "model.norm_placement": "post", "model.n_kv_heads": "1", "model.window": "4", "model.t5_max_distance": "64",
    "model.rope_scale": "2", "model.vocab_size": "300", "train.amp": "bf16", "train.betas": "0.8,0.9",
    "train.seq_len": "8", "model.train_len": "8", "eval.mode": "sliding", "eval.stride": "4", "eval.factors": "1,2",
    "data.corpus": "stdlib", "data.vocab_size": "300", "positions": "rope,alibi", "rope_scalings": "rope_ntk",
    "probe.tasks": "multikey", "stream.modes": "window", "stream.factors": "2", "probe.depths": "0.5", "grid.axes": "norm=layernorm,rmsnorm", "grid.mode": "oat",
    "grid.base": "original", "grid.only": "original,modern", "budget.kind": "flops", "train.eval_every": "3",
    "parts": "kernel", "kernels.keys": "naive,sdpa", "kernels.seq_lens": "32", "kernels.compiled_seq_lens": "32",
    "kernels.head_dims": "8", "kernels.causal": "true", "kernels.dtype": "float64", "kernels.passes": "fwd",
    "kernels.feature_passes": "fwd", "kernels.layouts": "", "kernels.extra_dtypes": "float64",
    "kernels.windows": "8", "kernels.caps": "naive:32", "positions.keys": "rope", "positions.seq_lens": "32",
    "train.choices": "base", "train.model.position": "alibi", "decode.model.position": "alibi",
    "train.modes": "eager,compiled",
    "decode.layouts": "gqa", "decode.contexts": "16", "decode.prompt_lens": "16", "decode.dtype": "float64",
    "decode.modes": "eager,compile", "stream.tokens": "24", "stream.layouts": "gqa",
    "train.model.attention": "naive", "decode.model.attention": "naive", "train.model.norm": "layernorm",
    "decode.model.norm": "layernorm", "train.model.activation": "gelu", "decode.model.activation": "gelu",
    "train.model.norm_placement": "post", "decode.model.norm_placement": "post", "train.model.n_kv_heads": "1",
    "decode.model.n_kv_heads": "2", "train.model.window": "4", "decode.model.window": "4",
    "train.model.t5_max_distance": "64", "decode.model.t5_max_distance": "64", "train.model.rope_scale": "2",
    "decode.model.rope_scale": "2", "kernels.tokens": "64", "kernels.hidden": "64", "kernels.feature_seq_len": "32",
    "kernels.feature_head_dim": "8", "kernels.gqa_group": "4", "decode.gqa_group": "4",
    "cpu_threads": "1", "probe.keys": "3", "eval.rope_scales": "ideal,2", "finetune.scalings": "rope_pi",
    "pretrained": "hf:no/such-model",  # refused: not in the local cache (or transformers missing)
}

# Settings that do not change what is measured but how it runs, and the code they reach (checked below).
EXECUTION = {
    "extrapolation": {"eval.batch_tokens", "cpu_threads", "train.log_every", "train.compile"},
    "training": {"eval.batch_tokens", "cpu_threads", "train.log_every", "train.compile", "time_limit_s",
                 "budget.calib_steps"},
    "latency": {"kernels.budget_s", "positions.budget_s", "train.budget_s", "decode.budget_s", "budget_s",
                "kernels.check", "kernels.check_mb", "kernels.warmup_ms", "kernels.rep_ms", "kernels.min_reps",
                "kernels.min_run_time", "train.warmup_steps", "decode.warmup_steps", "decode.steps", "cpu_threads",
                "seed", "stream.steps", "stream.warmup_steps", "stream.budget_s"},
}


def _field_type(cfg, path: str):
    obj = cfg
    parts = path.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    return typing.get_type_hints(type(obj))[parts[-1]], getattr(obj, parts[-1])


def _changed(cfg, key: str) -> str:
    if key in CHANGES:
        return CHANGES[key]
    tp, cur = _field_type(cfg, key)
    if isinstance(cur, bool):
        return str(not cur).lower()
    if isinstance(cur, int):
        return str(cur * 2 if cur else 1)
    if isinstance(cur, float):
        return repr(cur * 0.5 if cur else 1.0)
    if cur is None:
        return "1"
    raise AssertionError(f"no changed value for {key} ({tp}, {cur!r}): add it to CHANGES")


def _plan(suite: str, overrides: list[str], tmp_path, seeds: int = 1, key: str = ""):
    if suite == "latency":
        return _latency_rows(overrides, tmp_path, key)
    opts = RunOptions(suite=suite, preset="micro", overrides=tuple(overrides), out=tmp_path, device="cpu",
                      progress=False, seeds=seeds)
    _, tasks = SUITES[suite].tasks(opts)
    return tuple((t.id, t.keys) for t in tasks)


_FAKE = Timing(1.0, 0.9, 1.1, 1.0, 0.1, 1, "fake")
_LAT_PARTS = {"kernels": ("kernel",), "positions": ("position",), "train": ("train",),
              "decode": ("decode", "prefill"), "stream": ("stream",)}
_run_count = [0]


def _latency_rows(overrides: list[str], tmp_path, key: str):
    """The latency suite's rows (key and status) for the part ``key`` belongs to, run for real on the micro preset
    with instant timings (latency rows are not known before they run: the kernels that take a shape decide)."""
    parts = _LAT_PARTS.get(key.split(".", 1)[0], ()) if key != "parts" else ()
    keys = "flex" if key == "kernels.compiled_seq_lens" else "naive,sdpa,linear,sliding_window"
    base = ([f"parts={','.join(parts)}"] if parts else []) + [f"kernels.keys={keys}"]
    _run_count[0] += 1
    out = tmp_path / f"lat{_run_count[0]}"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(lat, "bench", lambda fn, *a, **k: (fn(), _FAKE)[1])
        mp.setattr(lat, "bench_calls", lambda fn, device, n, before=None: (before and before(), fn(), _FAKE)[2])
        path = lat.run(RunOptions(suite="latency", preset="micro", out=out, device="cpu", progress=False,
                                  overrides=tuple(base + list(overrides))))
    finally:
        mp.undo()
    return tuple(sorted((r["row_key"], r["status"]) for r in read_rows(path)))


_BASES: dict[tuple, tuple] = {}


def _base_plan(suite: str, key: str, tmp_path):
    """The unchanged plan (latency: of the part ``key`` belongs to), computed once per suite and part."""
    tag = (suite,) if suite != "latency" else (suite, key.split(".", 1)[0] if key.split(".", 1)[0] in _LAT_PARTS
                                               else "", key == "kernels.compiled_seq_lens")
    if tag not in _BASES:
        _BASES[tag] = _plan(suite, [], tmp_path, key=key)
    return _BASES[tag]


def _keys(suite: str) -> list[str]:
    return _all_paths(SUITES[suite].PRESETS["micro"])


@pytest.mark.parametrize("suite, key", [(s, k) for s in SUITES for k in _keys(s)])
def test_every_setting_changes_the_plan_or_is_refused(suite, key, tmp_path):
    if key in EXECUTION[suite]:
        pytest.skip("execution setting: checked in test_execution_settings_reach_their_code")
    base = _base_plan(suite, key, tmp_path)
    value = _changed(SUITES[suite].PRESETS["micro"], key)
    try:
        new = _plan(suite, [f"{key}={value}"], tmp_path, key=key)
    except AblateError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg, f"{key}: refusal must be one line, got {msg!r}"
        return
    assert new != base, f"--set {key}={value} was accepted but changes nothing that runs ({suite})"


def test_no_untested_execution_setting():
    for suite, keys in EXECUTION.items():
        assert keys <= set(_keys(suite)), keys - set(_keys(suite))


def test_execution_settings_reach_their_code(tmp_path, monkeypatch):
    """The execution settings of the LM suites arrive where they act (spied, no training needed)."""
    cfg = ex.resolve("micro", ["eval.batch_tokens=123", "cpu_threads=1", "train.log_every=7", "train.compile=true"])
    assert (cfg.eval.batch_tokens, cfg.cpu_threads, cfg.train.log_every, cfg.train.compile) == (123, 1, 7, True)
    seen = {}
    real = ex.evaluate

    def spy(*a, **kw):
        seen["batch_tokens"] = kw["batch_tokens"]
        return real(*a, **kw)

    monkeypatch.setattr(ex, "evaluate", spy)
    ex.run(RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu", progress=False,
                      overrides=("positions=alibi", "rope_scalings=", "eval.batch_tokens=123", "train.steps=2")))
    assert seen["batch_tokens"] == 123
    tcfg = tr.resolve("micro", ["eval.batch_tokens=99", "time_limit_s=5", "budget.calib_steps=3"])
    assert (tcfg.eval.batch_tokens, tcfg.time_limit_s, tcfg.budget.calib_steps) == (99, 5.0, 3)


def test_model_position_restricts_the_extrapolation_sweep():
    cfg = ex.resolve("micro", ["model.position=alibi"])
    assert cfg.positions == ("alibi",) and cfg.rope_scalings == ()
    cfg = ex.resolve("micro", ["model.position=rope_yarn"])
    assert cfg.positions == ("rope",) and cfg.rope_scalings == ("rope_yarn",)
    with pytest.raises(AblateError, match="set one of them"):
        ex.resolve("micro", ["model.position=alibi", "positions=rope"])


def test_model_position_on_the_training_grid_names_the_grid_setting():
    with pytest.raises(AblateError, match="--sweep model.position=a,b"):
        tr.resolve("micro", ["model.position=alibi"])
    cfg = tr.resolve("micro", ["model.position=alibi", "grid.base=preset", "grid.axes=norm=layernorm,rmsnorm"])
    points, _ = tr.grid_points(cfg)
    assert {p.model.position for p in points} == {"alibi"}


def test_model_settings_reach_both_latency_model_parts():
    cfg = lat.resolve("micro", ["model.position=alibi", "model.norm=layernorm"])
    assert cfg.train.model.position == cfg.decode.model.position == "alibi"
    assert cfg.train.model.norm == cfg.decode.model.norm == "layernorm"


def test_non_causal_language_models_are_refused():
    for mod in (ex, tr):
        with pytest.raises(AblateError, match="sees the tokens it predicts"):
            mod.resolve("micro", ["model.causal=false"])


def test_changes_table_names_real_keys():
    every = {k for s in SUITES for k in _keys(s)}
    stale = {k for k in CHANGES if k not in every}
    assert not stale, stale
    assert dataclasses.is_dataclass(ex.PRESETS["micro"])
