"""ablate.plan.estimate: FLOPs as the suites count them, time only from measured rows; the preset ladder it prices."""

import json
from dataclasses import replace

import pytest

from ablate.core.config import MODEL_PRESETS, model_preset
from ablate.plan.estimate import (EvalWork, Rate, TrainJob, _main, estimate_lines, eval_flops, job_flops, measured_rate,
                             model_matmul_params, planned_vocab)
from ablate.core.flops import matmul_params, step_flops
from ablate.core.model import Transformer
from ablate.suites import extrapolation, training


@pytest.mark.parametrize("cfg", [
    model_preset("tiny"), model_preset("small"),
    replace(model_preset("tiny"), n_kv_heads=1, activation="relu", vocab_size=1000),
    replace(model_preset("micro"), activation="geglu", bias=True, position="learned", max_len=64),
])
def test_meta_device_parameter_count_is_the_real_models(cfg):
    assert model_matmul_params(cfg) == matmul_params(Transformer(cfg))


def test_job_flops_are_the_suites_step_flops_times_steps():
    m = model_preset("tiny")
    job = TrainJob(m, batch=8, seq_len=64, steps=7)
    one = step_flops(matmul_params(Transformer(m)), m, 8, 64)[0]
    assert job_flops(job) == pytest.approx(7 * one)
    # evaluation: 2·N per token plus attention per window; twice the tokens -> twice the FLOPs
    w = EvalWork(m, 64, 640)
    assert eval_flops(replace(w, tokens=1280)) == pytest.approx(2 * eval_flops(w))
    assert eval_flops(w) > 2 * model_matmul_params(m) * 640


def test_planned_vocab_follows_a_bpe_tokenizer_only():
    m = model_preset("tiny")
    assert planned_vocab(m, "bpe:4096").vocab_size == 4096
    assert planned_vocab(m, None) == m and planned_vocab(m, "bytes") == m


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_measured_rate_is_the_median_of_matching_rows(tmp_path):
    base = {"status": "ok", "suite": "training", "device": "cpu", "env.cpu": "CPU X", "threads": 2}
    _write(tmp_path / "a.jsonl", [
        {**base, "flops": 1e12, "train_s": 10.0},   # 100 GFLOP/s
        {**base, "flops": 3e12, "train_s": 10.0},   # 300
        {**base, "flops": 2e12, "train_s": 10.0},   # 200 -> median
        {**base, "flops": 9e12, "train_s": 1.0, "env.cpu": "CPU Y"},      # another machine
        {**base, "flops": 9e12, "train_s": 1.0, "status": "error"},       # not a measurement
        {"status": "ok", "suite": "latency", "device": "cuda", "choice": "base", "tflops": 150.0,
         "env.gpu": "NVIDIA H100 80GB HBM3"},
    ])
    r = measured_rate("cpu", where=[tmp_path], cpu="CPU X")
    assert r is not None and r.flops_per_s == pytest.approx(2e11) and "3 measured training rows" in r.source
    g = measured_rate("cuda", where=[tmp_path], gpu="H100")
    assert g is not None and g.flops_per_s == pytest.approx(1.5e14)
    assert measured_rate("cuda", where=[tmp_path], gpu="A100") is None
    assert measured_rate("cpu", where=[tmp_path], cpu="CPU Z") is None


def test_estimate_lines_say_unknown_without_a_measurement():
    jobs = [TrainJob(model_preset("micro"), 2, 16, 10)]
    lines = estimate_lines(jobs)
    assert "time unknown" in lines[-1]
    flops = job_flops(jobs[0])
    lines = estimate_lines(jobs, rate=Rate(flops / 30.0, "test rows"))
    assert lines[-1].startswith("estimate: 30 s at") and "test rows" in lines[-1]
    lines = estimate_lines(jobs, rate=Rate(flops / 7200.0, "gpu rows"), device="cuda")
    assert "2 GPU-hours" in lines[-1]


def test_every_training_suite_has_the_same_ladder_and_the_paper_rung():
    for suite in (extrapolation, training):
        assert {"micro", "tiny", "small", "gpu"} <= set(suite.PRESETS)
        small = suite.PRESETS["small"]
        assert small.model.d_model == MODEL_PRESETS["small"].d_model
        assert small.model.n_layers == MODEL_PRESETS["small"].n_layers
        assert small.train.seq_len == small.model.train_len == MODEL_PRESETS["small"].train_len
        assert small.train.amp is None  # a CPU rung
    paper = extrapolation.PRESETS["paper"]
    m = paper.model
    assert (m.n_layers, m.d_model, m.n_heads, m.train_len) == (16, 1024, 8, 512)
    assert paper.train.batch_size * paper.train.seq_len == 9216 * 8  # fairseq --max-tokens 9216 on 8 GPUs
    assert paper.train.steps == 286_000 and max(paper.eval.factors) == 16
    assert paper.data.corpus.startswith("hf:wikitext")


def test_suites_list_what_they_train():
    cfg = extrapolation.resolve("micro", [])
    jobs, evals = extrapolation.train_jobs(cfg, [0, 1])
    assert len(jobs) == 2 * len(cfg.positions) and all(j.steps == cfg.train.steps for j in jobs)
    assert len(evals) >= len(jobs) * len(cfg.eval.factors)
    tcfg = training.resolve("micro", [])
    jobs, _ = training.train_jobs(tcfg, [0])
    points, _ref = training.grid_points(tcfg)
    assert len(jobs) == len(points)
    assert {j.batch * j.seq_len * j.steps for j in jobs} == {tcfg.train.steps * tcfg.train.batch_size
                                                             * tcfg.train.seq_len}  # equal-token budget


def test_module_command_prices_a_preset(capsys, tmp_path):
    assert _main(["extrapolation", "small", "--seeds", "3", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    small = extrapolation.PRESETS["small"]  # trained positions x 3 seeds x (the LM + one model per probe task)
    models = 3 * len(small.positions) * (1 + (len(small.probe.tasks) if small.passkey else 0))
    assert f"{models} model(s)" in out and "time unknown" in out
    assert _main(["training", "nope"]) == 2
    assert "unknown training preset 'nope'" in capsys.readouterr().err


def test_paper_rung_gpu_hours_from_the_committed_h100_rows(capsys):
    assert _main(["extrapolation", "paper", "--device", "cuda", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    assert "21.1 B training tokens each" in out and "GPU-hours at" in out and "latency rows" in out
