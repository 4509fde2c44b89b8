"""Length extrapolation: train short, test long (Press et al. 2022, Fig. 1; RoPE-scaling papers).

    ablate run --suite extrapolation                       # tiny preset on CPU (<= 5 min on 2 cores), gpu on CUDA
    ablate run --suite extrapolation --preset micro --set eval.mode=sliding --set eval.stride=8 --seeds 3
    ablate run --suite extrapolation --set passkey=true    # add the passkey-retrieval probe

For each trained position variant (``positions``) and seed: train one small causal LM at ``train_len`` (same seed,
data order, steps and size for all), then evaluate it on the same held-out tokens at ``eval_len = train_len x
factor``. The ``rope`` model is also evaluated with every inference-time scaling in ``rope_scalings`` (scale =
eval_len / train_len, no retraining). ``learned`` has a table of ``train_len`` rows (as in the papers), so past it
the suite writes an ``unsupported`` row "no positions past max_len" instead of a number.

With ``--set stream.modes=dense,window,sinks,recompute`` each trained LM is also streamed token by token far past
``train_len`` with a fixed cache budget in StreamingLLM's modes (``stream``: rows ``metric="stream_ppl"`` with
``stream_mode``, ``budget``, measured ``cache_bytes``; ``streaming_report``: its table and claims, computed from those rows).

Rows (one per trained variant x evaluated variant x seed x eval_len; ``metric="ppl"``): ``value`` = perplexity,
``loss`` (nats/token), ``bpb`` (bits per byte, byte-level data), the protocol (``mode``, ``stride``, ``tokens``)
and ``pos_loss``: the mean loss per in-window position bin (a list; bin ``b`` covers positions ``b*pos_bin ..
(b+1)*pos_bin - 1``). Passkey rows (``metric="passkey_acc"``) add ``depth``. Trained weights are kept in
``<out>/extrapolation.ckpt/`` so that a resumed run never retrains a finished variant.

Modules: ``constants`` (names both sides share), ``config`` (settings, presets, ``resolve``), ``plan`` (jobs and the
rows they owe, checks before any compute), ``measure`` (train or load a model, score its rows: perplexity, passkey,
multikey), ``pretrained`` (``--model hf:NAME_OR_PATH``: a transformers checkpoint scored under each RoPE scaling
instead of trained; its ``resolve`` is the package's) and ``suite`` (``tasks``, ``run``); the report side, without
torch: ``summary`` (frames both the report and the terminal print read), ``claims`` (weak baselines, notes,
published claims), ``tables``, ``figures``, ``console`` (the summary ``ablate run`` prints) and ``reporting``
(``report``). The names below are reachable as
``ablate.suites.extrapolation.<name>``; a side's modules are imported on first use of one of its names, so ``ablate
report`` never imports torch through this package.
"""

from __future__ import annotations

from ablate.plan.suitekit import lazy_package

from .constants import (FAIR_TOL, METRIC_PASSKEY, METRIC_PPL, POSITIONS, PROBE_TASKS, PROBE_TITLES,  # noqa: F401
                        PROTOCOL, PROTOCOL_COLS, ROPE_SCALINGS, SUITE, SWEEPS)

# The measurement side (torch, imported together) and the report side (no torch), and the names each module gives
# the package.
_MEASURE = ("config", "finetune", "stream", "plan", "measure", "pretrained", "suite")
_REPORT = ("labels", "summary", "claims", "streaming_report", "tables", "figures", "console", "reporting")
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("EvalSettings", "PasskeySettings", "ExtrapolationConfig", "DataSettings", "PRESETS",
               "probe_of", "eval_tokens", "eval_set", "eval_stride", "config_id", "decodes_incrementally",
               "FinetuneSettings", "rope_scale_specs", "StreamSettings", "stream_budget", "check_stream"),
    "finetune": ("FineTune", "finetunes", "finetune_train_config", "run_finetune"),
    "stream": ("stream_keys", "score_stream"),
    "plan": ("RowSpec", "Job", "evaluated_variants", "scales_embeddings", "job_model", "plan_jobs", "plan_caveats",
             "check_memory", "validate_plan", "train_jobs", "rope_scale_rows", "finetune_jobs"),
    "measure": ("train", "evaluate", "train_and_score", "row_unit"),
    "pretrained": ("resolve", "dry_run_estimate"),
    "suite": ("tasks", "run"),
    "labels": ("SERIES_FIELDS", "series", "relabel", "fine_tuned", "scale_mode"),
    "summary": ("t_quantile_975", "mean_ci", "protocol_line", "ppl_summary", "per_seed_ppl", "effective_length",
                "probe_chance", "probe_summary"),
    "claims": ("undertrained", "claims_section"),
    "streaming_report": ("stream_cells", "streaming_report", "stream_table", "stream_section"),
    "tables": ("ppl_table", "effective_table", "probe_table"),
    "figures": ("variant_style", "fig_ppl_vs_length", "fig_loss_vs_position", "fig_probe_vs_length"),
    "console": ("_print_summary",),
    "reporting": ("report",),
}
__all__ = ["SUITE", "POSITIONS", "ROPE_SCALINGS", "EvalSettings", "DataSettings", "PasskeySettings",
           "ExtrapolationConfig", "PRESETS", "run", "report", "plan_jobs", "effective_length",
           "mean_ci", "ppl_summary", "ppl_table", "effective_table", "t_quantile_975", "per_seed_ppl", "undertrained",
           "probe_table", "probe_summary", "plan_caveats", "decodes_incrementally", "PROTOCOL", "variant_style"]

lazy_package(__name__, _MEASURE, _REPORT, _EXPORTS)
