"""The numbers a setting may take: :class:`Range` (bounds, open or closed; non-empty tuples) and the common ones
(``POS``, ``NONNEG``, ``ONE_PLUS``, ``SEED``). The table of which setting takes which is
:data:`ablate.core.config.RANGES`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INT64", "Range", "gt", "ge", "between", "POS", "NONNEG", "ONE_PLUS", "SEED"]

INT64 = 2 ** 63


@dataclass(frozen=True)
class Range:
    """Allowed values of a number (each element of a tuple): ``lo``/``hi`` bounds, open or closed; ``nonempty``
    (tuples): at least one value. ``None`` is always allowed for an optional field (it means "the default")."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nonempty: bool = False

    def ok(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def describe(self) -> str:
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return ""


def _fmt(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else repr(x))


def gt(x: float) -> Range:
    return Range(lo=x, lo_open=True)


def ge(x: float, *, nonempty: bool = False) -> Range:
    return Range(lo=x, nonempty=nonempty)


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, nonempty: bool = False) -> Range:
    return Range(lo, hi, lo_open, hi_open, nonempty)


POS, NONNEG, ONE_PLUS = gt(0), ge(0), ge(1)
SEED = between(0, 2 ** 32 - 1)  # numpy's and torch's generators all take it
