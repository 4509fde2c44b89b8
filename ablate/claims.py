"""Published claims next to this run's numbers, with a verdict that code derives from the rows.

Each claim names its source and the published numbers (``shared/README.md``: the ALiBi paper's WikiText-103 table,
the RoPE-scaling papers, Shazeer 2020, Narang et al. 2021, Ainslie et al. 2023), the measurement that tests it here
and the verdict:

* **reproduced** -- the 95% interval of our measurement supports the claim;
* **not reproduced** -- the interval contradicts it (a significant difference the other way, or equivalence within
  the stated margin where the claim is a difference, or a difference beyond the margin where it is parity);
* **inconclusive** -- neither, with the difference our seeds could have detected (or fewer than two seeds).

Three kinds of test, all on per-seed values (seeds are paired: same data order and initialisation stream):

* ``threshold`` -- a ratio (e.g. perplexity at 2x train_len over perplexity at train_len) against a threshold:
  the t-interval of the per-seed log ratios lies entirely above (or below) ``log(threshold)``;
* ``better`` -- one variant beats another: :func:`ablate.stats.verdict` says *better*;
* ``parity`` -- two variants are on par: *equivalent within ±m*, or significantly different but inside ±m.

Perplexities are compared on log scale (the margin ±5% is ``log 1.05``); losses in nats (margin ±0.02 nats, half
the GLU effect in Shazeer 2020). Torch-free: reports import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from ablate.stats import summarize, verdict

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "ClaimResult", "PPL_MARGIN", "LOSS_MARGIN",
           "threshold_claim", "better_claim", "parity_claim", "extrapolation_claims", "claims_frame"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
PPL_MARGIN = math.log(1.05)  # equivalence margin on log perplexity: ±5%
LOSS_MARGIN = 0.02  # equivalence margin on validation loss, nats

PerSeed = Mapping[int, float]  # seed -> value


@dataclass(frozen=True)
class ClaimResult:
    claim: str
    source: str
    published: str
    ours: str  # our number with its 95% interval
    test: str  # what decides the verdict
    verdict: str  # REPRODUCED | NOT_REPRODUCED | INCONCLUSIVE
    detail: str = ""  # the statistics behind the verdict

    def as_row(self) -> dict[str, str]:
        return {"claim": self.claim, "published": self.published, "source": self.source, "ours (95% CI)": self.ours,
                "test": self.test, "verdict": self.verdict, "detail": self.detail}


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _paired(a: PerSeed, b: PerSeed) -> tuple[list[float], list[float]]:
    seeds = sorted(s for s in set(a) & set(b) if _finite(a[s]) and _finite(b[s]))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _ratio_text(center: float, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return f"×{math.exp(center):.2f} (1 seed: no interval)"
    return f"×{math.exp(center):.2f} [{math.exp(lo):.2f}, {math.exp(hi):.2f}]"


# ---------------------------------------------------------------------------------------------------------------
# The three tests


def threshold_claim(num: PerSeed, den: PerSeed, threshold: float, *, above: bool) -> tuple[str, str, str]:
    """(verdict, ours, detail) for "num / den is above (or below) ``threshold``" on paired per-seed values."""
    a, b = _paired(den, num)
    logs = [math.log(y / x) for x, y in zip(a, b)]
    s = summarize(logs)
    if s.n == 0:
        return INCONCLUSIVE, "—", "no finished pair of rows"
    ours = _ratio_text(s.mean, s.lo, s.hi)
    t = math.log(threshold)
    if s.n < 2:
        return INCONCLUSIVE, ours, "1 seed: no interval (needs >= 2)"
    if (s.lo > t) if above else (s.hi < t):
        return REPRODUCED, ours, f"95% CI {'above' if above else 'below'} ×{threshold:g} ({s.n} seeds)"
    if (s.hi < t) if above else (s.lo > t):
        return NOT_REPRODUCED, ours, f"95% CI {'below' if above else 'above'} ×{threshold:g} ({s.n} seeds)"
    return INCONCLUSIVE, ours, f"95% CI spans ×{threshold:g} ({s.n} seeds)"


def _logs(v: PerSeed) -> dict[int, float]:
    return {s: math.log(x) for s, x in v.items() if _finite(x)}


def better_claim(better: PerSeed, worse: PerSeed, *, log_scale: bool = True,
                 margin: float | None = None) -> tuple[str, str, str]:
    """(verdict, ours, detail) for "``better`` reaches a lower value than ``worse``" (lower is better)."""
    margin = (PPL_MARGIN if log_scale else LOSS_MARGIN) if margin is None else margin
    a, b = (_logs(worse), _logs(better)) if log_scale else (worse, better)
    base, other = _paired_raw(a, b)
    v = verdict(base, other, lower_is_better=True, margin=margin, paired=True)
    ours = _diff_text(v, log_scale)
    if v.label == "better":
        return REPRODUCED, ours, v.text
    if v.label == "worse":
        return NOT_REPRODUCED, ours, v.text
    if v.label == "equivalent":
        return NOT_REPRODUCED, ours, v.text + " (no difference of the claimed kind)"
    return INCONCLUSIVE, ours, v.text


def parity_claim(a: PerSeed, b: PerSeed, *, log_scale: bool = True, margin: float | None = None,
                 not_worse: bool = False) -> tuple[str, str, str]:
    """(verdict, ours, detail) for "``b`` is on par with ``a``" (``not_worse``: "at least as good as")."""
    margin = (PPL_MARGIN if log_scale else LOSS_MARGIN) if margin is None else margin
    x, y = (_logs(a), _logs(b)) if log_scale else (a, b)
    base, other = _paired_raw(x, y)
    v = verdict(base, other, lower_is_better=True, margin=margin, paired=True)
    ours = _diff_text(v, log_scale)
    if v.label == "equivalent" or (v.label in ("better", "worse") and v.within_margin):
        return REPRODUCED, ours, v.text
    if not_worse and v.label == "better":
        return REPRODUCED, ours, v.text
    if v.label in ("better", "worse"):
        return NOT_REPRODUCED, ours, v.text + f" (beyond ±{_margin_text(margin, log_scale)})"
    return INCONCLUSIVE, ours, v.text


def _paired_raw(a: PerSeed, b: PerSeed) -> tuple[list[float], list[float]]:
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _margin_text(margin: float, log_scale: bool) -> str:
    return f"{100 * (math.exp(margin) - 1):.0f}%" if log_scale else f"{margin:g} nats"


def _diff_text(v, log_scale: bool) -> str:
    if v.delta is None:
        return "—"
    if log_scale:
        return _ratio_text(v.delta, v.lo, v.hi)
    if v.lo is None:
        return f"Δ {v.delta:+.4f} (1 seed: no interval)"
    return f"Δ {v.delta:+.4f} [{v.lo:+.4f}, {v.hi:+.4f}]"


# ---------------------------------------------------------------------------------------------------------------
# Extrapolation (ALiBi paper, RoPE-scaling papers)

ALIBI = "Press et al. 2022 (ALiBi), appendix table, WikiText-103, L=512"
YARN = "Peng et al. 2023 (YaRN) Table 1; Chen et al. 2023 (PI); bloc97 2023 (NTK-aware)"


def extrapolation_claims(ppl: Mapping[tuple[str, int], PerSeed], train_len: int) -> list[ClaimResult]:
    """The published extrapolation claims, tested on ``ppl[(position, eval_len)] = {seed: perplexity}``."""
    lens = sorted({L for _, L in ppl})
    longer = [L for L in lens if L > train_len]
    out: list[ClaimResult] = []
    if train_len not in lens or not longer:
        return out
    L2 = min(longer, key=lambda L: abs(L - 2 * train_len))
    L4 = min(longer, key=lambda L: abs(L - 4 * train_len))
    Lmax = max(longer)
    f = lambda L: f"{L // train_len}×" if L % train_len == 0 else f"{L / train_len:.1f}×"  # noqa: E731

    def has(p, *Ls):
        return all(ppl.get((p, L)) for L in Ls)

    def add(claim, source, published, test, result):
        out.append(ClaimResult(claim, source, published, result[1], test, result[0], result[2]))

    if has("sinusoidal", train_len, L2):
        add("Sinusoidal perplexity explodes just past the training length", ALIBI,
            "20.05 → 43.54 at 2× (×2.17)", f"ppl({f(L2)}) / ppl(1×) > 1.5",
            threshold_claim(ppl[("sinusoidal", L2)], ppl[("sinusoidal", train_len)], 1.5, above=True))
    if has("rope", train_len, L4):
        add("Rotary degrades within a few hundred tokens past the training length", ALIBI,
            "20.07 → 21.37 at 2×, 31.58 at 4.9× (×1.57)", f"ppl({f(L4)}) / ppl(1×) > 1.1",
            threshold_claim(ppl[("rope", L4)], ppl[("rope", train_len)], 1.1, above=True))
    if has("t5_bias", train_len, L4) and has("rope", train_len, L4):
        t5 = {s: ppl[("t5_bias", L4)][s] / ppl[("t5_bias", train_len)][s] for s in _common(ppl, "t5_bias", L4, train_len)}
        ro = {s: ppl[("rope", L4)][s] / ppl[("rope", train_len)][s] for s in _common(ppl, "rope", L4, train_len)}
        add("T5 bias degrades more slowly than rotary", ALIBI, "×1.04 vs rotary ×1.57 at 4.9×",
            f"ratio ppl({f(L4)}) / ppl(1×): T5 lower than rotary", better_claim(t5, ro))
    if has("alibi", train_len, Lmax):
        add("ALiBi stays flat (even improves) far past the training length", ALIBI,
            "19.73 → 18.34 at 16.6× (×0.93)", f"ppl({f(Lmax)}) / ppl(1×) < 1.1",
            threshold_claim(ppl[("alibi", Lmax)], ppl[("alibi", train_len)], 1.1, above=False))
    rivals = [p for p in ("sinusoidal", "rope", "t5_bias") if has(p, Lmax)]
    if has("alibi", Lmax) and rivals:
        results = [better_claim(ppl[("alibi", Lmax)], ppl[(p, Lmax)]) for p in rivals]
        verdicts = [r[0] for r in results]
        v = REPRODUCED if all(x == REPRODUCED for x in verdicts) else (
            NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE)
        ours = "; ".join(f"vs {p} {r[1]}" for p, r in zip(rivals, results))
        out.append(ClaimResult("ALiBi has the lowest perplexity at the longest length", ALIBI,
                               "ALiBi 18.34 vs T5 43.08, rotary 54.98, sinusoidal 305.65 at 16.6×",
                               ours, f"ALiBi better than each of {', '.join(rivals)} at {f(Lmax)} (paired)", v,
                               "; ".join(r[2] for r in results)))
    pars = [p for p in ("sinusoidal", "rope", "t5_bias") if has(p, train_len)]
    if has("alibi", train_len) and pars:
        results = [parity_claim(ppl[("alibi", train_len)], ppl[(p, train_len)]) for p in pars]
        verdicts = [r[0] for r in results]
        v = REPRODUCED if all(x == REPRODUCED for x in verdicts) else (
            NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE)
        out.append(ClaimResult("At the training length the position methods are on par", ALIBI,
                               "sinusoidal 20.05, rotary 20.07, T5 19.65, ALiBi 19.73 (within 2%)",
                               "; ".join(f"{p} {r[1]}" for p, r in zip(pars, results)),
                               f"each of {', '.join(pars)} within ±5% of ALiBi at 1×", v,
                               "; ".join(r[2] for r in results)))
    for key, name in (("rope_ntk", "NTK-aware scaling"), ("rope_dynamic_ntk", "Dynamic NTK"), ("rope_yarn", "YaRN")):
        if has(key, Lmax) and has("rope", Lmax):
            add(f"{name} without fine-tuning keeps perplexity lower than plain RoPE past the training length", YARN,
                "far lower than plain RoPE (no table in shared/)", f"{key} better than rope at {f(Lmax)} (paired)",
                better_claim(ppl[(key, Lmax)], ppl[("rope", Lmax)]))
    if has("rope_pi", Lmax) and has("rope_ntk", Lmax):
        add("Position interpolation without fine-tuning hurts: NTK-aware does better", YARN,
            "PI 8.07 vs NTK 6.24 (Llama-2 7B, 4k → 10k tokens)", f"rope_ntk better than rope_pi at {f(Lmax)} (paired)",
            better_claim(ppl[("rope_ntk", Lmax)], ppl[("rope_pi", Lmax)]))
    if has("rope_yarn", Lmax) and has("rope_ntk", Lmax):
        add("YaRN at least matches NTK-aware scaling", YARN, "YaRN 6.04 vs NTK 6.24",
            f"rope_yarn better than or within ±5% of rope_ntk at {f(Lmax)} (paired)",
            parity_claim(ppl[("rope_ntk", Lmax)], ppl[("rope_yarn", Lmax)], not_worse=True))
    return out


def _common(ppl, p: str, L1: int, L0: int) -> list[int]:
    a, b = ppl[(p, L1)], ppl[(p, L0)]
    return sorted(s for s in set(a) & set(b) if _finite(a[s]) and _finite(b[s]))


def claims_frame(results: Sequence[ClaimResult]):
    """The claims as a pandas frame (report table)."""
    import pandas as pd

    return pd.DataFrame([r.as_row() for r in results],
                        columns=["claim", "published", "source", "ours (95% CI)", "test", "verdict", "detail"])
