"""StreamingLLM's claim both the extrapolation suite (the streaming evaluation's caches) and the latency suite (the
``stream`` part) compute from exact byte counts (torch-free)."""

from __future__ import annotations

from typing import Mapping, Sequence

from ablate.analysis.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

__all__ = ["flat_memory"]


def flat_memory(kept: Mapping[int, Sequence[int]], dense: Mapping[int, Sequence[int]],
                label: str = "sinks") -> tuple[str, str]:
    """StreamingLLM's "memory stays flat with length" from exact byte counts: ``(verdict, detail)``. ``kept``:
    stream length -> the evicting cache's bytes (one per row), ``dense``: the same for the cache that evicts nothing.
    *Reproduced* when the evicting cache holds the same bytes at every length and the dense one grows (or there is
    no dense row to contrast, which the detail says); *not reproduced* when the evicting cache's bytes change;
    *inconclusive* when they are flat but the dense cache does not grow either. ``label`` names the kept cache."""
    flat = len({b for v in kept.values() for b in v}) == 1
    grows = len(dense) >= 2 and max(dense[max(dense)]) > max(dense[min(dense)])
    verdict = REPRODUCED if flat and (grows or not dense) else NOT_REPRODUCED if not flat else INCONCLUSIVE
    detail = (f"{label} cache bytes " + ("identical at every length" if flat else "change with length")
              + ("; dense grows with length" if grows else "; dense does not grow" if dense
                 else "; no dense rows to contrast"))
    return verdict, detail
