"""The suite's settings: eval / probe settings, ``ExtrapolationConfig``, the presets, ``resolve`` (``--set``
overrides checked) and what a configuration implies (tokens scored, stride, the config id of its trained weights)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ablate.core.config import (ModelConfig, apply_overrides, check_max_len, check_model_keys, flatten,
                                model_preset,
                                unified_train_len)
from ablate.io.data import DataSettings, data_fields
from ablate.errors import ConfigError
from ablate.core.evalset import EvalSet, draw
from ablate.core.lr_sweep import SweepSettings
from ablate.core.evaluate import MODES, PROBES, Probe
from ablate.registry.keys import POSITION
from ablate.core.ranges import ge
from ablate.variants.attention.blockwise import bca_refusal
from ablate.variants.attention.streaming import MODES as STREAM_MODES
from ablate.store.results import row_key
from ablate.core.train import TrainConfig

from .constants import POSITIONS, PROTOCOL, ROPE_SCALINGS


@dataclass(frozen=True)
class EvalSettings:
    mode: str = "nonoverlap"  # "nonoverlap" (ALiBi Fig. 1) or "sliding"
    stride: int | None = None  # sliding stride in tokens; None = train_len
    factors: tuple[int, ...] = (1, 2, 4, 8, 16)  # eval_len = train_len x factor
    tokens: int = 32768  # at least this many targets scored at every eval_len: whole held-out documents (evalset)
    doc_seed: int = 0  # which held-out documents are drawn (ablate.core.evalset.draw)
    max_doc_tokens: int | None = None  # cap per document; None: 4 x the longest eval_len, doubled until they fit
    batch_tokens: int = 16384  # tokens per evaluation forward
    pos_bins: int = 64  # in-window position bins of the per-position loss
    decode_chunk: int = 1  # length-dependent positions (dynamic NTK): tokens per decoding step past train_len
    # RoPE scale s of the static scalings: "ideal" (s = eval_len / train_len at each length) and/or fixed numbers
    # (one s at every length, as a deployed model: past s x train_len it extrapolates); every entry is scored
    rope_scales: tuple[str, ...] = ("ideal",)
    # blockwise causal attention (xPos's BCA, Sun et al. 2022; ablate.variants.attention.blockwise) with this block
    # size in every perplexity row: past it a query attends its own block of bca_block/2 tokens and the previous one.
    # None: off. The paper: train_len. Even, in 2..train_len, below the longest eval_len (check_bca)
    bca_block: int | None = field(default=None, metadata={"range": ge(2)})


@dataclass(frozen=True)
class PasskeySettings:
    tasks: tuple[str, ...] = PROBES  # passkey (classic) and multikey (RULER-style MK-NIAH)
    keys: int = 4  # multikey: labelled needles per sequence, one queried (a random needle's value: 1/keys)
    digits: int = 2  # answer digits (chance = 10^-digits)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 50  # sequences per (eval_len, depth)
    steps: int | None = None  # training steps of the passkey models; None = train.steps
    answer_weight: float = 1.0  # extra weight of the answer digits in the passkey models' training loss


@dataclass(frozen=True)
class FinetuneSettings:
    """The RoPE-scaling fine-tuning stage (Chen et al. 2023: ~1,000 steps; Peng et al. 2023: ~400): the trained
    ``rope`` model continues ``steps`` steps at ``scale x train_len`` with each scaling at fixed ``scale``, then is
    scored at every eval_len (suites/extrapolation/finetune.py)."""

    scalings: tuple[str, ...] = ()  # RoPE scalings to fine-tune with (empty: no fine-tuning stage)
    scale: float = 4.0  # s: fine-tuned at s x train_len, scored at fixed s
    steps: int = 50  # fine-tuning steps; tokens per step as in pre-training (batch_size / s sequences)
    lr: float | None = None  # constant after a 5% warm-up; None: train.min_lr (the end of pre-training's schedule)


@dataclass(frozen=True)
class StreamSettings:
    """StreamingLLM's evaluation (Xiao et al. 2023, Table 1; suites/extrapolation/stream.py): each trained LM fed
    ``sequences`` held-out streams of ``factor x train_len`` tokens one token at a time with at most ``budget`` keys
    per query, in each of ``modes`` (:data:`ablate.variants.attention.streaming.MODES`); the tokens past the first
    ``budget`` are scored (before them no mode evicts anything). Off unless ``modes`` is set."""

    modes: tuple[str, ...] = ()  # dense, window, sinks, recompute
    factors: tuple[int, ...] = (4, 8)  # stream lengths = train_len x factor (two: memory flat with length)
    budget: int | None = None  # keys per query (the cache budget); None: train_len
    sinks: int = 4  # initial tokens the sinks mode keeps (StreamingLLM: 4)
    sequences: int = 4  # streams per row


@dataclass(frozen=True)
class ExtrapolationConfig:
    model: ModelConfig
    train: TrainConfig
    eval: EvalSettings = field(default_factory=EvalSettings)
    data: DataSettings = field(default_factory=DataSettings)
    positions: tuple[str, ...] = POSITIONS  # trained variants
    rope_scalings: tuple[str, ...] = ROPE_SCALINGS  # applied to the `rope` model at evaluation
    passkey: bool = False  # also train/score passkey-retrieval models (one per trained variant)
    probe: PasskeySettings = field(default_factory=PasskeySettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    lr_sweep: SweepSettings = field(default_factory=SweepSettings)  # a learning rate per variant (ablate.core.lr_sweep)
    stream: StreamSettings = field(default_factory=StreamSettings)  # StreamingLLM's streaming evaluation (off)
    cpu_threads: int = 0  # CPU: torch threads (0 = torch's default); 1 is robust on a machine shared with others
    pretrained: str = ""  # hf:NAME_OR_PATH (--model): score this checkpoint instead of training (pretrained.py)

    @property
    def eval_lens(self) -> list[int]:
        return [self.model.train_len * f for f in self.eval.factors]


FINETUNED = ("rope_pi", "rope_ntk", "rope_yarn")  # the scalings the presets fine-tune (the methods of YaRN Table 1)

PRESETS: dict[str, ExtrapolationConfig] = {
    # Tests: seconds on a CPU.
    "micro": ExtrapolationConfig(
        model=replace(model_preset("micro"), max_len=16, scale_embeddings=True),
        train=TrainConfig(steps=30, batch_size=8, seq_len=16, lr=3e-3, min_lr=3e-4, warmup=5, log_every=10,
                          amp=None),
        eval=EvalSettings(factors=(1, 2, 4), tokens=512, batch_tokens=4096, pos_bins=16),
        probe=PasskeySettings(keys=2, digits=2, depths=(0.0, 1.0), trials=8),
    ),
    # CPU default: the whole suite in <= 5 minutes on 2 cores of the slower machines (<= ~1:40 on a fast one; see
    # docs/extrapolation.md for the measured runs): d=64 (0.11 M parameters, 7 tokens per parameter), 4 heads of 16,
    # the five variants of the ALiBi paper's comparison plus NoPE (`learned` is scored at train_len only: small has it)
    "tiny": ExtrapolationConfig(
        model=replace(model_preset("tiny-narrow"), max_len=64, scale_embeddings=True),
        train=TrainConfig(steps=400, batch_size=32, seq_len=64, lr=3e-3, min_lr=3e-4, warmup=40, log_every=50,
                          amp=None),
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=16384, batch_tokens=16384, pos_bins=64,
                          rope_scales=("ideal", "4"), decode_chunk=8),
        positions=("none", "sinusoidal", "rope", "alibi", "t5_bias"),
        # RoPE-scaling fine-tuning at 4 x train_len: 10% of the pre-training steps (docs/extrapolation.md)
        finetune=FinetuneSettings(scalings=FINETUNED, scale=4.0, steps=40),
    ),
    # CPU, <= 60 minutes on 2 cores with --seeds 3 (docs/presets.md: the arithmetic and the measured run).
    "small": ExtrapolationConfig(
        model=replace(model_preset("small"), max_len=128, scale_embeddings=True),
        train=TrainConfig(steps=600, batch_size=32, seq_len=128, lr=3e-3, min_lr=3e-4, warmup=60, log_every=50,
                          amp=None),
        # fixed s: the fine-tuned window (4); dynamic NTK decodes 8 tokens a step (token by token, --set
        # eval.decode_chunk=1, moves its perplexity by <= 0.8% on a trained small model and costs ~20 CPU-minutes)
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=131072, batch_tokens=32768, pos_bins=64,
                          rope_scales=("ideal", "4"), decode_chunk=8),
        # `learned` is scored at train_len only (no positions past its table), so no claim rests on it: left out,
        # as at tiny (--set positions=none,sinusoidal,learned,rope,alibi,t5_bias brings it back, +20% time)
        positions=("none", "sinusoidal", "rope", "alibi", "t5_bias"),
        data=DataSettings(corpus="stdlib"),
        finetune=FinetuneSettings(scalings=FINETUNED, scale=4.0, steps=60),  # 10% of the pre-training steps
        # retrieval probes: one passkey model per variant and seed, a sixth of the LM's steps (docs/extrapolation.md:
        # at train_len 128 no variant learns a probe within 600 steps, and none learned multikey at tiny under any
        # training mix tried, so small runs passkey only and the report says what was learned; multikey:
        # --set probe.tasks=passkey,multikey, +25% time)
        passkey=True, probe=PasskeySettings(tasks=("passkey",), trials=10, steps=100),
        # a learning rate per variant: 1.5e-3 / 3e-3 / 6e-3, a fifth of the steps each, on 32k tune tokens
        lr_sweep=SweepSettings(points=3, spacing=2.0, fraction=0.2, tokens=32768),
    ),
    # CUDA default: <= 15 minutes on one H100 (bf16 autocast, SDPA picks its fastest kernel that takes the bias).
    "gpu": ExtrapolationConfig(
        model=replace(model_preset("gpu"), max_len=256, scale_embeddings=True),
        train=TrainConfig(steps=2000, batch_size=64, seq_len=256, lr=1e-3, min_lr=1e-4, warmup=100, log_every=100,
                          amp="bf16"),
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=131072, batch_tokens=65536, pos_bins=64,
                          rope_scales=("ideal", "2", "4", "16")),
        data=DataSettings(corpus="stdlib"),
        probe=PasskeySettings(digits=4, trials=100),
        finetune=FinetuneSettings(scalings=FINETUNED, scale=4.0, steps=200),  # 10% of the pre-training steps
    ),
    # The ALiBi paper's WikiText-103 runs (Press et al. 2022; fairseq `transformer_lm_wiki103`, --max-update 286000,
    # --max-tokens 9216 on 8 GPUs = 144 x 512 tokens a step, warm-up 16000, clip 0.1, L=512), evaluated to 16x.
    # Deviations, all documented in docs/presets.md: AdamW + cosine instead of NAG, a 32k byte-level BPE instead of
    # the 267k word vocabulary with adaptive input/softmax, bf16. Needs wikitext-103-raw-v1 in the local HF cache.
    "paper": ExtrapolationConfig(
        model=model_preset("paper"),
        train=TrainConfig(steps=286_000, batch_size=144, seq_len=512, lr=6e-4, min_lr=6e-5, warmup=16_000,
                          grad_clip=0.1, log_every=500, amp="bf16"),
        eval=EvalSettings(factors=(1, 2, 4, 8, 16), tokens=245_760, batch_tokens=65536, pos_bins=64),
        data=DataSettings(corpus="hf:wikitext:wikitext-103-raw-v1", tokenizer="bpe:32768"),
        probe=PasskeySettings(digits=4, trials=100),
    ),
}


def resolve(preset: str, overrides: tuple[str, ...] | list[str] = ()) -> ExtrapolationConfig:
    """The preset with ``--set`` overrides applied and checked (one-line ConfigError / UnknownKeyError)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown extrapolation preset {preset!r}; valid: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    cfg = apply_overrides(base, list(overrides))
    keys_set = {str(o).split("=", 1)[0].strip() for o in overrides}
    cfg = _honour_model_slots(base, cfg, keys_set)
    # train.seq_len and model.train_len are one setting: follow whichever the user changed.
    m, t = cfg.model, cfg.train
    train_len = unified_train_len(base.model.train_len, base.train.seq_len, m.train_len, t.seq_len, keys_set)
    # The learned table covers train_len positions (as in the papers) unless model.max_len is set explicitly: then
    # it is kept as given, and refused below train_len (the learned variant would train past its table).
    check_max_len(m.max_len, train_len, keys_set)
    max_len = m.max_len if "model.max_len" in keys_set else train_len
    cfg = replace(cfg, model=replace(m, train_len=train_len, max_len=max_len), train=replace(t, seq_len=train_len))
    e = cfg.eval
    if e.mode not in MODES:
        raise ConfigError(f"unknown eval.mode {e.mode!r}; valid: {', '.join(MODES)}")
    if not e.factors or any(f < 1 for f in e.factors):
        raise ConfigError(f"eval.factors must be integers >= 1, got {e.factors}")
    if len(set(e.factors)) != len(e.factors):  # each factor is a row: a repeat would be one row written twice
        raise ConfigError(f"eval.factors repeats a value: {','.join(map(str, e.factors))}; give each factor once")
    cfg.lr_sweep.check()
    off = sorted(k for k in keys_set if k.startswith("lr_sweep.") and k != "lr_sweep.points")
    if off and not cfg.lr_sweep.enabled:
        raise ConfigError(f"{off[0]} applies to a learning-rate sweep; turn one on with lr_sweep.points=N (N >= 2 "
                          "candidates)")
    if cfg.lr_sweep.enabled and "train.lr" in keys_set:
        raise ConfigError("train.lr is chosen per variant by the learning-rate sweep; set lr_sweep.points=0 to fix "
                          "it yourself")
    if e.tokens < max(cfg.eval_lens):
        raise ConfigError(f"eval.tokens={e.tokens} is shorter than the longest eval_len={max(cfg.eval_lens)}; raise "
                          "eval.tokens or lower eval.factors")
    if e.max_doc_tokens is not None and e.max_doc_tokens < 2:
        raise ConfigError(f"eval.max_doc_tokens must be >= 2 (or unset), got {e.max_doc_tokens}")
    if e.stride is not None and e.stride < 1:
        raise ConfigError(f"eval.stride must be >= 1, got {e.stride}")
    if e.stride is not None and e.mode != "sliding":
        raise ConfigError(f"eval.stride applies to sliding-window evaluation only; add --set eval.mode=sliding "
                          f"(eval.mode is {e.mode!r})")
    check_stream(cfg, keys_set)
    if cfg.cpu_threads < 0:
        raise ConfigError(f"cpu_threads must be >= 0 (0 = torch's default), got {cfg.cpu_threads}")
    if not cfg.positions:
        raise ConfigError("positions is empty; valid: " + ", ".join(POSITION.keys()))
    for p in cfg.positions:
        POSITION.get(p)  # UnknownKeyError lists the valid keys
    if "rope_scalings" not in keys_set:  # the preset's scalings apply to the trained models they rescale
        cfg = replace(cfg, rope_scalings=tuple(s for s in cfg.rope_scalings if s in POSITION and
                                               POSITION.get(s).supports.get("rescales") in cfg.positions))
    for s in cfg.rope_scalings:
        entry = POSITION.get(s)
        if entry.supports.get("rescales") and entry.supports["rescales"] not in cfg.positions:
            raise ConfigError(f"rope_scalings: {s!r} rescales the {entry.supports['rescales']!r} model, which "
                              f"positions does not train; add it to positions or drop the scaling "
                              f"(--set rope_scalings=)")
        if not entry.supports.get("rescales"):
            valid = [k for k in POSITION.keys() if POSITION[k].supports.get("rescales")]
            raise ConfigError(f"rope_scalings: {s!r} is not a RoPE scaling; valid: {', '.join(valid)}")
    if e.decode_chunk < 1:
        raise ConfigError(f"eval.decode_chunk must be >= 1, got {e.decode_chunk}")
    rope_scale_specs(cfg)  # refuses a bad eval.rope_scales
    check_bca(cfg)
    cfg = _resolve_finetune(cfg, keys_set)
    probe_keys = sorted(k for k in keys_set if k.startswith("probe."))
    if probe_keys and not cfg.passkey:
        raise ConfigError(f"{probe_keys[0]} applies to the retrieval probes, which are off; add --set passkey=true")
    if cfg.passkey:
        pr = cfg.probe
        if not pr.tasks:
            raise ConfigError(f"probe.tasks is empty; valid: {', '.join(PROBES)}")
        for task in pr.tasks:
            if task not in PROBES:
                raise ConfigError(f"unknown probe task {task!r}; valid: {', '.join(PROBES)}")
        if pr.digits < 1 or pr.trials < 1 or not 1 <= pr.keys <= 26:
            raise ConfigError(f"probe.digits and probe.trials must be >= 1 and probe.keys in 1..26 "
                              f"(got {pr.digits}, {pr.trials}, {pr.keys})")
        for task in pr.tasks:
            probe = probe_of(cfg, task)
            if cfg.model.train_len < probe.overhead - 1:
                raise ConfigError(f"the {task} probe with {pr.digits} digits"
                                  f"{f' and {pr.keys} keys' if task == 'multikey' else ''} needs train_len >= "
                                  f"{probe.overhead - 1}, got {cfg.model.train_len}")
        if any(not 0.0 <= d <= 1.0 for d in pr.depths):
            raise ConfigError(f"probe.depths must lie in [0, 1], got {pr.depths}")
    return cfg  # with pretrained set, pretrained.resolve goes on (the checkpoint's context, tokenizer, scalings)


def _honour_model_slots(base: ExtrapolationConfig, cfg: ExtrapolationConfig, keys: set[str]) -> ExtrapolationConfig:
    """``--set model.position=X`` restricts the sweep to X (a ``rope_*`` scaling: the rope model evaluated with
    it); model settings the suite decides per job are refused rather than ignored."""
    if "model.position" in keys:
        if keys & {"positions", "rope_scalings"}:
            raise ConfigError("model.position (one variant) and positions / rope_scalings (a sweep) both choose what "
                              "is trained; set one of them")
        pos = cfg.model.position
        entry = POSITION.get(pos)  # UnknownKeyError lists the valid keys
        if entry.supports.get("rescales"):  # an inference-time scaling: the model it rescales, scored with it
            cfg = replace(cfg, positions=(entry.supports["rescales"],), rope_scalings=(pos,))
        else:
            cfg = replace(cfg, positions=(pos,), rope_scalings=())
    decided = {"model.rope_scale": "the suite sets the RoPE scale of every rope_* row (eval.rope_scales: ideal = "
                                   "eval_len / train_len, or fixed numbers; finetune.scale for fine-tuned rows)",
               "train.eval_every": "the suite evaluates each model once, after training",
               "model.vocab_size": "the vocabulary comes from the data (data.vocab_size for a .bin file)"}
    for k, why in decided.items():
        if k in keys:
            raise ConfigError(f"{k} cannot be set for the extrapolation suite: {why}")
    if not cfg.model.causal:
        raise ConfigError("model.causal=false: a language model that sees the tokens it predicts scores a leaked "
                          "perplexity; the extrapolation suite trains causal models only")
    check_model_keys(replace(cfg.model, position=cfg.positions[0] if cfg.positions else "rope"))  # positions: below
    return cfg


def rope_scale_specs(cfg: ExtrapolationConfig) -> list[tuple[str, float | None]]:
    """``eval.rope_scales`` parsed: ``("ideal", None)`` (s = eval_len / train_len) or ``("fixed", s)``, in order."""
    out: list[tuple[str, float | None]] = []
    for v in cfg.eval.rope_scales:
        v = str(v).strip()
        if v == "ideal":
            spec: tuple[str, float | None] = ("ideal", None)
        else:
            try:
                s = float(v)
            except ValueError:
                s = float("nan")
            if not s >= 1.0 or s == float("inf"):
                raise ConfigError(f"eval.rope_scales: {v!r} is neither 'ideal' nor a number >= 1 (e.g. "
                                  "eval.rope_scales=ideal,2,4,16)")
            spec = ("fixed", s)
        if spec in out:
            raise ConfigError(f"eval.rope_scales lists {v!r} twice")
        out.append(spec)
    if not out:
        raise ConfigError("eval.rope_scales is empty; valid: ideal and/or numbers >= 1 (e.g. ideal,2,4,16)")
    return out


def _resolve_finetune(cfg: ExtrapolationConfig, keys: set[str]) -> ExtrapolationConfig:
    """The fine-tuning stage checked: the preset's scalings follow ``rope_scalings`` (a scaling not scored is not
    fine-tuned either) unless ``finetune.scalings`` is set; a ``finetune.*`` setting without a stage is refused."""
    ft = cfg.finetune
    if "finetune.scalings" not in keys:
        ft = replace(ft, scalings=tuple(s for s in ft.scalings if s in cfg.rope_scalings))
    set_keys = sorted(k for k in keys if k.startswith("finetune.") and k != "finetune.scalings")
    if set_keys and not ft.scalings:
        raise ConfigError(f"{set_keys[0]} applies to the fine-tuning stage, which is off; add --set "
                          "finetune.scalings=rope_pi,rope_ntk,rope_yarn")
    for s in ft.scalings:
        entry = POSITION.get(s)  # UnknownKeyError lists the valid keys
        rescales = entry.supports.get("rescales")
        if not rescales or entry.supports_("needs_raw_cache"):
            valid = [k for k in POSITION.keys() if POSITION[k].supports.get("rescales")
                     and not POSITION[k].supports_("needs_raw_cache")]
            raise ConfigError(f"finetune.scalings: {s!r} is not a static RoPE scaling; valid: {', '.join(valid)}")
        if rescales not in cfg.positions:
            raise ConfigError(f"finetune.scalings: {s!r} fine-tunes the {rescales!r} model, which positions does not "
                              "train; add it to positions or drop the scaling (--set finetune.scalings=)")
    if len(set(ft.scalings)) != len(ft.scalings):
        raise ConfigError(f"finetune.scalings lists a scaling twice: {', '.join(ft.scalings)}")
    if ft.scalings:
        if not ft.scale > 1.0 or ft.scale == float("inf"):
            raise ConfigError(f"finetune.scale must be > 1, got {ft.scale}")
        if ft.steps < 1:
            raise ConfigError(f"finetune.steps must be >= 1, got {ft.steps}")
        if ft.lr is not None and not ft.lr > 0:
            raise ConfigError(f"finetune.lr must be > 0 (or unset: train.min_lr), got {ft.lr}")
    return replace(cfg, finetune=ft)


def probe_of(cfg: ExtrapolationConfig, task: str) -> Probe:
    """The :class:`ablate.core.evaluate.Probe` a probe task runs with these settings."""
    return Probe(task, cfg.probe.digits, cfg.probe.keys)


def eval_tokens(cfg: ExtrapolationConfig) -> int:
    """Targets asked for at every length (``eval.tokens``; the drawn documents hold at least that many)."""
    longest = max(cfg.eval_lens)
    if cfg.eval.tokens < longest:
        raise ConfigError(f"eval.tokens={cfg.eval.tokens} is shorter than the longest eval_len={longest}")
    return int(cfg.eval.tokens)


_EVAL_SETS: dict[tuple, EvalSet] = {}


def eval_set(cfg: ExtrapolationConfig, corpus: Any) -> EvalSet:
    """The held-out documents every length scores (:func:`ablate.core.evalset.draw`, test role), cached per process."""
    e = cfg.eval
    key = (getattr(corpus, "hash", None), id(corpus.val), len(corpus.val), eval_tokens(cfg), e.doc_seed,
           e.max_doc_tokens, max(cfg.eval_lens))
    if key not in _EVAL_SETS:
        _EVAL_SETS[key] = draw(corpus, eval_tokens(cfg), max_doc_tokens=e.max_doc_tokens,
                               min_doc_tokens=4 * max(cfg.eval_lens), seed=e.doc_seed, role="test",
                               reserve=cfg.lr_sweep.tokens if cfg.lr_sweep.enabled else 0)
    return _EVAL_SETS[key]


def eval_stride(cfg: ExtrapolationConfig) -> int | None:
    return (cfg.eval.stride or cfg.model.train_len) if cfg.eval.mode == "sliding" else None


def stream_budget(cfg: ExtrapolationConfig) -> int:
    """Keys per query of the streaming evaluation (``stream.budget``, default train_len)."""
    return cfg.stream.budget or cfg.model.train_len


def check_stream(cfg: ExtrapolationConfig, keys: set[str] = frozenset()) -> None:
    """The streaming settings, one line each (ConfigError); a ``stream.*`` setting among ``keys`` (those the user
    set) while ``stream.modes`` is empty is refused: it would change nothing that runs."""
    st = cfg.stream
    off = sorted(k for k in keys if k.startswith("stream.") and k != "stream.modes")
    if off and not st.modes:
        raise ConfigError(f"{off[0]} applies to the streaming evaluation, which is off; add --set "
                          f"stream.modes={','.join(STREAM_MODES)}")
    bad = [m for m in st.modes if m not in STREAM_MODES]
    if bad:
        raise ConfigError(f"unknown stream.modes {bad[0]!r}; valid: {', '.join(STREAM_MODES)}")
    if len(set(st.modes)) != len(st.modes) or len(set(st.factors)) != len(st.factors):
        raise ConfigError("stream.modes and stream.factors name each value once")
    if not st.factors or any(f < 1 for f in st.factors):
        raise ConfigError(f"stream.factors must be integers >= 1, got {st.factors}")
    budget = stream_budget(cfg)
    if budget < 2 or not 1 <= st.sinks < budget:
        raise ConfigError(f"stream.budget must be >= 2 and stream.sinks in 1..budget-1, got budget={budget}, "
                          f"sinks={st.sinks}")
    if st.sequences < 1:
        raise ConfigError(f"stream.sequences must be >= 1, got {st.sequences}")
    if st.modes and min(st.factors) * cfg.model.train_len <= budget:
        raise ConfigError(f"stream.factors x train_len must exceed stream.budget={budget} (nothing would be evicted)")


def check_bca(cfg: ExtrapolationConfig) -> None:
    """``eval.bca_block``, one line each (ConfigError): an even block of at most train_len tokens, below the longest
    eval_len (else it changes nothing), on models and variants that can attend a cached block."""
    b, train_len = cfg.eval.bca_block, cfg.model.train_len
    if b is None:
        return
    if cfg.pretrained:
        raise ConfigError("eval.bca_block applies to the models the suite trains, not to a pretrained checkpoint")
    if b % 2:
        raise ConfigError(f"eval.bca_block must be even (blocks of bca_block/2 tokens), got {b}")
    if b > train_len:
        raise ConfigError(f"eval.bca_block={b} exceeds train_len={train_len}: queries would attend keys farther than "
                          f"training showed; the paper's block is the training length (eval.bca_block={train_len})")
    if max(cfg.eval_lens) <= b:
        raise ConfigError(f"eval.bca_block={b}: no eval_len exceeds it (longest {max(cfg.eval_lens)}), so blockwise "
                          "attention would change nothing; add eval.factors above 1")
    for v in list(cfg.positions) + list(cfg.rope_scalings):
        if decodes_incrementally(v):
            rest = ",".join(s for s in cfg.rope_scalings if not decodes_incrementally(s))
            raise ConfigError(f"eval.bca_block cannot apply to {v!r}: it re-rotates every cached key at each length "
                              f"(scored decoding token by token); drop it: --set rope_scalings={rest}")
        why = bca_refusal(replace(cfg.model, position=v), b)
        if why:
            raise ConfigError(f"eval.bca_block: {why}")


def config_id(cfg: ExtrapolationConfig, corpus: Any, kind: str = "lm") -> str:
    """Hash of everything that shapes the trained weights (model without its position slot, training, data and the
    corpus's identity; a probe's settings for probe models), so switching the probes on or off never retrains the
    LMs. ``corpus``: a :class:`ablate.io.corpus.Corpus` (or its name)."""
    model = flatten(cfg.model)
    model.pop("position", None)
    tr = flatten(cfg.train)
    tr.pop("seed", None)  # a key field of its own
    name = getattr(corpus, "name", corpus)
    if cfg.lr_sweep.enabled and kind == "lm":  # the rate is the sweep's choice: its settings shape the weights
        tr["lr_sweep"] = flatten(cfg.lr_sweep)
    fields: dict[str, Any] = {"model": model, "train": tr, "data": data_fields(cfg.data, corpus), "corpus": name,
                              "protocol": PROTOCOL}
    if getattr(corpus, "hash", None):
        fields["corpus_hash"] = corpus.hash
    if kind != "lm":  # probe models train on synthetic sequences
        probe = flatten(cfg.probe)
        probe.pop("tasks", None)
        if kind == "passkey":
            probe.pop("keys", None)
        fields = {k: v for k, v in fields.items() if k not in ("data", "corpus", "corpus_hash")}
        fields.update(kind=kind, probe=probe)
    return row_key(fields)


def decodes_incrementally(position: str) -> bool:
    """Positions whose rotation depends on the current length (dynamic NTK) are scored as they are used: decoding
    through the KV cache past train_len (a full-window forward would make them static)."""
    return POSITION.get(position).supports_("needs_raw_cache")

