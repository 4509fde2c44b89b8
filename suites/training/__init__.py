"""Training ablations: what did each change from the 2017 Transformer to today's LLM block buy, at equal budget?

    ablate run --suite training                          # tiny preset on CPU (default grid, <= 10 min on 2 cores)
    ablate run --suite training --preset micro --seeds 3  # seconds (tests)
    ablate run --suite training --set "grid=norm=layernorm,rmsnorm;activation=relu,gelu,swiglu"   # factorial
    ablate run --suite training --set grid.axes=train.lr=1e-3,3e-3,1e-2 --set grid.mode=oat --set grid.base=original
    ablate run --suite training --set budget.kind=flops   # equal FLOPs (or time) instead of equal tokens
    ablate report results/training --out reports/training

The grid (:mod:`ablate.plan.grid`): by default "original" (post-LN LayerNorm, ReLU, sinusoidal, MHA, full attention),
"modern" (pre-RMSNorm, SwiGLU, RoPE, GQA), every change applied alone to original and removed alone from modern,
plus sliding-window and linear attention on modern. Every point x seed trains one model from scratch with the shared
loop (:func:`ablate.core.train.train`: AdamW, warm-up + cosine, clipping, bf16 autocast on CUDA, optional compile) on the
same data order per seed, and is then scored on the same held-out test documents (:mod:`ablate.core.evalset`). Fair
training: one embedding treatment for every point, GQA at equal parameters (FFN widened), T5's bias table without
weight decay, a learning rate per point from a short sweep scored on tune documents (``lr_sweep.*``,
:mod:`ablate.core.lr_sweep`; on at small and gpu), and a flag on every run still improving at its end.

Budget (``budget.kind``): ``tokens`` (default; every point trains ``budget.tokens``, default ``train.steps x
batch x seq_len``), ``flops`` (steps = ``budget.flops`` / the point's FLOPs per step; default budget = the reference
point's FLOPs per step x ``train.steps``) or ``time`` (steps = ``budget.seconds`` x the point's measured tokens/s,
timed over ``budget.calib_steps`` throw-away steps; default seconds = the reference point's time for
``train.steps``). The reference point is the grid's first ("original" in the default grid).

Rows (results file ``<out>/training/<device>-<preset>.jsonl``): one per grid point x seed. Key fields: ``point``,
``preset``, ``config_id`` (hash of everything that shapes the run), ``seed``, ``device``, ``data``. Metrics:
``val_loss`` (nats/token on the test documents: ``eval_tokens`` targets, ``eval_set``, ``eval_doc_ids``,
``doc_loss``), ``lr`` and ``lr_sweep.*`` (the rate used and the sweep that chose it), ``val_ppl``, ``val_bpb``,
``train_loss``, ``params`` (+ ``params_non_embedding``, ``matmul_params``), ``steps``, ``tokens``,
``tokens_per_s`` (steady state, first step excluded), ``step_ms``, ``train_s``, ``flops_per_step``, ``tflops``,
``mfu`` with ``mfu_peak_tflops`` / ``mfu_peak`` (the peak used; CUDA only), ``peak_mem_bytes`` /
``peak_mem_kind`` (``cuda_max_allocated`` per run; on CPU ``cpu_maxrss`` is the process high-water mark, not per
run), ``diverged_step``, the grid description (``baseline``, ``change``, ``group``, ``point_index``, ``grid_id``,
``axis.*``), the variant columns (``norm``, ``norm_placement``, ``activation``, ``position``, ``attention``,
``n_kv_heads``, ``window``) and **the curve as compact lists in the same row**: ``curve.step`` / ``curve.tokens`` /
``curve.train_loss`` (every ``train.log_every`` steps; the loss of that step) and ``curve.val_step`` /
``curve.val_loss`` (every ``train.eval_every`` steps and at the end, on the first test documents holding
``eval.curve_tokens`` targets).
A run whose loss goes non-finite gets status ``diverged`` with ``diverged_step`` and its curve so far; the grid
goes on. Finished rows (``ok``, ``diverged``, ``unsupported``) are skipped on a re-run, so an interrupted grid
resumes where it stopped.

Modules: ``constants`` (names both sides share), ``config`` (settings, presets, ``resolve``, grid points, the
``grid_id`` / ``config_id`` hashes), ``budget`` (``Budget``, ``flops_per_step``), ``measure`` (one run:
``run_point``) and ``suite`` (``tasks``, ``run``); the report side, without torch: ``aggregate`` (per-point
statistics, a grid's rows), ``findings`` (published claims and their verdicts), ``tables``, ``figures`` and
``reporting`` (``report``). The names below are reachable as ``ablate.suites.training.<name>``; a side's modules are
imported on first use of one of its names, so ``ablate report`` never imports torch through this package.
"""

from __future__ import annotations

from ablate.plan.suitekit import lazy_package

from .constants import (ID_OMIT_AT, BUDGET_KINDS, CONVERGENCE_DROP, CONVERGENCE_WINDOW, PROTOCOL,  # noqa: F401
                        STUCK_MARGIN, SUITE, SWEEPS, VARIANT_COLUMNS)

# The measurement side (torch, imported together) and the report side (no torch), and the names each module gives
# the package.
_MEASURE = ("config", "budget", "measure", "suite")
_REPORT = ("aggregate", "findings", "tables", "figures", "reporting")
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("BudgetSettings", "EvalSettings", "TrainingConfig", "PRESETS", "resolve", "grid_points", "point_train",
               "sweeps_lr", "SweepSettings",
               "grid_id", "config_id", "_grid_alias", "_refuse_grid_governed", "_model_id", "_corpus_id",
               "DataSettings", "ModelConfig", "TrainConfig", "GridSpec", "GridPoint"),
    "budget": ("flops_per_step", "Budget", "_calibrate", "train_jobs"),
    "measure": ("run_point", "unigram_loss", "eval_sets", "lm_loss", "train", "row_key_fields", "describe",
                "_curve"),
    "suite": ("results_file", "task_id", "check_memory", "tasks", "run", "_setup", "_print_summary"),
    "aggregate": ("point_stats", "compare_points", "grid_rows", "DESCRIPTIVE", "group_dirs", "to_float", "column_values",
                  "_stuck", "last_drop", "row_drop"),
    "findings": ("Finding", "FINDINGS", "NAMED_FINDINGS", "finding_pairs", "findings_table", "caveats", "_glu", "_kv",
                 "_signature", "_claim_verdict", "_SIGNATURE_SKIP", "_TESTS"),
    "tables": ("summary_table", "_delta_cell", "setup_lines", "cell"),
    "figures": ("palette", "fig_curves", "fig_pareto", "_mean_curve", "_si", "front_segments"),
    "reporting": ("report", "curve_caption", "pareto_caption"),
}
__all__ = ["SUITE", "BUDGET_KINDS", "BudgetSettings", "EvalSettings", "DataSettings", "TrainingConfig", "PRESETS",
           "resolve", "grid_points", "grid_id", "config_id", "results_file", "flops_per_step", "Budget", "run_point",
           "run", "report", "point_stats", "compare_points", "summary_table", "findings_table", "finding_pairs",
           "FINDINGS", "grid_rows", "unigram_loss"]

lazy_package(__name__, _MEASURE, _REPORT, _EXPORTS)
