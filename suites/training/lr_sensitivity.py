"""The QK-norm learning-rate-sensitivity claim (Wortsman et al. 2023, *Small-scale proxies for large-scale
Transformer training instabilities*, section 3.1), computed from a grid's rows (no torch).

*LR sensitivity* of a model over a learning-rate sweep is the mean, over the swept rates, of its final loss minus
its best final loss over the sweep (the paper's ``E_lr[min(L(lr), L0) - min_lr L(lr)]`` with ``L0`` the loss at
initialisation: a diverged run or one worse than a uniform prediction counts as ``L0 = ln(vocab_size)``). The claim:
QK-norm lowers it. It is checked on every pair of attention layers that differ in whether they normalise q and k
(the rows' ``attention_qk_norm``, recorded by the measurement from the layer), everything else equal, swept over the
same >= :data:`MIN_LRS` learning rates; per seed one sensitivity, paired over seeds. The detail names each side's
largest attention logit at the highest rate (``max_attn_logit``, the growth the paper ties to the divergence).

The paper's sensitivities are of final losses of runs trained to the end of their schedule; a side whose curve at
its best rate still falls by more than :data:`CONVERGENCE_DROP` over the last 20% of its steps is *undertrained*
(a caveat), and the verdict becomes *not testable* at this rung with the measured one kept in the detail, as for
every training finding (:func:`suites.training.findings.findings_table`).

Run it: ``ablate run -s training -p tiny --seeds 3 --sweep model.attention=sdpa,qknorm
--sweep train.lr=1e-3,3e-3,1e-2,3e-2,1e-1 --set grid.gqa_kv_heads=4``.
"""

from __future__ import annotations

import math
from typing import Any

from ablate.analysis.claims import INCONCLUSIVE, LOSS_MARGIN, NOT_TESTABLE, better_claim

from .aggregate import column_values, row_drop, to_float, undertrained_note
from .constants import CONVERGENCE_DROP

__all__ = ["CLAIM", "MIN_LRS", "lr_sensitivity", "lr_sensitivity_rows"]

CLAIM = "QK-norm lowers LR sensitivity (final loss flat over a wider learning-rate range)"
SOURCE = "Wortsman et al. 2023, Small-scale proxies for large-scale Transformer training instabilities, Fig. 1"
PUBLISHED = "LR sensitivity lower with qk-layernorm at every model size (its loss flat up to lr 3e-1)"
MIN_LRS = 5  # the ">= 5 log-spaced values"
_SKIP = {"config.model.attention", "config.train.lr", "config.train.min_lr", "config.train.seed",
         "config.train.steps", "config.model.window"}


def _signature(row: Any) -> tuple:
    items = []
    for k in sorted(row.index):
        if (k.startswith("config.model.") or k.startswith("config.train.")) and k not in _SKIP:
            v = row[k]
            if isinstance(v, float) and math.isnan(v):
                v = None
            items.append((k, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def lr_sensitivity(losses: dict[float, float], l0: float) -> float:
    """Mean over the rates of ``min(L(lr), L0) - min_lr min(L(lr), L0)`` (a missing/non-finite loss counts as L0)."""
    capped = [min(v, l0) if v is not None and math.isfinite(v) else l0 for v in losses.values()]
    return sum(c - min(capped) for c in capped) / len(capped)


def _per_seed(g, lrs: list[float], l0: float) -> tuple[dict[int, float], dict[int, float]]:
    """(seed -> LR sensitivity over ``lrs``, seed -> max attention logit at the highest rate) for rows ``g``."""
    by_seed: dict[int, dict[float, float | None]] = {}
    logit: dict[int, float] = {}
    for _, r in g.iterrows():
        lr, seed = to_float(r.get("config.train.lr")), int(r.get("seed"))
        loss = to_float(r.get("val_loss")) if r.get("status") == "ok" else None
        by_seed.setdefault(seed, {})[lr] = loss
        if lr == lrs[-1] and to_float(r.get("max_attn_logit")) is not None:
            logit[seed] = to_float(r.get("max_attn_logit"))
    sens = {s: lr_sensitivity({lr: d[lr] for lr in lrs}, l0) for s, d in by_seed.items() if all(lr in d for lr in lrs)}
    return sens, logit


def best_rate_drop(g, lrs: list[float]) -> tuple[float | None, float | None]:
    """(the rate of the lowest mean final loss over seeds, the mean :func:`row_drop` of its ok rows): how much the
    best run still improved at its end. (None, None) without an ok row."""
    mean_loss: dict[float, list[float]] = {}
    drops: dict[float, list[float]] = {}
    for _, r in g.iterrows():
        lr, loss = to_float(r.get("config.train.lr")), to_float(r.get("val_loss"))
        if r.get("status") != "ok" or lr not in lrs or loss is None:
            continue
        mean_loss.setdefault(lr, []).append(loss)
        d = row_drop(r)
        if d is not None:
            drops.setdefault(lr, []).append(d)
    if not mean_loss:
        return None, None
    best = min(mean_loss, key=lambda lr: sum(mean_loss[lr]) / len(mean_loss[lr]))
    return best, (sum(drops[best]) / len(drops[best]) if drops.get(best) else None)


def undertrained(sides: dict[str, Any], lrs: list[float]) -> list[str]:
    """Caveats for the sides (name -> rows) whose best-rate runs were still improving at their end."""
    out = []
    for name, g in sides.items():
        best, drop = best_rate_drop(g, lrs)
        if drop is not None and drop > CONVERGENCE_DROP:
            out.append(undertrained_note(name, drop, f" at its best lr {best:g}"))
    return out


def lr_sensitivity_rows(df) -> list[dict[str, Any]]:
    """Rows of the findings table (its columns) for every QK-norm / no-QK-norm pair swept over the same rates."""
    if df.empty or "attention_qk_norm" not in df.columns or "config.train.lr" not in df.columns:
        return []
    d = df[df["status"].isin(["ok", "diverged"])].copy()
    d = d[[isinstance(v, bool) for v in column_values(d, "attention_qk_norm")]]
    if d.empty:
        return []
    d["_sig"] = [_signature(r) for _, r in d.iterrows()]
    out = []
    for sig, g in d.groupby("_sig", sort=False):
        atts = {a: g[g["config.model.attention"] == a] for a in g["config.model.attention"].unique()}
        qk = {a: bool(x["attention_qk_norm"].iloc[0]) for a, x in atts.items()}
        for new in (a for a in atts if qk[a]):
            for old in (a for a in atts if not qk[a]):
                lrs = sorted({to_float(v) for v in atts[new]["config.train.lr"]} &
                             {to_float(v) for v in atts[old]["config.train.lr"]} - {None})
                if len(lrs) < MIN_LRS:
                    continue
                vocab = to_float(g["config.model.vocab_size"].iloc[0]) if "config.model.vocab_size" in g else None
                l0 = math.log(vocab) if vocab else float("inf")
                s_new, lg_new = _per_seed(atts[new], lrs, l0)
                s_old, lg_old = _per_seed(atts[old], lrs, l0)
                if s_new and s_old:
                    verdict, ours, detail = better_claim(s_new, s_old, log_scale=False, margin=LOSS_MARGIN)
                else:
                    verdict, ours, detail = INCONCLUSIVE, "—", "no seed finished every rate on both sides"

                def mean(v: dict[int, float]) -> str:
                    return f"{sum(v.values()) / len(v):.3g}" if v else "—"

                detail += (f"; LR sensitivity {old} {mean(s_old)}, {new} {mean(s_new)} nats over lr "
                           f"{lrs[0]:g}..{lrs[-1]:g} ({len(lrs)} rates); max attention logit at lr {lrs[-1]:g}: "
                           f"{old} {mean(lg_old)}, {new} {mean(lg_new)}")
                notes = undertrained({old: atts[old], new: atts[new]}, lrs)
                if notes:  # as in findings_table: measured, not signed
                    detail = f"not testable at this rung: a side is still improving (measured: {verdict}; {detail})"
                    verdict = NOT_TESTABLE
                out.append({"published claim": CLAIM, "published": PUBLISHED, "source": SOURCE,
                            "comparison": f"{new} vs {old} (LR sweep)", "ours: Δ val loss (95% CI)": ours,
                            "test": "lower LR sensitivity (paired 95% CI < 0; diverged = ln V)",
                            "verdict": verdict, "caveats": "; ".join(notes) or "—", "detail": detail})
    return out
