"""The recall claims, computed from rows with the claims engine's verdicts (:mod:`ablate.analysis.claims`,
:func:`ablate.analysis.stats.verdict`): *reproduced / not reproduced / inconclusive / not testable*.

Each point is taken at its chosen learning rate (:mod:`.aggregate`); per-seed accuracies are paired by seed. A
variant's role comes from the state form its rows record (asked of the attention layer's spec when measured):
``kv`` (full softmax attention, its KV cache grows with the sequence), ``window`` (a rolling cache of W tokens),
``recurrent`` (linear attention's fixed state). A claim resting on a point still improving at the end of its run
(validation accuracy rising, not solved) is *not testable*; the measured verdict stays in the detail.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ablate.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, ClaimResult,
                                    claims_frame)
from ablate.analysis.stats import clustered_proportion, verdict

from .aggregate import chosen_rows, far_near, point_key
from .constants import (ACC_MARGIN, BASED, BASED_KEYS, DIFF, DIFF_KEYS, DROP_MARGIN, GQA, GUESS_MARGIN, LEARNED,
                        POINT_COLUMNS, SOLVED, STANDARD_SOFTMAX, ZOOLOGY)

PROTOCOL_TEXT = "MQAR test accuracy at the answer positions; learning rate per point chosen on validation"


def _points(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per point: its settings, per-seed accuracy / correct / answers / near / far, flags."""
    out = []
    ch = chosen_rows(df)
    if ch.empty:
        return out
    for key, g in ch.groupby(ch.apply(point_key, axis=1), sort=False):
        p: dict[str, Any] = dict(zip(POINT_COLUMNS, key))
        p["form"] = str(g["state_form"].iloc[0])
        p["state"] = float(g["state_bytes"].iloc[0]) if "state_bytes" in g else 0.0
        p["n_layers"] = int(g["n_layers"].iloc[0])
        p["acc"] = {int(r["seed"]): float(r["accuracy"]) for _, r in g.iterrows()}
        p["ci"] = clustered_proportion([int(x) for x in g["correct"]], [int(x) for x in g["answers"]])
        p["improving"] = bool(g["still_improving"].fillna(False).astype(bool).any())
        if p["window"] is not None:
            nf = {int(r["seed"]): far_near(r, int(p["window"]), p["n_layers"]) for _, r in g.iterrows()}
            p["near"] = {s: v[0] for s, v in nf.items() if v[0] is not None}
            p["far"] = {s: v[1] for s, v in nf.items() if v[1] is not None}
            p["far_n"] = sum(v[3] for v in nf.values())
        out.append(p)
    return out


def _label(p: dict) -> str:
    w = f" W={int(p['window'])}" if p.get("window") is not None else ""
    kv = f" kv_heads={int(p['n_kv_heads'])}" if p["n_kv_heads"] != p["n_heads"] else ""
    heads = f" h={int(p['n_heads'])}" if int(p["n_heads"]) != 1 else ""
    return f"{p['attention']}{w}{heads}{kv} d={int(p['d_model'])} T={int(p['seq_len'])}/{int(p['kv_pairs'])}"


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _combine(parts: list[tuple[str, str]], gated: bool) -> tuple[str, str]:
    """(verdict, detail) of a family: reproduced only when every member is; not reproduced when one is not."""
    labels = [v for v, _ in parts]
    measured = (NOT_REPRODUCED if NOT_REPRODUCED in labels else REPRODUCED if labels and
                all(v == REPRODUCED for v in labels) else INCONCLUSIVE)
    detail = "; ".join(f"{d}" for _, d in parts)
    if gated:
        return NOT_TESTABLE, f"measured: {measured} ({detail})"
    return measured, detail


def _full_softmax(p: dict) -> bool:
    """A multi-head softmax attention point (a KV cache, as many KV heads as heads) that is not a layer the table
    compares with softmax attention (DIFF has a claim of its own)."""
    return p["form"] == "kv" and p["n_kv_heads"] == p["n_heads"] and p["attention"] not in DIFF_KEYS


def _softmax_solves(pts: list[dict]) -> ClaimResult:
    mine = [p for p in pts if _full_softmax(p)]
    base = dict(claim="Softmax attention solves MQAR (accuracy >= 0.99) at every d_model and length", source=ZOOLOGY,
                published="attention: ~1.00 at d_model 64-512, lengths 64-512", test=f"95% CI of each point vs "
                f"{SOLVED:g} (t over seeds, widened to the pooled Wilson interval)", protocol=PROTOCOL_TEXT)
    if not mine:
        return ClaimResult(**base, ours="—", verdict=NOT_TESTABLE, detail="no full-attention point in the rows")
    parts, ours = [], []
    for p in mine:
        c = p["ci"]
        ours.append(f"{_label(p)}: {c.mean:.3f} [{c.lo:.3f}, {c.hi:.3f}]")
        if c.clusters < 2:
            parts.append((INCONCLUSIVE, f"{_label(p)}: 1 seed"))
        elif c.lo >= SOLVED:
            parts.append((REPRODUCED, f"{_label(p)}: CI above {SOLVED:g}"))
        elif c.hi < SOLVED:
            parts.append((NOT_REPRODUCED, f"{_label(p)}: CI below {SOLVED:g}"))
        else:
            parts.append((INCONCLUSIVE, f"{_label(p)}: CI spans {SOLVED:g}"))
    gated = any((p["improving"] or p["ci"].mean < LEARNED) and p["ci"].mean < SOLVED for p in mine)
    v, d = _combine(parts, gated)
    cav = f"a point still improving at the end of its run or below {LEARNED:g} (not started to recall)" if gated else ""
    return ClaimResult(**base, ours="; ".join(ours), verdict=v, detail=d, caveats=cav)


def _window_falls(pts: list[dict]) -> ClaimResult:
    mine = [p for p in pts if p["form"] == "window"]
    base = dict(claim="Sliding-window attention loses recall once queries reach beyond its window",
                source=BASED, published="accuracy falls as the window shrinks below the query gaps",
                test=f"paired by seed: accuracy on answers beyond the stacked windows' reach (distance > layers x "
                     f"(W-1)) vs inside the window (distance < W); falls = lower beyond a {DROP_MARGIN:g} margin",
                protocol=PROTOCOL_TEXT)
    if not mine:
        return ClaimResult(**base, ours="—", verdict=NOT_TESTABLE, detail="no sliding-window point in the rows")
    parts, ours, left_out = [], [], []
    for p in mine:
        near, far = _paired(p.get("near", {}), p.get("far", {}))
        if not p.get("far_n"):
            left_out.append(f"{_label(p)}: no query reaches beyond W at this length")
            continue
        mn, mf = sum(near) / max(1, len(near)), sum(far) / max(1, len(far))
        ours.append(f"{_label(p)}: inside {mn:.3f}, beyond {mf:.3f}")
        v = verdict(near, far, lower_is_better=False, margin=DROP_MARGIN, paired=True)
        if mn < 0.5 or p["improving"]:  # it did not learn recall inside its window: its drop says nothing
            why = ("still improving" if p["improving"] and mn >= 0.5 else
                   f"did not learn recall inside its window ({mn:.3f})")
            left_out.append(f"{_label(p)}: {why}; measured {v.text}")
            continue
        if v.label == "worse" and not v.within_margin and v.hi is not None and v.hi < -DROP_MARGIN:
            parts.append((REPRODUCED, f"{_label(p)}: {v.text}"))
        elif v.label in ("equivalent", "better") or (v.label == "worse" and v.lo is not None
                                                        and v.lo > -DROP_MARGIN):
            parts.append((NOT_REPRODUCED, f"{_label(p)}: {v.text}"))
        else:
            parts.append((INCONCLUSIVE, f"{_label(p)}: {v.text}"))
    # points that cannot speak to the claim (no far queries, no recall inside the window, still improving) are left
    # out of the verdict and named; with none left the claim is not testable
    if parts:
        v, d = _combine(parts, False)
    else:
        v, d = NOT_TESTABLE, "no window point that learned recall inside its window has queries beyond its reach"
    if left_out:
        d += f"; left out of the verdict: {'; '.join(left_out)}"
    cav = ("left out: window points with no far queries, not recalling inside their window, or still improving"
           if left_out else "")
    return ClaimResult(**base, ours="; ".join(ours) or "—", verdict=v, detail=d, caveats=cav)


def _groups(pts: list[dict], form: str, *, by_layer: bool = False) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for p in pts:
        if p["form"] == form:
            key = (p["seq_len"], p["kv_pairs"], p["n_heads"], p["n_kv_heads"], p["window"])
            out.setdefault(key + ((p["attention"],) if by_layer else ()), []).append(p)
    return out


# The two recurrent families the claims speak of: Katharopoulos linear attention (elu+1; its feature dimension is
# d_model / heads) and the Based layers (Taylor feature map of dimension f after a short convolution; Based Figure 2
# plots accuracy against the state size that f and d_model set).
_LINEAR = dict(name="Linear attention", what="linear attention", pts="linear-attention", size="width", order="d_model",
               grows="Linear attention's recall grows with its feature dimension (d_model / heads)",
               published="accuracy rises with the feature dimension at a fixed length",
               test="the largest vs the smallest width of each length")
_BASED = dict(name="Based (Taylor linear attention + short conv)", what="Based", pts="Based", size="state",
              order="state",
              grows="Based (Taylor linear attention + short conv) recall grows with its recurrent state (feature "
                    "dimension f, d_model)",
              published="accuracy rises with the state size that the feature dimension and d_model set "
                        "(Figure 2: f = 8, 16, 24 at d_model 48-128)",
              test="the largest vs the smallest decode state of each length (points of every Based key)")


def _family(pts: list[dict], fam: dict) -> list[dict]:
    based = fam is _BASED
    return [p for p in pts if p["form"] == "recurrent" and (p["attention"] in BASED_KEYS) == based]


def _tag(p: dict, fam: dict) -> str:
    return f"d={int(p['d_model'])}" if fam["order"] == "d_model" else f"{p['attention']} d={int(p['d_model'])}"


def _linear_grows(pts: list[dict], fam: dict = _LINEAR) -> ClaimResult:
    base = dict(claim=fam["grows"], source=BASED, published=fam["published"],
                test=f"paired by seed: {fam['test']} (better beyond ±{ACC_MARGIN:g})", protocol=PROTOCOL_TEXT)
    size = (lambda p: p["d_model"]) if fam["order"] == "d_model" else (lambda p: (p["state"], p["d_model"]))
    groups = {k: sorted(g, key=size) for k, g in _groups(_family(pts, fam), "recurrent").items() if len(g) > 1}
    if not groups:
        return ClaimResult(**base, ours="—", verdict=NOT_TESTABLE,
                           detail=f"needs {fam['pts']} points at two {fam['size']}s or more")
    parts, ours, gated = [], [], False
    for g in groups.values():
        lo, hi = g[0], g[-1]
        a, b = _paired(lo["acc"], hi["acc"])
        ours.append(f"{_label(lo)} {lo['ci'].mean:.3f} -> {_tag(hi, fam)} {hi['ci'].mean:.3f}")
        gated |= lo["improving"] or hi["improving"]
        v = verdict(a, b, lower_is_better=False, margin=ACC_MARGIN, paired=True)
        guess = 1.0 / int(lo["kv_pairs"])
        if max(lo["ci"].mean, hi["ci"].mean) <= guess + GUESS_MARGIN:
            parts.append((NOT_TESTABLE, f"T={int(lo['seq_len'])}: no {fam['size']} left the guessing plateau "
                                        f"(1/kv_pairs = {guess:.2f}): {v.text}"))
            gated = True
        elif min(a, default=0) >= SOLVED:
            parts.append((NOT_TESTABLE, f"{_label(lo)}: already solved at the smallest {fam['size']}"))
            gated = True
        elif v.label == "better":
            parts.append((REPRODUCED, f"T={int(lo['seq_len'])}: {v.text}"))
        elif v.label in ("worse", "equivalent"):
            parts.append((NOT_REPRODUCED, f"T={int(lo['seq_len'])}: {v.text}"))
        else:
            parts.append((INCONCLUSIVE, f"T={int(lo['seq_len'])}: {v.text}"))
    v, d = _combine(parts, gated)
    return ClaimResult(**base, ours="; ".join(ours), verdict=v, detail=d,
                       caveats=f"a point still improving, solved at the smallest {fam['size']}, or at the guessing "
                               f"plateau (1/kv_pairs) at every {fam['size']}" if gated else "")


def _linear_needs_width(pts: list[dict], fam: dict = _LINEAR) -> ClaimResult:
    name = fam["name"]
    base = dict(claim=f"At equal d_model, {name[0].lower() + name[1:] if fam is _LINEAR else name} recalls less "
                      f"than softmax attention (it needs more width)",
                source=f"{ZOOLOGY}; {BASED}", published="attention solves every point; fixed-state mixers need "
                "d_model growing with the sequence", test=f"paired by seed at the smallest d_model of each length: "
                f"softmax attention better beyond ±{ACC_MARGIN:g}", protocol=PROTOCOL_TEXT)
    soft = {(p["seq_len"], p["kv_pairs"], p["d_model"], p["n_heads"]): p for p in pts if _full_softmax(p)}
    parts, ours, gated, ceiling = [], [], False, False
    for k, g in _groups(_family(pts, fam), "recurrent", by_layer=True).items():
        lin = min(g, key=lambda p: p["d_model"])
        s = soft.get((lin["seq_len"], lin["kv_pairs"], lin["d_model"], lin["n_heads"]))
        if s is None:
            continue
        a, b = _paired(lin["acc"], s["acc"])
        ours.append(f"d={int(lin['d_model'])} T={int(lin['seq_len'])}: softmax {s['ci'].mean:.3f} vs "
                    f"{lin['attention']} {lin['ci'].mean:.3f}")
        gated |= s["improving"] or s["ci"].mean < LEARNED
        # the recurrent layer on the guessing plateau at every width of the length: it did not learn here, so the
        # gap says nothing about the width it needs (an optimisation failure looks the same)
        guess = 1.0 / int(lin["kv_pairs"])
        stuck = all(p["ci"].mean <= guess + GUESS_MARGIN for p in g)
        gated |= stuck
        v = verdict(a, b, lower_is_better=False, margin=ACC_MARGIN, paired=True)
        label = {"better": REPRODUCED, "worse": NOT_REPRODUCED, "equivalent": NOT_REPRODUCED}.get(v.label,
                                                                                               INCONCLUSIVE)
        plateau = (f" ({fam['what']} at the guessing plateau 1/kv_pairs = {guess:.2f} at every width)"
                   if stuck else "")
        if fam is _BASED and min(s["ci"].mean, lin["ci"].mean) >= SOLVED:
            ceiling = True  # both solve it: no room for a gap at this rung
            parts.append((NOT_TESTABLE, f"T={int(lin['seq_len'])}: both solve MQAR (>= {SOLVED:g})"))
            continue
        parts.append((label, f"T={int(lin['seq_len'])}: {v.text}{plateau}"))
    if not parts:
        return ClaimResult(**base, ours="—", verdict=NOT_TESTABLE,
                           detail=f"needs softmax and {fam['what']} at the same d_model and length")
    v, d = _combine(parts, gated or ceiling)
    cav = [c for c, on in ((f"softmax attention still improving or not learning, or {fam['what']} at the guessing "
                            f"plateau (1/kv_pairs) at every width", gated),
                           ("ceiling: both solve MQAR at this rung", ceiling)) if on]
    return ClaimResult(**base, ours="; ".join(ours), verdict=v, detail=d, caveats="; ".join(cav))


def _based_claims(pts: list[dict]) -> list[ClaimResult]:
    """The two linear-attention claims for the Based layers ([] without a Based point)."""
    if not _family(pts, _BASED):
        return []
    return [_linear_grows(pts, _BASED), _linear_needs_width(pts, _BASED)]


def _gqa_parity(pts: list[dict]) -> ClaimResult:
    base = dict(claim="GQA/MQA recall as well as multi-head attention at equal d_model", source=GQA,
                published="GQA quality close to MHA (uptrained T5-XXL)", test=f"paired by seed: parity within "
                f"±{ACC_MARGIN:g} accuracy", protocol=PROTOCOL_TEXT)
    mha = {(p["seq_len"], p["kv_pairs"], p["d_model"], p["n_heads"], p["attention"]): p for p in pts
           if p["form"] == "kv" and p["n_kv_heads"] == p["n_heads"]}
    parts, ours, gated = [], [], False
    for p in pts:
        m = mha.get((p["seq_len"], p["kv_pairs"], p["d_model"], p["n_heads"], p["attention"]))
        if p["form"] != "kv" or p["n_kv_heads"] == p["n_heads"] or m is None:
            continue
        a, b = _paired(m["acc"], p["acc"])
        ours.append(f"{_label(p)}: {p['ci'].mean:.3f} vs MHA {m['ci'].mean:.3f}")
        gated |= p["improving"] or m["improving"]
        v = verdict(a, b, lower_is_better=False, margin=ACC_MARGIN, paired=True)
        ok = v.label == "equivalent" or (v.label in ("better", "worse") and v.within_margin) or v.label == "better"
        parts.append((REPRODUCED if ok else NOT_REPRODUCED if v.label == "worse" else INCONCLUSIVE,
                      f"{_label(p)}: {v.text}"))
    if not parts:
        return ClaimResult(**base, ours="—", verdict=NOT_TESTABLE, detail="no GQA/MQA point at this rung (e.g. "
                           "--set model.n_heads=4 --sweep model.n_kv_heads=1,2,4)")
    v, d = _combine(parts, gated)
    return ClaimResult(**base, ours="; ".join(ours), verdict=v, detail=d,
                       caveats="a point still improving" if gated else "")


def _diff_retrieves(pts: list[dict]) -> list[ClaimResult]:
    """DIFF vs the standard softmax layer at the same d_model, heads, length and pairs ([] without a DIFF point)."""
    base = dict(claim="Differential attention retrieves better than softmax attention (multi-needle)", source=DIFF,
                published="multi-needle retrieval at 4K: DIFF above the Transformer, the gap widening with the "
                          "number of needles", test=f"paired by seed: DIFF more accurate beyond ±{ACC_MARGIN:g}",
                protocol=PROTOCOL_TEXT)
    std = {(p["seq_len"], p["kv_pairs"], p["d_model"], p["n_heads"]): p for p in pts
           if p["attention"] in STANDARD_SOFTMAX and p["n_kv_heads"] == p["n_heads"]}
    mine = [p for p in pts if p["attention"] in DIFF_KEYS]
    if not mine:
        return []
    parts, ours, gated, ceiling = [], [], False, False
    for p in mine:
        m = std.get((p["seq_len"], p["kv_pairs"], p["d_model"], p["n_heads"]))
        if m is None:
            continue
        a, b = _paired(m["acc"], p["acc"])
        ours.append(f"{_label(p)}: {p['ci'].mean:.3f} vs {m['attention']} {m['ci'].mean:.3f}")
        gated |= p["improving"] or m["improving"] or max(p["ci"].mean, m["ci"].mean) < LEARNED
        if min(m["ci"].mean, p["ci"].mean) >= SOLVED:
            ceiling = True  # both solve it: no room for "better"
            parts.append((NOT_TESTABLE, f"{_label(p)}: both solve MQAR (>= {SOLVED:g})"))
            continue
        v = verdict(a, b, lower_is_better=False, margin=ACC_MARGIN, paired=True)
        label = {"better": REPRODUCED, "worse": NOT_REPRODUCED, "equivalent": NOT_REPRODUCED}.get(v.label,
                                                                                               INCONCLUSIVE)
        parts.append((label, f"{_label(p)}: {v.text}"))
    if not parts:
        return [ClaimResult(**base, ours="—", verdict=NOT_TESTABLE,
                            detail="no standard softmax point at the DIFF point's d_model, heads, length and pairs")]
    v, d = _combine(parts, gated or ceiling)
    return [ClaimResult(**base, ours="; ".join(ours), verdict=v, detail=d,
                        caveats="; ".join(c for c, on in (("a point still improving or not recalling", gated),
                                                          ("ceiling: both solve MQAR at this rung", ceiling)) if on))]


def recall_claims(df: pd.DataFrame) -> pd.DataFrame:
    """The claims table of one run's rows (:func:`ablate.analysis.claims.claims_frame`)."""
    pts = _points(df)
    return claims_frame([_softmax_solves(pts), _window_falls(pts), _linear_grows(pts), _linear_needs_width(pts),
                         *_based_claims(pts), _gqa_parity(pts), *_diff_retrieves(pts)])
