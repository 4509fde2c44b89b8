"""Published findings checked on a grid (no torch): the pairs of points that isolate each finding's change, and
each pair's verdict (reproduced / not reproduced / inconclusive) from paired 95% intervals over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ablate.analysis.claims import INCONCLUSIVE, LOSS_MARGIN, NOT_TESTABLE, REPRODUCED, better_claim, parity_claim
from ablate.plan.grid import EQUAL_PARAMS_TOL

from .aggregate import point_stats, to_float, undertrained_note
from .constants import ID_OMIT_AT, CONVERGENCE_DROP
from .lr_sensitivity import lr_sensitivity_rows


@dataclass(frozen=True)
class Finding:
    """A published finding about one model field: points whose value is ``new`` vs points whose value is ``old``,
    everything else equal. ``kind``: "better" (new reaches a lower loss), "same" (on par within ±LOSS_MARGIN) or
    "not_worse" (better, or on par)."""

    claim: str
    field: str
    new: Any  # the values it is about (a tuple), or a predicate (value, row) -> bool
    old: Any

    @staticmethod
    def matches(which: Any, value: Any, row: Any) -> bool:
        return which(value, row) if callable(which) else value in which
    kind: str
    reference: str
    published: str = ""  # the published numbers


def _glu(v: Any, row: Any) -> bool | None:
    """Whether the row's activation is a GLU, as its ``activation_glu`` column (recorded by the measurement from
    the activation's registration) says; None when the row does not say. The report never imports the variants
    (nor torch) to find out."""
    glu = row.get("activation_glu") if isinstance(v, str) else None
    if glu is None or (isinstance(glu, float) and math.isnan(glu)):
        return None
    return bool(glu)


def _standard(v: Any, row: Any) -> bool:
    """Whether the row's attention is the standard layer over its kernel (its ``attention_standard`` column)."""
    std = row.get("attention_standard")
    return isinstance(std, (bool, np.bool_)) and bool(std)


def _kv(row: Any) -> tuple[Any, Any]:
    kv = row.get("config.model.n_kv_heads", row.get("n_kv_heads"))
    return (None if to_float(kv) is None else int(to_float(kv))), to_float(row.get("config.model.n_heads"))


FINDINGS: tuple[Finding, ...] = (
    Finding("GLU FFN beats a non-GLU FFN at equal parameters and steps", "activation",
            lambda v, r: _glu(v, r) is True, lambda v, r: _glu(v, r) is False, "better",
            "Shazeer 2020 Table 1; Narang et al. 2021",
            "log-ppl ReLU 1.997, GELU 1.983 → SwiGLU 1.944, GEGLU 1.942 (Δ ≈ −0.05); Narang: 1.838 → 1.789"),
    Finding("RMSNorm ≈ LayerNorm quality (slightly better), at lower cost", "norm", ("rmsnorm",), ("layernorm",),
            "not_worse",
            "Narang et al. 2021", "final loss vanilla 1.838 → RMSNorm 1.821"),
    Finding("pre-norm trains at least as well as post-norm (post-norm is fragile)", "norm_placement", ("pre",),
            ("post",), "not_worse",
            "Xiong et al. 2020; Nguyen & Salazar 2019", "no loss table in shared/"),
    Finding("RoPE at least matches sinusoidal positions in-distribution", "position", ("rope",), ("sinusoidal",),
            "not_worse",
            "Su et al. 2021 (RoFormer); ALiBi paper appendix at L=512", "ppl sinusoidal 20.05 vs rotary 20.07"),
    Finding("GQA ≈ MHA quality with a smaller KV cache", "n_kv_heads",
            lambda v, r: _kv(r)[0] is not None and _kv(r)[0] != _kv(r)[1],
            lambda v, r: _kv(r)[0] is None or _kv(r)[0] == _kv(r)[1], "same",
            "Ainslie et al. 2023 Table 1", "MHA 47.2, GQA-8 47.1 (T5-XXL average score)"),
    # Attention layers against the standard layer, everything else equal; compared only at equal parameters
    # (EQUAL_PARAMS_TOL, else not testable: ablate.plan.grid.reference_model sizes the FFN of a layer that differs).
    Finding("DIFF Transformer reaches a lower loss than a Transformer of the same size and tokens", "attention",
            ("diff",), _standard, "better",
            "Ye et al. 2024 (Differential Transformer), Fig. 3 (scaling with parameters and tokens)",
            "same loss with ~62–65% of the parameters or training tokens"),
    Finding("MLA at equal parameters is at least as good as MHA", "attention", ("mla", "mla_q"), _standard,
            "not_worse", "DeepSeek-AI 2024 (DeepSeek-V2), appendix D (MLA vs MHA, small and large MoE models)",
            "MLA better than MHA on most benchmarks, KV cache 4.5·d_h per token and layer"),
)
_GATED = ("attention",)  # findings compared only at equal parameters (beyond EQUAL_PARAMS_TOL: not testable)
# Named comparisons that differ in more than one field: (claim, old point, new point, kind, reference, published).
NAMED_FINDINGS = (
    ("the modern block beats the 2017 block", "original", "modern", "better",
     "Narang et al. 2021 (the changes that transfer)", "vanilla 1.838 → RMSNorm 1.821, SwiGLU 1.789"),
)
_SIGNATURE_SKIP = ("config.train.seed", "config.train.steps", "config.model.vocab_size")


def _signature(row: Any, field_name: str) -> tuple:
    """Everything that defines a point's model and training, except ``field_name`` (and seed/steps). A point whose
    learning rate a sweep chose (``lr_sweep.lrs``: ``ablate.core.lr_sweep``) is defined by the candidates it was
    tuned over, not by the rate it got: each side of a finding at its own tuned rate, as the papers compare."""
    skip = set(_SIGNATURE_SKIP) | {f"config.model.{field_name}"}
    tuned = row.get("lr_sweep.lrs")
    if isinstance(tuned, (list, tuple)):
        skip |= {"config.train.lr", "config.train.min_lr"}
    if field_name == "attention":
        skip.add("config.model.window")
    if field_name == "position" and to_float(row.get("config.grid.scale_embeddings")) is None:
        # rows from before one embedding treatment (sinusoidal points alone scaled them): part of the change there
        skip.add("config.model.scale_embeddings")
    if field_name in ("n_kv_heads", "attention"):  # at equal parameters: the FFN width moves with the KV heads
        skip.add("config.model.ffn_mult")  # or with the attention layer's size (ablate.plan.grid.reference_model)
    items = []
    for k in sorted(row.index):
        if (k.startswith("config.model.") or k.startswith("config.train.")) and k not in skip:
            v = row[k]
            v = None if v is None or (isinstance(v, float) and math.isnan(v)) else (tuple(v) if isinstance(v, list)
                                                                                    else v)
            if v is None and k[len("config.model."):] in ID_OMIT_AT:  # a row from before the field existed
                v = ID_OMIT_AT[k[len("config.model."):]]
            items.append((k, v))
    if isinstance(tuned, (list, tuple)):
        items.append(("lr_sweep.lrs", tuple(tuned)))
    return tuple(items)


def _claim_verdict(kind: str, base: dict, other: dict) -> tuple[str, str, str]:
    """(verdict, ours, detail) of a finding on two points' per-seed val losses (paired over common seeds)."""
    a, b = base["val_by_seed"], other["val_by_seed"]
    if not a or not b:
        why = "diverged" if other["n_diverged"] or base["n_diverged"] else "no finished runs"
        return INCONCLUSIVE, "—", why
    if kind == "better":
        return better_claim(b, a, log_scale=False, margin=LOSS_MARGIN)
    return parity_claim(a, b, log_scale=False, margin=LOSS_MARGIN, not_worse=kind == "not_worse")


def finding_pairs(df) -> list[tuple[str, str, str, str, str, str]]:
    """(claim, old point, new point, kind, reference, published) for every pair of points that differ only in a
    finding's field (model and training settings otherwise equal), plus the named comparisons present."""
    firsts = {}
    for name in df["point"].unique():
        g = df[df["point"] == name]
        ok = g[g["status"].isin(["ok", "diverged"])]
        firsts[name] = (ok if len(ok) else g).iloc[0]
    out = []
    for f in FINDINGS:
        for old_name, old_row in firsts.items():
            if not Finding.matches(f.old, old_row.get(f.field), old_row):
                continue
            sig = _signature(old_row, f.field)
            for new_name, new_row in firsts.items():
                if new_name != old_name and Finding.matches(f.new, new_row.get(f.field), new_row) and \
                        _signature(new_row, f.field) == sig:
                    out.append((f.claim, old_name, new_name, f.kind, f.reference, f.published))
    for claim, old_name, new_name, kind, ref, published in NAMED_FINDINGS:
        if old_name in firsts and new_name in firsts:
            out.append((claim, old_name, new_name, kind, ref, published))
    return out


_TESTS = {"better": "lower val loss (paired 95% CI < 0)", "same": "equivalent within ±{m} nats",
          "not_worse": "lower, or equivalent within ±{m} nats"}


def caveats(base_name: str, base: dict, other_name: str, other: dict, field_name: str | None) -> list[str]:
    """What limits a comparison of two points: a point still improving at the end of its run (undertrained: see
    :data:`CONVERGENCE_DROP`), and for GQA vs MHA or an attention layer vs the standard one a parameter count that
    is not equal (beyond ±1%; for a layer it makes the finding not testable)."""
    out = []
    for name, p in ((base_name, base), (other_name, other)):
        if p.get("still_improving"):
            out.append(undertrained_note(name, p["drop"]))
    if field_name in ("n_kv_heads",) + _GATED and base.get("params") and other.get("params"):
        rel = other["params"] / base["params"] - 1.0
        if abs(rel) > EQUAL_PARAMS_TOL:
            out.append(f"not equal ({rel:+.0%} params)")
    return out


def findings_table(df):
    """The published findings, each checked on every pair of points of this grid that isolates its change, with
    a verdict (reproduced / not reproduced / inconclusive) from paired 95% intervals over seeds, and its caveats
    (:func:`caveats`). An undertrained point (its curve still falling, :data:`CONVERGENCE_DROP`) never makes a
    finding *reproduced*: the verdict becomes *not testable* (at this rung; the measured verdict stays in the detail)
    and the caveat says why."""
    by_name = {s["point"]: s for s in point_stats(df)}
    fields_of = {f.claim: f.field for f in FINDINGS}
    rows = []
    for claim, base_name, other_name, kind, ref, published in finding_pairs(df):
        base, other = by_name[base_name], by_name[other_name]
        verdict, ours, detail = _claim_verdict(kind, base, other)
        stuck = [n for n, p in ((base_name, base), (other_name, other)) if p["stuck"]]
        if len(stuck) == 2:
            verdict, detail = "inconclusive", f"both ≈ unigram loss {base['unigram']:.3f}: nothing learned"
        elif stuck:
            detail += f"; {stuck[0]} ≈ unigram"
        notes = caveats(base_name, base, other_name, other, fields_of.get(claim))
        if any(c.startswith("undertrained") for c in notes):  # as in ablate.analysis.claims: measured, not signed
            detail = f"not testable at this rung: a point is still improving (measured: {verdict}; {detail})"
            verdict = NOT_TESTABLE
        elif fields_of.get(claim) in _GATED and any(c.startswith("not equal") for c in notes):
            detail = f"not testable: parameters not on par (measured: {verdict}; {detail})"
            verdict = NOT_TESTABLE
        rows.append({"published claim": claim, "published": published, "source": ref,
                     "comparison": f"{other_name} vs {base_name}", "ours: Δ val loss (95% CI)": ours,
                     "test": _TESTS[kind].format(m=LOSS_MARGIN), "verdict": verdict,
                     "caveats": "; ".join(notes) or "—", "detail": detail})
    rows += lr_sensitivity_rows(df)  # QK-norm's claim is about a learning-rate sweep, not a pair of points
    return pd.DataFrame(rows, columns=["published claim", "published", "source", "comparison",
                                       "ours: Δ val loss (95% CI)", "test", "verdict", "caveats", "detail"])
