"""Pareto fronts of two metrics (speed against quality in the suites' figures)."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["pareto_front"]


def pareto_front(x: Sequence[float | None], y: Sequence[float | None], *, x_better: str = "high",
                 y_better: str = "low") -> list[bool]:
    """Which points are Pareto-optimal: no other point is at least as good on both axes and better on one.

    ``x_better`` / ``y_better``: ``"high"`` or ``"low"``. Points with a missing or non-finite coordinate are never
    on the front. Duplicated optimal points are all on the front.
    """
    for name, v in (("x_better", x_better), ("y_better", y_better)):
        if v not in ("high", "low"):
            raise ValueError(f"{name} must be 'high' or 'low', got {v!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    sx = 1.0 if x_better == "low" else -1.0
    sy = 1.0 if y_better == "low" else -1.0
    pts: list[tuple[float, float] | None] = []
    for a, b in zip(x, y):
        ok = a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
        pts.append((sx * float(a), sy * float(b)) if ok else None)  # now both "lower is better"
    out = []
    for i, p in enumerate(pts):
        if p is None:
            out.append(False)
            continue
        dominated = any(q is not None and j != i and q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])
                        for j, q in enumerate(pts))
        out.append(not dominated)
    return out
