"""Intervals that cover both sources of variation in a language-model comparison: the training seed and the text.

A contrast between measurements (a difference of log-perplexities, a ratio of ratios) is known per seed ``s`` and
per held-out document ``d`` (:mod:`ablate.core.evalset`): an ``S x D`` matrix ``y`` whose grand mean is the estimate.
Seeds and documents are *crossed* (every seed scores every document), so the estimate varies with both. The model is
the two-way random-effects model ``y_sd = mu + a_s + b_d + e_sd`` (seed effects ``a``, document effects ``b``,
interaction ``e``), for which

    Var(mean) = s_a^2 / S + s_b^2 / D + s_e^2 / (S D)

and the ANOVA mean squares ``MS_seed = D * var(row means)``, ``MS_doc = S * var(column means)``, ``MS_res`` (the
residual after both) have expectations ``s_e^2 + D s_a^2``, ``s_e^2 + S s_b^2`` and ``s_e^2``. Hence the unbiased
estimate ``Var(mean) = (MS_seed + MS_doc - MS_res) / (S D)``; a variance component estimated negative is set to zero
(its mean square then drops out), and the degrees of freedom of the t quantile come from Satterthwaite's formula for
the linear combination of mean squares actually used. With three seeds and a large seed effect this is the paired
t-interval over seeds (2 degrees of freedom); when documents dominate, it has many more.

Token-weighted statistics enter through their linearisation: a loss difference summed per document, divided by the
mean document length, has the token-weighted difference as its plain mean (:func:`weighted_matrix`).

Fallbacks: one document (or rows without per-document losses) — the t-interval over seeds; one seed — no interval
(the training variance is unknown; a verdict needs two seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ablate.analysis.stats import summarize, t_cdf, t_ppf

__all__ = ["Estimate", "crossed_estimate", "seed_estimate", "weighted_matrix", "holm"]


@dataclass(frozen=True)
class Estimate:
    """A mean contrast with its standard error and (Satterthwaite) degrees of freedom."""

    delta: float
    se: float | None  # None: no interval (one seed)
    df: float | None
    seeds: int
    units: int  # documents resampled in the interval (1: seeds only)
    method: str  # "seeds x documents" | "seeds" | "none"

    def interval(self, alpha: float = 0.05) -> tuple[float | None, float | None]:
        """Two-sided ``1 - alpha`` t-interval (``(None, None)`` without one)."""
        if self.se is None or self.df is None:
            return None, None
        hw = t_ppf(1.0 - alpha / 2.0, self.df) * self.se
        return self.delta - hw, self.delta + hw

    def p_above(self, t0: float) -> float:
        """One-sided p-value for ``delta > t0`` (H0: ``delta <= t0``); 1.0 without an interval."""
        if self.se is None or self.df is None:
            return 1.0
        if self.se == 0.0:
            return 0.0 if self.delta > t0 else 1.0
        return 1.0 - t_cdf((self.delta - t0) / self.se, self.df)

    def p_below(self, t0: float) -> float:
        """One-sided p-value for ``delta < t0``."""
        if self.se is None or self.df is None:
            return 1.0
        if self.se == 0.0:
            return 0.0 if self.delta < t0 else 1.0
        return t_cdf((self.delta - t0) / self.se, self.df)

    def detectable(self, alpha: float = 0.05, power: float = 0.8) -> float | None:
        """The smallest true difference a two-sided test at ``alpha`` detects with ``power`` at this standard error:
        ``(t_{1-alpha/2} + t_{power}) * se``."""
        if self.se is None or self.df is None:
            return None
        return (t_ppf(1.0 - alpha / 2.0, self.df) + t_ppf(power, self.df)) * self.se

    @property
    def what(self) -> str:
        """The interval's sources of variation, for captions: ``"3 seeds x 31 documents"``."""
        if self.method == "seeds x documents":
            return f"{self.seeds} seeds × {self.units} documents"
        return f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"


def seed_estimate(values) -> Estimate:
    """The one-sample t-estimate over per-seed values (text held fixed; :func:`ablate.analysis.stats.summarize`)."""
    s = summarize(values)
    if s.n == 0:
        return Estimate(float("nan"), None, None, 0, 0, "none")
    if s.n < 2:
        return Estimate(s.mean, None, None, 1, 1, "none")
    return Estimate(s.mean, s.sem, s.n - 1, s.n, 1, "seeds")


def crossed_estimate(y) -> Estimate:
    """The grand mean of ``y`` (seeds x documents) with the two-way random-effects standard error (module doc)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.size == 0 or not np.isfinite(y).all():
        raise ValueError(f"need a finite 2-D seeds x documents matrix, got shape {y.shape}")
    S, D = y.shape
    if D == 1:
        return seed_estimate(y[:, 0])
    mean = float(y.mean())
    if S == 1:
        return Estimate(mean, None, None, 1, D, "none")
    rows, cols = y.mean(1), y.mean(0)
    ms_seed = D * float(((rows - mean) ** 2).sum()) / (S - 1)
    ms_doc = S * float(((cols - mean) ** 2).sum()) / (D - 1)
    resid = y - rows[:, None] - cols[None, :] + mean
    df_res = (S - 1) * (D - 1)
    ms_res = float((resid ** 2).sum()) / df_res
    # Var(mean) * S * D = sum of c_k * MS_k over the components kept (a component estimated <= 0 drops out).
    keep_seed, keep_doc = ms_seed > ms_res, ms_doc > ms_res
    terms = [(1.0 if keep_seed else 0.0, ms_seed, S - 1), (1.0 if keep_doc else 0.0, ms_doc, D - 1),
             (1.0 - keep_seed - keep_doc, ms_res, df_res)]
    total = sum(c * m for c, m, _ in terms)
    if total <= 0.0:
        return Estimate(mean, 0.0, float(df_res), S, D, "seeds x documents")
    denom = sum((c * m) ** 2 / d for c, m, d in terms if c != 0.0)  # Satterthwaite
    df = total ** 2 / denom if denom > 0 else float(df_res)
    return Estimate(mean, math.sqrt(total / (S * D)), df, S, D, "seeds x documents")


def weighted_matrix(unit_sums, unit_tokens) -> np.ndarray:
    """Seeds x documents matrix whose plain mean is the token-weighted mean per seed: ``sums / mean(tokens)``."""
    sums = np.asarray(unit_sums, dtype=np.float64)
    tokens = np.asarray(unit_tokens, dtype=np.float64)
    return sums / float(tokens.mean())


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): controls the family-wise error rate."""
    p = [float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj
