"""A pretrained causal LM in the extrapolation suite: ``ablate run --suite extrapolation --model hf:NAME_OR_PATH``.

No training: the checkpoint (a transformers causal LM with plain RoPE; a local folder, or a hub name already in the
local Hugging Face cache: nothing is downloaded) is scored with the suite's protocol -- perplexity by length on the
suite's held-out documents, tokenised with the model's own tokenizer -- under every RoPE scaling of
``rope_scalings``, each set through the model's own rope configuration (transformers' ``ROPE_INIT_FUNCTIONS``):

* ``rope``: the checkpoint as it is (``rope_type`` "default").
* ``rope_pi``: ``{"rope_type": "linear", "factor": s}`` (Chen et al. 2023: positions / s).
* ``rope_ntk``: transformers has no static NTK type; it is ``rope_type`` "default" with ``rope_theta`` replaced by
  the NTK-aware base ``theta * s^(d/(d-2))`` (bloc97 2023; Peng et al. 2023, YaRN, sec. 3.1), d = the rotary dim.
* ``rope_dynamic_ntk``: ``{"rope_type": "dynamic", "factor": 1}``, i.e. base ``theta * (n / L)^(d/(d-2))`` at the
  current length n > L (emozilla 2023), scored as it is used: ``L`` tokens in one forward, then
  ``eval.decode_chunk`` tokens a step through transformers' KV cache (which keeps keys rotated at the frequencies of
  the step that computed them, as ``generate`` does).
* ``rope_yarn``: ``{"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L}`` -- transformers'
  ``_compute_yarn_parameters``, which follows the reference code (jquesnelle/yarn: beta_fast 32, beta_slow 1,
  attention factor 0.1 ln s + 1); ``tests/suites/test_extrapolation_pretrained.py`` checks it against
  :func:`ablate.variants.rope_init.rope_yarn_freqs`'s formula.

``L`` (the row's ``train_len``) is the checkpoint's ``max_position_embeddings``; ``s`` follows ``eval.rope_scales``
as for the trained models. Rows record what ran: the model (``model``, ``model_revision``: the hub commit or None,
``model_hash``: sha256 of its config and weight files), ``n_params``, ``dtype`` (bf16 on CUDA, fp32 on CPU) and
the rope configuration (``rope_type``, ``rope_factor``, ``rope_theta``, ``original_max_position_embeddings``,
``attention_factor``). The retrieval probes are byte-level models trained on the probe, so ``passkey=true`` is
refused with ``--model``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.core.evaluate import evaluate
from ablate.core.evalset import unigram_loss
from ablate.errors import ConfigError
from ablate.registry.keys import POSITION
from ablate.store.results import row_key

from .config import decodes_incrementally, eval_set, eval_stride, eval_tokens, resolve as resolve_settings
from .constants import METRIC_PPL, PROTOCOL, ROPE_SCALINGS
from .plan import RowSpec, evaluated_variants, rope_scale_rows

HF = "hf:"
NEEDS = "--model hf:... needs transformers: pip install 'ablate-bench[hf]'"
TASK = "pretrained"  # the one task of a pretrained run (task id pretrained@s0)
# --set keys a pretrained run decides itself (no training): refused rather than ignored
_DECIDED = ("model.", "train.", "finetune.", "lr_sweep.", "positions", "passkey", "probe.", "data.tokenizer")


def transformers():
    """The ``transformers`` module, or the one-line error that names the extra."""
    try:
        import transformers as tf
    except ImportError:
        raise ConfigError(NEEDS) from None
    return tf


def source_of(spec: str) -> str:
    """``NAME_OR_PATH`` of ``hf:NAME_OR_PATH``; anything else is a one-line error."""
    text = str(spec).strip()
    if not text.startswith(HF) or not text[len(HF):].strip():
        raise ConfigError(f"--model takes hf:NAME_OR_PATH (a transformers causal LM: a local folder, or a hub name "
                          f"in the local Hugging Face cache), got {text!r}")
    return text[len(HF):].strip()


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to know of the checkpoint before loading its weights (read from its files)."""

    spec: str  # hf:NAME_OR_PATH as given
    folder: Path  # the files: the local folder, or the snapshot in the hub cache
    revision: str | None  # the hub commit of the snapshot (None for a local folder)
    config: Any  # the transformers config
    train_len: int  # max_position_embeddings: the context it was trained at
    theta: float  # rope_theta
    rotary_dim: int  # head_dim x partial_rotary_factor
    tokenizer: str  # path of the tokenizer.json the corpus is tokenised with
    files_id: str  # sha256[:16] of config.json and the names and sizes of the weight files (the row key's)


def _rope_params(config) -> dict[str, Any]:
    """The checkpoint's rope settings: ``rope_parameters`` (transformers >= 5) or ``rope_scaling`` + ``rope_theta``."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        return dict(params)
    scaling = getattr(config, "rope_scaling", None) or {}
    return {"rope_type": scaling.get("rope_type", scaling.get("type", "default")), **scaling,
            "rope_theta": getattr(config, "rope_theta", 10000.0)}


def _files_id(folder: Path) -> str:
    h = hashlib.sha256((folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b"")
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            h.update(f"\0{f.name}\0{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def checkpoint(spec: str) -> Checkpoint:
    """The checkpoint of ``hf:NAME_OR_PATH``, read from local files only; one-line errors for what cannot run."""
    src = source_of(spec)
    tf = transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no download at run time
    local = Path(src).expanduser()
    try:
        config = tf.AutoConfig.from_pretrained(str(local) if local.is_dir() else src, local_files_only=True)
        if local.is_dir():
            folder, revision = local.resolve(), None
        else:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(src, local_files_only=True))
            revision = folder.name
    except Exception as exc:  # noqa: BLE001  (not there, not a model: one line)
        raise ConfigError(f"cannot load model {spec}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}; "
                          "not in the local cache? fetch it once (huggingface-cli download NAME) or give a folder"
                          ) from None
    rope = _rope_params(config)
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"model {spec} already scales RoPE (rope_type {rope.get('rope_type')!r}, factor "
                          f"{rope.get('factor')}); the suite compares scalings of a checkpoint with plain RoPE")
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    train_len = getattr(config, "max_position_embeddings", None)
    if not head_dim or not train_len:
        raise ConfigError(f"model {spec} ({config.model_type}) has no RoPE settings (head_dim, "
                          "max_position_embeddings); the suite needs a RoPE causal LM (Llama family)")
    rotary_dim = int(head_dim * float(rope.get("partial_rotary_factor", 1.0)))
    return Checkpoint(spec, folder, revision, config, int(train_len), float(rope.get("rope_theta", 10000.0)),
                      rotary_dim, _tokenizer_json(tf, folder, spec), _files_id(folder))


def _tokenizer_json(tf, folder: Path, spec: str) -> str:
    """The model's ``tokenizer.json``; a fast tokenizer stored otherwise is written out once (ablate's cache)."""
    if (folder / "tokenizer.json").is_file():
        return str(folder / "tokenizer.json")
    from ablate.io.tokenize import cache_dir

    try:
        tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        text = tok.backend_tokenizer.to_str()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"model {spec}: no fast tokenizer to score its text with ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:150]})") from None
    out = cache_dir() / "hf-tokenizers" / hashlib.sha256(text.encode()).hexdigest()[:16] / "tokenizer.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    return str(out)


def resolve(preset: str, overrides: tuple[str, ...] | list[str] = ()):
    """The suite's settings (:func:`.config.resolve`) and, with ``pretrained`` set, :func:`resolve_pretrained`."""
    cfg = resolve_settings(preset, overrides)
    if cfg.pretrained:
        cfg = resolve_pretrained(cfg, {str(o).split("=", 1)[0].strip() for o in overrides})
    return cfg


def resolve_pretrained(cfg, keys: set[str]):
    """``cfg`` for the checkpoint of ``cfg.pretrained``: train_len = its ``max_position_embeddings``, the rope model
    only (scored under ``rope_scalings``), its tokenizer, no training, fine-tuning, sweep or probes."""
    set_keys = sorted(k for k in keys if k.startswith(_DECIDED))
    if set_keys:
        raise ConfigError(f"{set_keys[0]} cannot be set with --model hf:...: a pretrained model is scored as it is "
                          "(no training, its own tokenizer and context length); --set eval.* and rope_scalings apply")
    if cfg.passkey:
        raise ConfigError("passkey=true with --model hf:...: the retrieval probes score byte-level models trained on "
                          "the probe; drop passkey")
    ck = checkpoint(cfg.pretrained)
    L = ck.train_len
    scalings = cfg.rope_scalings if "rope_scalings" in keys else ROPE_SCALINGS
    for s in scalings:
        if POSITION.get(s).supports.get("scaling") not in SCALINGS:
            raise ConfigError(f"rope_scalings: {s!r} has no transformers rope configuration here; valid: "
                              + ", ".join(k for k in POSITION.keys() if POSITION.get(k).supports.get("rescales")
                                          and POSITION.get(k).supports.get("scaling") in SCALINGS))
    cfg = replace(cfg, model=replace(cfg.model, position="rope", train_len=L, max_len=L),
                  train=replace(cfg.train, seq_len=L), positions=("rope",), rope_scalings=tuple(scalings),
                  finetune=replace(cfg.finetune, scalings=()), lr_sweep=replace(cfg.lr_sweep, points=0),
                  data=replace(cfg.data, tokenizer=ck.tokenizer))
    if cfg.eval.tokens < max(cfg.eval_lens):
        raise ConfigError(f"eval.tokens={cfg.eval.tokens} is shorter than the longest eval_len={max(cfg.eval_lens)} "
                          f"(the model's context {L} x {max(cfg.eval.factors)}); raise eval.tokens or lower "
                          "eval.factors")
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# RoPE scalings as transformers rope configurations

# the suite's scaling name (POSITION supports["scaling"]) -> how it is realised here
SCALINGS = ("default", "pi", "ntk", "dynamic_ntk", "yarn")


def rope_config(ck: Checkpoint, evaluated: str, scale: float) -> dict[str, Any]:
    """The rope configuration of ``evaluated`` at scale ``s`` (module docstring), ``rope_theta`` included."""
    kind = POSITION.get(evaluated).supports.get("scaling", "default")
    theta, L, d = ck.theta, ck.train_len, ck.rotary_dim
    if kind == "default":
        return {"rope_type": "default", "rope_theta": theta}
    if kind == "pi":
        return {"rope_type": "linear", "factor": float(scale), "rope_theta": theta}
    if kind == "ntk":  # no static NTK type in transformers: the NTK-aware base
        return {"rope_type": "default", "rope_theta": theta * float(scale) ** (d / (d - 2))}
    if kind == "dynamic_ntk":
        return {"rope_type": "dynamic", "factor": 1.0, "rope_theta": theta}
    if kind == "yarn":
        return {"rope_type": "yarn", "factor": float(scale), "original_max_position_embeddings": L,
                "rope_theta": theta}
    raise ConfigError(f"{evaluated}: no transformers rope configuration for scaling {kind!r}; valid: "
                      + ", ".join(SCALINGS))


def config_with_rope(config, params: dict[str, Any]):
    """A copy of the transformers ``config`` with ``params`` as its rope configuration (either API)."""
    new = copy.deepcopy(config)
    extra = {k: v for k, v in _rope_params(config).items() if k == "partial_rotary_factor"}
    if isinstance(getattr(new, "rope_parameters", None), dict):
        new.rope_parameters = {**extra, **params}
    else:
        new.rope_theta = params["rope_theta"]
        rest = {k: v for k, v in params.items() if k != "rope_theta"}
        new.rope_scaling = None if rest.get("rope_type") == "default" else rest
    return new


def set_rope(model: nn.Module, ck: Checkpoint, params: dict[str, Any]) -> float:
    """Rebuild every rotary-embedding module of ``model`` for ``params``; returns their attention factor."""
    new_cfg = config_with_rope(ck.config, params)
    found, factor = 0, 1.0
    for name, mod in list(model.named_modules()):
        if type(mod).__name__.endswith("RotaryEmbedding"):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            device = next((b.device for b in mod.buffers()), torch.device("cpu"))
            fresh = type(mod)(config=new_cfg).to(device)
            setattr(parent, name.rpartition(".")[2], fresh)
            factor, found = float(getattr(fresh, "attention_scaling", 1.0)), found + 1
    if not found:
        raise ConfigError(f"model {ck.spec} has no rotary-embedding module to rescale")
    model.config = new_cfg
    return factor


class CausalLM(nn.Module):
    """A transformers causal LM as :func:`ablate.core.evaluate.evaluate` calls a model: logits of ``x``; with
    ``cache`` (``new_cache()``), the next tokens after those already in it."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        # transformers >= 5.x calls the KV cache `cache`; before, `past_key_values`
        self._cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"

    def forward(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        if cache is None:
            return self.hf(input_ids=x, use_cache=False).logits
        return self.hf(input_ids=x, use_cache=True, **{self._cache_arg: cache}).logits

    def new_cache(self, static_len: int | None = None, batch: int | None = None) -> Any:
        """An empty KV cache; a dynamic rotary module starts again at its trained frequencies."""
        from transformers import DynamicCache

        reset_dynamic(self.hf)
        return DynamicCache()


def load_model(ck: Checkpoint, device: str) -> tuple[nn.Module, torch.dtype]:
    """The checkpoint's weights on ``device``: bf16 on CUDA, fp32 on CPU."""
    tf = transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no download at run time
    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        model = tf.AutoModelForCausalLM.from_pretrained(str(ck.folder), local_files_only=True, dtype=dtype)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = tf.AutoModelForCausalLM.from_pretrained(str(ck.folder), local_files_only=True, torch_dtype=dtype)
    return model.to(device).eval(), dtype


@functools.lru_cache(maxsize=4)
def model_hash(folder: Path) -> str:
    """sha256[:16] of the checkpoint's config.json and weight files (contents)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".pt")):
            h.update(f"\0{f.name}\0".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def pretrained_config_id(cfg, corpus) -> str:
    """The config id of a pretrained run's rows: the model (name, config and weight files), the tokenised data."""
    ck = checkpoint(cfg.pretrained)
    return row_key({"pretrained": cfg.pretrained, "files": ck.files_id, "revision": ck.revision,
                    "corpus": corpus.name, "corpus_hash": corpus.hash, "tokenizer": corpus.tokenizer,
                    "protocol": PROTOCOL})


def eval_forward_flops(ck: Checkpoint, n_params: int, eval_len: int, tokens: int) -> float:
    """Forward FLOPs of ``tokens`` tokens in windows of ``eval_len``: 2 N per token (N without the input embedding)
    plus causal attention, 2 x eval_len x (heads x head_dim) per token and layer (QK^T and PV, half the window)."""
    c = ck.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    n = n_params - c.vocab_size * c.hidden_size
    return 2.0 * n * tokens + 2.0 * eval_len * heads * head_dim * c.num_hidden_layers * tokens


def info_fields(ck: Checkpoint, model: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    return {"model_type": getattr(ck.config, "model_type", None), "model_revision": ck.revision,
            "model_hash": model_hash(ck.folder), "n_params": sum(p.numel() for p in model.parameters()),
            "dtype": str(dtype).replace("torch.", ""), "from_checkpoint": True, "train_steps": 0,
            "finetune_steps": 0}


def rope_fields(params: dict[str, Any], L: int, attention_factor: float) -> dict[str, Any]:
    return {"rope_type": params["rope_type"], "rope_factor": params.get("factor"),
            "rope_theta": params["rope_theta"], "original_max_position_embeddings": L,
            "attention_factor": attention_factor}


def reset_dynamic(model: nn.Module) -> None:
    """Put dynamic rotary modules back at their trained frequencies: transformers resets them only below the trained
    length, so a window prefilled at exactly L would keep the frequencies of the previous, longer one."""
    for mod in model.modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and hasattr(mod, "original_inv_freq") \
                and hasattr(mod, "max_seq_len_cached") and hasattr(mod, "original_max_seq_len"):
            mod.inv_freq = mod.original_inv_freq.clone()
            mod.max_seq_len_cached = mod.original_max_seq_len


# ---------------------------------------------------------------------------------------------------------------
# The plan, the measurement and the dry run's estimate


def pretrained_rows(cfg, preset: str, corpus, device: str) -> list:
    """The rows a pretrained run owes: the checkpoint (``rope``) and each scaling x eval_len x scale."""
    es, stride = eval_set(cfg, corpus), eval_stride(cfg)
    common = {"preset": preset, "config_id": pretrained_config_id(cfg, corpus), "train_len": cfg.model.train_len,
              "model": cfg.pretrained, "data": corpus.name, "device": device, "trained_position": "rope", "seed": 0}
    rows = []
    for ev in evaluated_variants(cfg, "rope"):
        for L in cfg.eval_lens:
            for mode, scale in rope_scale_rows(cfg, "rope", ev, L):
                key = {**common, "position": ev, "rope_scale": scale, "eval_len": L, "metric": METRIC_PPL,
                       "mode": cfg.eval.mode, "stride": stride, "tokens": es.tokens, "eval_set": es.hash,
                       "pos_bins": cfg.eval.pos_bins}
                if mode is not None:
                    key["rope_scale_mode"] = mode
                if decodes_incrementally(ev):
                    key.update(decode="incremental", decode_chunk=cfg.eval.decode_chunk)
                rows.append(RowSpec(key, ev, L, scale))
    return rows


def plan_pretrained(opts, device: str, preset: str, cfg, corpus):
    """The plan of a pretrained run: one task (``pretrained@s0``) owing every row, results in
    ``<out>/extrapolation/<device>-<preset>-pretrained.jsonl`` (apart from the trained models' rows)."""
    from ablate.plan.runner import results_path
    from ablate.plan.suitekit import Plan, SuiteTask, task_id

    if int(opts.seeds) != 1:
        raise ConfigError(f"--seeds {opts.seeds} with --model hf:...: a pretrained model is scored once (no training "
                          "seed); drop --seeds")
    rows = pretrained_rows(cfg, preset, corpus, device)
    task = SuiteTask(task_id(TASK, 0), f"score {cfg.pretrained}", tuple(rows), tuple(r.key for r in rows),
                     run_name=TASK, work=TASK, config=cfg)
    return Plan(device, preset, cfg, results_path(opts, device, f"{preset}-pretrained"), [task], corpus,
                cfg.cpu_threads)


def score(run, task, todo: list) -> int:
    """Load the checkpoint and write the rows of ``todo``: perplexity under each rope configuration."""
    from ablate.store.results import status_from_exception


    cfg, corpus, device = run.cfg, run.plan.corpus, run.device
    ck = checkpoint(cfg.pretrained)
    model, dtype = load_model(ck, device)
    lm, info, L = CausalLM(model), info_fields(ck, model, dtype), ck.train_len
    es, stride = eval_set(cfg, corpus), eval_stride(cfg)
    described = {**corpus.describe(), **es.describe()}
    uni, nbytes = unigram_loss(corpus, es), es.scored_bytes(corpus)
    current, factor, scored = None, 1.0, {}  # scored: a fixed s equal to the ideal one runs once
    for r in todo:
        params = rope_config(ck, r.evaluated, r.scale)
        metrics: dict[str, Any] = {"unit": "ppl", "scale_factor": r.eval_len / L, **info,
                                   **{k: v for k, v in described.items() if k not in r.key}}
        try:
            if params != current:
                factor, current = set_rope(model, ck, params), params
            metrics.update(rope_fields(params, L, factor))
            incremental = decodes_incrementally(r.evaluated)
            with torch.inference_mode():
                same = (r.evaluated, r.scale, r.eval_len)
                res = scored.get(same) or evaluate(
                    lm, es.stream, r.eval_len, tokens=es.tokens, mode=cfg.eval.mode, stride=stride,
                    batch_tokens=cfg.eval.batch_tokens, byte_level=corpus.byte_level, device=device,
                    pos_bins=cfg.eval.pos_bins, decode_chunk=cfg.eval.decode_chunk if incremental else None,
                    prefill=L, units=es.bounds)
                scored[same] = res
            metrics.update(value=res.ppl, loss=res.loss, ppl=res.ppl, eval_bytes=nbytes, windows=res.windows,
                           bpb=res.loss * res.tokens / (nbytes * math.log(2)) if nbytes else None,
                           pos_loss=res.pos_loss, pos_bin=res.pos_bin, eval_s=res.elapsed_s,
                           doc_loss=[round(x, 4) for x in res.unit_loss], unigram_loss=uni,
                           eval_flops=eval_forward_flops(ck, info["n_params"], r.eval_len, res.windows * r.eval_len))
            if not incremental:
                metrics["decode"] = "full"
            else:
                metrics["decode_cache"] = "rotated"  # transformers' cache: keys rotated when computed
            if math.isfinite(res.loss):
                run.rows.write("ok", r.key, metrics, config=task.config)
            else:
                run.rows.write("diverged", r.key, {**metrics, "value": None}, config=task.config,
                               reason="non-finite evaluation loss")
        except Exception as exc:  # noqa: BLE001  (OOM at a long length: that row says so, the others run)
            if status_from_exception(exc)[0] == "oom" and device == "cuda":
                torch.cuda.empty_cache()
            run.rows.write_exception(exc, r.key, {**metrics, "value": None}, config=task.config)
        run.advance(1, f"{r.evaluated} L={r.eval_len}")
    del model, lm
    if device == "cuda":
        torch.cuda.empty_cache()
    return 1


def _measured_rate(where: list[Path], device: str, gpu: str | None) -> tuple[float, str] | None:
    """FLOP/s of earlier pretrained rows (``eval_flops / eval_s``) on this device (and GPU model) under ``where``."""
    from ablate.plan.estimate import ok_rows

    flops = secs = 0.0
    for r in ok_rows([p for p in where if p.is_dir()], "*-pretrained.jsonl"):
        if (r.get("device") == device and r.get("eval_flops") and r.get("eval_s") and r.get("decode") == "full"
                and (device != "cuda" or not gpu or gpu in str(r.get("env.gpu", "")))):  # rows are flat: env.gpu
            flops, secs = flops + float(r["eval_flops"]), secs + float(r["eval_s"])
    return (flops / secs, f"{secs:.0f} s of earlier pretrained rows") if secs > 0 else None


def dry_run_estimate(cfg, opts, device: str) -> list[str] | None:
    """``--dry-run`` with ``--model``: forward FLOPs of every row and, at the rate earlier pretrained rows measured
    on this device, the time (full-window rows; dynamic NTK decodes step by step and is slower per FLOP)."""
    if not getattr(cfg, "pretrained", ""):
        return None
    from ablate.plan.estimate import format_duration
    from ablate.store.env import fingerprint, source_root

    ck = checkpoint(cfg.pretrained)
    tf = transformers()
    with torch.device("meta"):
        n = sum(p.numel() for p in tf.AutoModelForCausalLM.from_config(ck.config).parameters())
    tokens, stride = eval_tokens(cfg), eval_stride(cfg)
    flops, rows, steps = 0.0, 0, 0
    for ev in evaluated_variants(cfg, "rope"):
        for L in cfg.eval_lens:
            fwd = tokens if stride is None else -(-tokens // min(stride, L)) * L
            for _scale in sorted({sc for _m, sc in rope_scale_rows(cfg, "rope", ev, L)}):
                flops, rows = flops + eval_forward_flops(ck, n, L, fwd), rows + 1
                if decodes_incrementally(ev) and L > ck.train_len:
                    steps += -(-fwd // L) * -(-(L - ck.train_len) // cfg.eval.decode_chunk)
    lines = [f"estimate: no training; {rows} evaluation(s) of {cfg.pretrained} ({n / 1e9:.3g} B parameters, "
             f"context {ck.train_len}), {flops:.3g} evaluation FLOPs (forward)"
             + (f", of which dynamic NTK decodes {steps} step(s) of {cfg.eval.decode_chunk} token(s)" if steps else "")]
    fp = fingerprint()
    where = [p for p in ((source_root() or Path(".")) / "results", Path(opts.out)) if p.exists()]
    rate = _measured_rate(where, device, fp.get("gpu"))
    if rate is None:
        lines.append(f"estimate: no measured pretrained throughput for this {device} under results/ or --out -- "
                     "time unknown (run once; its rows give the rate)")
    else:
        lines.append(f"estimate: {format_duration(flops / rate[0])} at {rate[0] / 1e12:.3g} TFLOP/s ({rate[1]})")
    return lines
