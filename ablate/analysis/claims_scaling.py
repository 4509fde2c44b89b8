"""The RoPE-scaling claims with their paper-true protocols, tested on the extrapolation suite's rows.

:func:`ablate.analysis.claims.extrapolation_claims` scores the scalings at the *ideal* scale (``s = eval_len / train_len`` at
every length) on the pre-trained model. The papers' own claims rest on two other protocols, which the suite now runs
(``eval.rope_scales``, ``finetune.*``; docs/extrapolation.md) and this module scores with the same engine
(:func:`ablate.analysis.claims.contrast` intervals over seeds × documents, :func:`ablate.analysis.claims.judge` with Holm over the
lengths a claim covers, the undertrained / parity gates and the caveats column):

* **fine-tuned** -- YaRN's Table 1 as it is: Llama-2 7B (4k) fine-tuned to an 8k window (PI s=2 and NTK θ=20k on 1B
  tokens, YaRN s=2 on 400M), sliding-window perplexity (S=256) on ten Proof-pile documents. Inside the fine-tuned
  window (8,192 tokens) PI 3.34 ≈ YaRN 3.35 < NTK 3.59; past it (10,240) YaRN 6.04 < NTK 6.24 < PI 8.07. Here: the
  suite's fine-tuned models (each scaling at fixed ``s = finetune.scale``, ``finetune.steps`` steps at
  ``s · train_len``), "inside" at ``eval_len = s · train_len`` (the window itself, as 8k is), "past" at every measured
  length beyond it (Holm);
* **without fine-tuning, as deployed** -- one fixed ``s`` at every length (``rope_scale_mode = "fixed"``): NTK-aware
  scaling and YaRN keep perplexity far below plain RoPE past train_len, and PI without fine-tuning does worse than
  NTK-aware at the same ``s`` (the NTK-aware and dynamic-NTK write-ups; YaRN sec. 3.3-3.4); YaRN's temperature
  lowers perplexity at a given ``s`` without fine-tuning (YaRN sec. 3.4: the ``sqrt(1/t) = 0.1 ln s + 1`` fit was
  made on LLaMA models without fine-tuning).

Every claim's source says *fine-tuned* or *not fine-tuned*. Rows are grouped into series by
:func:`ablate.suites.extrapolation.labels.series` (a position alone no longer names one: ``rope_pi`` at the ideal
scale, ``rope_pi s=4`` at a fixed one, ``rope_pi s=4 ft50@256`` fine-tuned). Torch-free: reports import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from ablate.analysis.claims import (NOT_TESTABLE, PPL_MARGIN, Cell, Check, ClaimResult, Context, claim_caveats, ratio_cell,
                           cells_from_rows, contrast, judge)
from ablate.suites.extrapolation.labels import fine_tuned, scale_mode, series

__all__ = ["YARN_T1", "ROPE_DEPLOYED", "YARN_TEMPERATURE", "Series", "scaling_cells", "scaling_claims"]

YARN_T1 = ("Peng et al. 2023 (YaRN), Table 1: Llama-2 7B fine-tuned from 4k to an 8k window (PI, NTK on 1B tokens, "
           "YaRN on 400M), sliding window S=256, Proof-pile: fine-tuned")
ROPE_DEPLOYED = ("NTK-aware (bloc97 2023) and dynamic NTK (emozilla 2023) write-ups; YaRN (Peng et al. 2023) sec. "
                 "3.3: one scale s at every length: not fine-tuned")
YARN_TEMPERATURE = ("Peng et al. 2023 (YaRN) sec. 3.4: sqrt(1/t) = 0.1 ln s + 1 fitted to minimise perplexity on "
                    "LLaMA at a given s: not fine-tuned")
SCALINGS = ("rope_pi", "rope_ntk", "rope_yarn")


@dataclass(frozen=True)
class Series:
    """What a series label stands for: the evaluated position, the trained one, how s was chosen, and the
    fine-tuning behind the model (0 steps: none)."""

    label: str
    position: str
    trained: str
    mode: str | None  # "ideal" | "fixed" | "dynamic" | None (a trained variant)
    scale: float | None  # the fixed s (None otherwise)
    finetune_steps: int = 0
    finetune_len: int | None = None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def scaling_cells(records: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, int], Cell], dict[str, Series]]:
    """``({(series label, eval_len): Cell}, {label: Series})`` over ok perplexity rows (dicts): per-seed perplexity
    and, where every row of a cell carries them on one document sample, the per-document losses."""
    info: dict[str, Series] = {}

    def key(r):
        if r.get("metric") != "ppl" or r.get("status") != "ok" or _num(r.get("value")) is None:
            return None
        label = series(r)
        mode = scale_mode(r)
        pos = str(r["position"]).split(" ", 1)[0]  # the registry key (a relabelled frame carries the label)
        info.setdefault(label, Series(label, pos, str(r.get("trained_position") or pos),
                                      mode, _num(r.get("rope_scale")) if mode == "fixed" else None,
                                      int(_num(r.get("finetune_steps")) or 0) if fine_tuned(r) else 0,
                                      int(_num(r.get("finetune_len"))) if fine_tuned(r) and
                                      _num(r.get("finetune_len")) else None))
        return (label, int(r["eval_len"]))

    cells = cells_from_rows(records, key)
    return cells, info


def scaling_claims(records: Iterable[Mapping[str, Any]], train_len: int, ctx: Context | None = None
                   ) -> list[ClaimResult]:
    """The fine-tuned (YaRN Table 1) and deployed (fixed s, temperature) RoPE-scaling claims on one protocol group's
    rows; a claim is left out when its series or lengths were not measured. ``ctx``: the undertrained variants and
    the protocol, as :func:`ablate.analysis.claims.extrapolation_claims` takes them (the trained model behind each series is
    read off the rows)."""
    cells, info = scaling_cells(records)
    ctx = ctx or Context()
    ctx = replace(ctx, trained={**ctx.trained, **{s.label: s.trained for s in info.values()}})
    lens = sorted({L for _, L in cells})
    longer = [L for L in lens if L > train_len]
    out: list[ClaimResult] = []
    if train_len not in lens or not longer:
        return out
    f = lambda L: f"{L // train_len}×" if L % train_len == 0 else f"{L / train_len:.1f}×"  # noqa: E731

    def has(label, *Ls):
        return bool(Ls) and all(cells.get((label, L)) and cells[(label, L)].ppl for L in Ls)

    def diff(a, b, L):
        return contrast([(1.0, cells[(a, L)]), (-1.0, cells[(b, L)])])

    def add(claim, source, published, test, tests: Sequence[Check], involved, compared=(), extra=()):
        verdict, by, detail = judge(tests)
        caveats, blocked = claim_caveats(cells, involved, compared, train_len, ctx, False, f)
        caveats += [e for e in extra if e]
        ours = "; ".join(f"{t.label} {ratio_cell(t.est)}" for t in tests) if len(tests) > 1 else ratio_cell(tests[0].est)
        if blocked:
            detail = f"not testable at this rung: {blocked} (measured: {verdict}; {detail})"
            verdict = NOT_TESTABLE
        out.append(ClaimResult(claim, source, published, ours, test, verdict, detail, caveats="; ".join(caveats),
                               by_length=by if len(tests) > 1 else "", protocol=ctx.protocol))

    protocol_note = ("protocol: YaRN Table 1 scores a sliding window (S=256); these rows: " + ctx.protocol
                     if ctx.mode != "sliding" else "")

    # (a) fine-tuned: one fine-tuning (steps, window) with all three scalings
    groups: dict[tuple, dict[str, Series]] = {}
    for s in info.values():
        if s.finetune_steps and s.position in SCALINGS:
            groups.setdefault((s.finetune_steps, s.finetune_len, s.scale), {})[s.position] = s
    for (steps, window, scale), by_pos in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if window is None:
            continue
        pi, ntk, yarn = (by_pos.get(p) for p in SCALINGS)
        ft = f"fine-tuned {steps} steps at {window} tokens, s={scale:g}"
        past = [L for L in lens if L > window]
        if pi and yarn and has(pi.label, window) and has(yarn.label, window):
            add(f"Inside the fine-tuned window PI and YaRN are on par ({ft})", YARN_T1,
                "PI 3.34, YaRN 3.35 at 8,192 (the 8k window)",
                f"YaRN within ±5% of PI at {f(window)} = the window (TOST; fixed by the claim)",
                [Check(f(window), diff(yarn.label, pi.label, window), "parity", margin=PPL_MARGIN)],
                [pi.label, yarn.label], extra=[protocol_note])
        if ntk and has(ntk.label, window) and any(s and has(s.label, window) for s in (pi, yarn)):
            rivals = [s for s in (pi, yarn) if s and has(s.label, window)]
            add(f"Inside the fine-tuned window PI and YaRN beat NTK-aware ({ft})", YARN_T1,
                "PI 3.34, YaRN 3.35 vs NTK 3.59 at 8,192",
                f"{' and '.join(s.position for s in rivals)} below rope_ntk at {f(window)} = the window "
                "(paired; Holm over the two)",
                [Check(f"{s.position} vs ntk", diff(s.label, ntk.label, window), "better") for s in rivals],
                [ntk.label] + [s.label for s in rivals], extra=[protocol_note])
        if past and yarn and ntk and has(yarn.label, *past) and has(ntk.label, *past):
            add(f"Past the fine-tuned window YaRN beats NTK-aware ({ft})", YARN_T1,
                "YaRN 6.04 vs NTK 6.24 at 10,240 (1.25× the window)",
                f"rope_yarn below rope_ntk at every L in {f(past[0])}–{f(past[-1])} (paired; Holm over lengths)",
                [Check(f(L), diff(yarn.label, ntk.label, L), "better") for L in past], [yarn.label, ntk.label],
                extra=[protocol_note])
        if past and ntk and pi and has(ntk.label, *past) and has(pi.label, *past):
            add(f"Past the fine-tuned window NTK-aware beats PI ({ft})", YARN_T1,
                "NTK 6.24 vs PI 8.07 at 10,240 (1.25× the window)",
                f"rope_ntk below rope_pi at every L in {f(past[0])}–{f(past[-1])} (paired; Holm over lengths)",
                [Check(f(L), diff(ntk.label, pi.label, L), "better") for L in past], [ntk.label, pi.label],
                extra=[protocol_note])

    # (b) without fine-tuning, as deployed: one fixed s at every length
    fixed = [s for s in info.values() if s.mode == "fixed" and not s.finetune_steps and s.scale]
    base = next((s for s in info.values() if s.position == s.trained == "rope" and not s.finetune_steps), None)
    for scale in sorted({s.scale for s in fixed}):
        at = {s.position: s for s in fixed if s.scale == scale}
        within = [L for L in longer if L <= scale * train_len]
        beyond = [L for L in longer if L > scale * train_len]
        span = (f"{f(longer[0])}–{f(longer[-1])}" + (f" (inside s·train_len up to {f(within[-1])}, beyond it from "
                                                       f"{f(beyond[0])})" if within and beyond else ""))
        for key, name in (("rope_ntk", "NTK-aware scaling"), ("rope_yarn", "YaRN")):
            s = at.get(key)
            if s and base and has(s.label, *longer) and has(base.label, *longer):
                add(f"{name} at one fixed s={scale:g}, not fine-tuned, keeps perplexity below plain RoPE past the "
                    "training length", ROPE_DEPLOYED, "far lower than plain RoPE (qualitative; not fine-tuned)",
                    f"{s.label} below rope at every L in {span} (paired; Holm over lengths)",
                    [Check(f(L), diff(s.label, base.label, L), "better") for L in longer], [s.label, base.label],
                    compared=[(s.label, base.label)])
        pi, ntk = at.get("rope_pi"), at.get("rope_ntk")
        if pi and ntk and has(pi.label, *longer) and has(ntk.label, *longer):
            add(f"PI at one fixed s={scale:g} without fine-tuning hurts: NTK-aware at the same s does better",
                ROPE_DEPLOYED, "PI degrades without fine-tuning; NTK-aware does not need it (qualitative; not "
                "fine-tuned)", f"{ntk.label} below {pi.label} at every L in {span} (paired; Holm over lengths)",
                [Check(f(L), diff(ntk.label, pi.label, L), "better") for L in longer], [ntk.label, pi.label],
                compared=[(ntk.label, pi.label)])

    # (b) YaRN's temperature, not fine-tuned: with it vs without it at the same s (ideal or fixed)
    for s in info.values():
        if s.position != "rope_yarn" or s.finetune_steps:
            continue
        twin = next((t for t in info.values() if t.position == "rope_yarn_notemp" and t.mode == s.mode
                     and t.scale == s.scale and not t.finetune_steps), None)
        if twin and has(s.label, *longer) and has(twin.label, *longer):
            how = "the ideal s = eval_len / train_len" if s.mode == "ideal" else f"s={s.scale:g}"
            add(f"YaRN's temperature lowers perplexity past the training length ({how}, not fine-tuned)",
                YARN_TEMPERATURE, "the fitted t minimises perplexity at each s (LLaMA 7B-65B; not fine-tuned)",
                f"{s.label} below {twin.label} at every L in {f(longer[0])}–{f(longer[-1])} (paired; Holm)",
                [Check(f(L), diff(s.label, twin.label, L), "better") for L in longer], [s.label, twin.label],
                compared=[(s.label, twin.label)])
    return out
