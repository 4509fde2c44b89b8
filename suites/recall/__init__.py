"""Recall: multi-query associative recall (MQAR; Arora et al. 2023, *Zoology*) and the recall-memory trade-off of
every attention variant (Arora et al. 2024, *Based*).

    ablate run --suite recall                                   # tiny preset on CPU (<= 10 min on 2 cores)
    ablate run --suite recall --preset micro                    # seconds (tests)
    ablate run --suite recall --sweep model.attention=sdpa,sliding_window,linear --sweep model.d_model=32,64,128
    ablate run --suite recall --preset gpu --dry-run            # the Figure 2 grid and its estimate
    ablate report results/recall --out reports/recall

Each grid point (attention x window x KV heads x d_model x (seq_len, kv_pairs) x learning rate) x seed trains the
reference model (2 layers, 1 head, RoPE) on MQAR examples generated fresh every step (``data.py``: the reference
generator's semantics), then scores it at the answer positions of a validation set (the learning-rate choice, made
by the report per point as the reference takes the best of its sweep) and of a test set (the reported accuracy);
no validation or test example is ever trained on. One row per point x seed: ``accuracy`` (= ``value``), ``loss``
(answer positions), ``val_accuracy``, accuracy by query distance (``dist.*``), ``state_bytes`` (decode state per
sequence at ``seq_len``: KV cache, rolling window cache, or linear attention's recurrent state), ``params``,
``steps``/``examples``/``tokens``, the validation curve and ``still_improving``.

Modules: ``constants``, ``data`` (the generator), ``config`` (settings, presets, points), ``measure``
(``run_point``), ``suite`` (``tasks``, ``run``, ``train_jobs``); the report side, without torch: ``aggregate``
(best learning rate per point, intervals), ``claims``, ``figures``, ``console`` and ``reporting`` (``report``).
"""

from __future__ import annotations

from ablate.plan.suitekit import lazy_package

from .constants import (ACC_MARGIN, CONVERGENCE_RISE, CONVERGENCE_WINDOW, DROP_MARGIN, POINT_COLUMNS,  # noqa: F401
                        PROTOCOL, SOLVED, SUITE, SWEEPS)

_MEASURE = ("config", "measure", "suite")
_REPORT = ("aggregate", "claims", "figures", "console", "reporting")
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("TaskSettings", "TrainSettings", "GridSettings", "RecallConfig", "RecallPoint", "PRESETS", "resolve",
               "points", "lengths", "steps_of", "train_config", "config_id"),
    "measure": ("mqar_loss", "state_bytes", "EvalSets", "eval_sets", "train_stream", "score", "n_evals", "point_work",
                "run_point"),
    "suite": ("KEY_FIELDS", "row_key_fields", "check_memory", "tasks", "run", "train_jobs", "SUITE_KIT",
              "StepCost", "recall_cost", "dry_run_estimate"),
    "aggregate": ("best_lr", "point_table", "per_seed", "point_key", "chosen_rows", "far_near", "front_table",
                  "status_table"),
    "claims": ("recall_claims",),
    "figures": ("fig_accuracy", "fig_memory", "fig_distance"),
    "console": ("print_summary",),
    "reporting": ("report",),
}
__all__ = ["SUITE", "PRESETS", "resolve", "points", "run", "tasks", "train_jobs", "report", "recall_claims",
           "best_lr", "point_table", "state_bytes", "run_point"]

lazy_package(__name__, _MEASURE, _REPORT, _EXPORTS)
