"""``ablate run --suite extrapolation --model hf:PATH``: a pretrained causal LM scored under each RoPE scaling.

A tiny randomly initialised Llama (2 layers, d=32, context 16) and a byte-level BPE tokenizer trained on a few KB of
local text are saved into tmp_path: nothing is downloaded. Tests that need transformers skip without it; the
error a user without it meets is checked without it (transformers hidden)."""

from __future__ import annotations

import builtins
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import cli

L = 16  # the tiny model's context (max_position_embeddings)


def _text() -> str:
    """A few KB of local text to train the tokenizer on: this package's own docs."""
    root = Path(__file__).resolve().parents[2]
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((root / "docs").glob("*.md"))[:3])[:20000]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    tf = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=320, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel
                                             .alphabet(), show_progress=False)
    tok.train_from_iterator([_text()], trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=L)
    model = tf.LlamaForCausalLM(cfg)
    with torch.no_grad():  # large enough weights that the positions move the loss
        for p in model.parameters():
            p.mul_(8.0) if p.dim() > 1 else None
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One tokenised-corpus cache for the module's tests (the corpus is tokenised once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _rows(out: Path) -> list[dict]:
    files = sorted((out / "extrapolation").glob("*-pretrained.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_end_to_end_through_the_cli(tiny_llama, tmp_path, capsys, cache):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu",
                            "--model", f"hf:{tiny_llama}", "--out", out, "--no-progress")
    assert code == 0, err
    rows = _rows(out)
    assert {r["status"] for r in rows} == {"ok"}, [r.get("reason") for r in rows]
    lens = [L, 2 * L, 4 * L]
    assert sorted({r["position"] for r in rows}) == ["rope", "rope_dynamic_ntk", "rope_ntk", "rope_pi", "rope_yarn"]
    assert len(rows) == 5 * len(lens)  # micro: eval.rope_scales=ideal, one row per variant and length
    by = {(r["position"], r["eval_len"]): r for r in rows}
    for r in rows:  # what ran is recorded
        assert r["model"] == f"hf:{tiny_llama}" and r["train_len"] == L and r["dtype"] == "float32"
        assert r["n_params"] == sum(p.numel() for p in _load(tiny_llama).parameters())
        assert len(r["model_hash"]) == 16 and r["model_revision"] is None
        assert r["original_max_position_embeddings"] == L and math.isfinite(r["value"])
        assert r["data.tokenizer"].startswith("json:")
    expect_type = {"rope": "default", "rope_pi": "linear", "rope_ntk": "default", "rope_dynamic_ntk": "dynamic",
                   "rope_yarn": "yarn"}
    for (pos, n), r in by.items():
        assert r["rope_type"] == expect_type[pos]
        s = n / L
        if pos in ("rope_pi", "rope_yarn"):
            assert r["rope_factor"] == s and r["rope_scale"] == s
        if pos == "rope_ntk":
            assert r["rope_theta"] == pytest.approx(10000.0 * s ** (8 / 6))  # head_dim 8: s^(d/(d-2))
        if pos == "rope_yarn":
            assert r["attention_factor"] == pytest.approx(0.1 * math.log(s) + 1 if s > 1 else 1.0)
    # at the trained length every scaling with s = 1 is the checkpoint itself
    for pos in ("rope_pi", "rope_ntk", "rope_yarn", "rope_dynamic_ntk"):
        assert by[(pos, L)]["loss"] == pytest.approx(by[("rope", L)]["loss"], rel=1e-5)
    # past it the scalings change the numbers (a test that cannot pass on a no-op)
    assert by[("rope_pi", 4 * L)]["loss"] != pytest.approx(by[("rope", 4 * L)]["loss"], rel=1e-4)
    assert by[("rope_dynamic_ntk", 4 * L)]["decode"] == "incremental"
    assert "rope_pi" in stdout or "PI" in stdout  # the summary table
    # resumed: nothing runs again
    code, _, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu",
                       "--model", f"hf:{tiny_llama}", "--out", out, "--no-progress")
    assert code == 0 and len(_rows(out)) == len(rows)


def _load(folder):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)


def test_scores_match_a_direct_forward(tiny_llama, tmp_path, cache):
    """The suite's rope row at L equals a plain transformers forward over the same windows (float64 reference)."""
    from ablate.plan.runner import RunOptions
    from ablate.suites.extrapolation import resolve
    from ablate.suites.extrapolation.config import eval_set
    from ablate.plan.suitekit import training_setup
    from ablate.core.evaluate import plan_windows

    sets = (f"pretrained=hf:{tiny_llama}", "rope_scalings=rope_pi", "eval.factors=1")
    opts = RunOptions(suite="extrapolation", preset="micro", device="cpu", out=tmp_path / "o", overrides=sets)
    _, _, cfg, corpus = training_setup(opts, resolve)
    es = eval_set(cfg, corpus)
    model = _load(tiny_llama).double().eval()
    ids = torch.as_tensor(es.stream[: es.tokens + 1].astype("int64"))
    total = 0.0
    with torch.no_grad():
        for w in plan_windows(es.tokens, L):  # the last window moved back: it scores only new targets
            x = ids[w.start:w.start + L + 1]
            logits = model(input_ids=x[None, :-1]).logits[0]
            loss = torch.nn.functional.cross_entropy(logits, x[1:], reduction="none")
            total += float(loss[w.lo:w.hi].sum())
    cli_out = tmp_path / "out"
    from ablate.suites.extrapolation import run

    run(RunOptions(suite="extrapolation", preset="micro", device="cpu", out=cli_out, progress=False, overrides=sets))
    (row,) = [r for r in _rows(cli_out) if r["position"] == "rope"]
    assert row["loss"] == pytest.approx(total / es.tokens, rel=1e-5)


@pytest.mark.parametrize("pos", ["rope_pi", "rope_ntk", "rope_yarn"])
def test_rope_configs_give_the_reference_frequencies(tiny_llama, pos):
    """transformers' rotary module built from each rope configuration has ablate's reference frequencies (PI: /s;
    NTK: base s^(d/(d-2)); YaRN: jquesnelle/yarn's ramp and 0.1 ln s + 1) and attention factor."""
    from ablate.suites.extrapolation.pretrained import checkpoint, set_rope, rope_config
    from ablate.variants.rope_init import rope_ntk_freqs, rope_pi_freqs, rope_yarn_freqs

    ck = checkpoint(f"hf:{tiny_llama}")
    model = _load(tiny_llama)
    ref = {"rope_pi": rope_pi_freqs, "rope_ntk": rope_ntk_freqs, "rope_yarn": rope_yarn_freqs}[pos]
    for s in (2.0, 4.0, 8.0):
        factor = set_rope(model, ck, rope_config(ck, pos, s))
        rot = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]
        assert rot and all(m.inv_freq.shape == (4,) for m in rot)
        want, want_factor = ref(8, 10000.0, s, L, None)
        for m in rot:
            torch.testing.assert_close(m.inv_freq.double(), want, rtol=1e-5, atol=0)
        assert factor == pytest.approx(want_factor)


def test_dynamic_ntk_frequencies_follow_the_length_and_reset(tiny_llama):
    from ablate.suites.extrapolation.pretrained import CausalLM, checkpoint, rope_config, set_rope
    from ablate.variants.rope_init import rope_dynamic_ntk_freqs

    ck = checkpoint(f"hf:{tiny_llama}")
    model = _load(tiny_llama).eval()
    set_rope(model, ck, rope_config(ck, "rope_dynamic_ntk", 4.0))
    lm = CausalLM(model)
    x = torch.randint(0, 300, (1, 4 * L))
    with torch.no_grad():
        plain = lm(x[:, :L])
        cache = lm.new_cache()
        lm(x[:, :L], cache=cache)
        for i in range(L, 4 * L):
            lm(x[:, i:i + 1], cache=cache)
        (rot,) = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]
        torch.testing.assert_close(rot.inv_freq.double(), rope_dynamic_ntk_freqs(8, 10000.0, 1.0, L, 4 * L)[0],
                                   rtol=1e-5, atol=0)
        lm.new_cache()  # the next window starts at the trained frequencies
        torch.testing.assert_close(lm(x[:, :L]), plain)


def test_bad_model_arguments_are_one_line(tiny_llama, tmp_path, capsys, cache):
    out = tmp_path / "out"
    base = ("run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu", "--out", out)
    for argv, words in [(("--model", str(tiny_llama)), "hf:NAME_OR_PATH"),
                        (("--model", f"hf:{tmp_path / 'nothing'}"), "cannot load model"),
                        (("--model", f"hf:{tiny_llama}", "--set", "passkey=true"), "passkey"),
                        (("--model", f"hf:{tiny_llama}", "--set", "train.steps=3"), "train.steps"),
                        (("--model", f"hf:{tiny_llama}", "--seeds", "2"), "--seeds"),
                        (("--model", f"hf:{tiny_llama}", "--set", "rope_scalings=rope_pi_temp"), "valid:")]:
        code, _, err = cli(capsys, *base, *argv)
        assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "run", "--suite", "training", "--model", f"hf:{tiny_llama}", "--out", out)
    assert code == 2 and "extrapolation" in err
    assert not out.exists()


def test_dry_run_estimates_without_running(tiny_llama, tmp_path, capsys, cache):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu",
                            "--model", f"hf:{tiny_llama}", "--out", out, "--dry-run")
    assert code == 0, err
    assert "pretrained@s0" in stdout and "evaluation FLOPs" in stdout and "no training" in stdout
    assert not out.exists()


def test_without_transformers_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    real = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("hidden by the test")
        return real(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_transformers)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu",
                       "--model", "hf:some/model", "--out", out)
    assert code == 2
    assert err.strip() == "ablate: --model hf:... needs transformers: pip install 'ablate-bench[hf]'" or \
        err.strip().endswith("--model hf:... needs transformers: pip install 'ablate-bench[hf]'"), err
    assert not out.exists()
