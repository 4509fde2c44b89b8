"""One colour and one marker per variant key, the same in every figure of every suite and run (no torch).

The colours are the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), eight colours distinguishable
with the common colour-vision deficiencies; every series also gets a marker, so two series that share a colour
(more than eight in one figure) still differ, in greyscale too.

    from ablate.style import styles
    st = styles(["rope", "alibi", "my_plugin_key"])     # one figure's series -> Style(color, marker)
    ax.plot(x, y, color=st["rope"].color, marker=st["rope"].marker, label="rope")

* Built-in keys come from :data:`KEYS`, a presentation table (names only, in display order per axis): the
  ``g``-th key of the table gets colour ``g mod 8`` and marker ``g mod 9``, a pair no other key has, so the same
  key looks the same in the extrapolation, training and latency figures, and neighbours on an axis differ in
  colour. This module does not load the variant registries (reporting stays torch-free);
  ``tests/test_style.py`` checks that every registered key is in the table.
* Any other label (a plugin key, a grid point such as ``original+rope`` or ``norm=layernorm``, a series title) is
  styled by the last built-in key it names (:func:`series_key`: ``modern-swiglu→relu`` → ``relu``), or else by a
  stable hash (crc32) of the label into the colour × marker pairs. :func:`styles` resolves one figure's labels
  together: labels that are built-in keys keep their pair; the others move, deterministically, to the next pair
  of a colour not used in that figure (up to eight series, then any unused pair), so no two series of one figure
  look alike. Compute it once per report and pass it to every figure of that report.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Iterable

__all__ = ["PALETTE", "MARKERS", "KEYS", "Style", "style", "styles", "colors", "markers", "series_key",
           "BAND_CI", "BAND_P20_P80", "band_note"]

# Okabe–Ito, in the order used (black last: reference lines and the Pareto front are drawn in black/grey).
PALETTE: tuple[str, ...] = ("#0072B2",  # blue
                            "#E69F00",  # orange
                            "#009E73",  # bluish green
                            "#D55E00",  # vermillion
                            "#CC79A7",  # reddish purple
                            "#56B4E9",  # sky blue
                            "#F0E442",  # yellow
                            "#000000")  # black
# Nine markers (coprime with eight colours: 72 distinct pairs).
MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v", "P", "X", "p", "*")

# The built-in keys per axis, in display order. A presentation table of names (no behaviour hangs on it): a key
# missing here is still drawn, by the hash fallback.
KEYS: dict[str, tuple[str, ...]] = {
    "position": ("none", "sinusoidal", "learned", "rope", "alibi", "t5_bias",
                 "rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn"),
    "attention": ("sdpa", "naive", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "flash_attn",
                  "xformers", "flex", "sliding_window", "linear"),
    "norm": ("layernorm", "rmsnorm"),
    "activation": ("relu", "gelu", "silu", "relu2", "swiglu", "geglu", "reglu"),
    "layout": ("mha", "gqa", "mqa"),
    "norm_placement": ("prenorm", "postnorm"),
}

BAND_CI = "95% CI (t-interval over seeds)"
BAND_P20_P80 = "p20–p80 over repeats"


@dataclass(frozen=True)
class Style:
    color: str
    marker: str


_PAIRS: tuple[tuple[int, int], ...] = tuple((i % len(PALETTE), i % len(MARKERS))
                                            for i in range(len(PALETTE) * len(MARKERS)))


def _builtin_table() -> dict[str, tuple[int, int]]:
    """Key → (colour index, marker index): the ``g``-th key of the whole table (axes in order, each in display
    order) gets colour ``g mod 8`` and marker ``g mod 9``: consecutive keys of an axis differ in colour, the axes
    start on different colours, and no two keys share a pair (72 pairs)."""
    table: dict[str, tuple[int, int]] = {}
    for key in dict.fromkeys(k for keys in KEYS.values() for k in keys):  # a name on two axes: its first place
        g = len(table)
        table[key] = (g % len(PALETTE), g % len(MARKERS))
    return table


_TABLE = _builtin_table()
_SPLIT = re.compile(r"[\s=+→,;:/|()\[\]<>-]+")


def series_key(label: str) -> str:
    """The built-in key a series label is styled by: the label itself when it is one, else the last built-in key
    among its parts (``original+rope`` → ``rope``, ``modern-swiglu→relu`` → ``relu``, ``norm=layernorm`` →
    ``layernorm``), else the label unchanged (styled by its hash)."""
    label = str(label)
    if label in _TABLE:
        return label
    parts = [p for p in _SPLIT.split(label) if p in _TABLE]
    return parts[-1] if parts else label


def _pair(label: str) -> tuple[int, int]:
    key = series_key(label)
    if key in _TABLE:
        return _TABLE[key]
    return _PAIRS[zlib.crc32(key.encode("utf-8")) % len(_PAIRS)]


def _make(pair: tuple[int, int]) -> Style:
    return Style(PALETTE[pair[0]], MARKERS[pair[1]])


def style(label: str) -> Style:
    """The style of one label on its own (see :func:`styles` for a figure's labels together)."""
    return _make(_pair(label))


def styles(labels: Iterable[str]) -> dict[str, Style]:
    """One distinct style per label of one figure, deterministic: built-in keys keep their own; every other label
    (in the order given) takes its own pair (its key's, or its hash's) when neither the pair nor its colour is taken
    in this figure, else the next pair of an unused colour, else (more than eight series) the next unused pair."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    out: dict[str, tuple[int, int]] = {}
    used: set[tuple[int, int]] = set()
    for lab in labels:  # exact built-in keys first: they never move
        if lab in _TABLE:
            out[lab] = _TABLE[lab]
            used.add(out[lab])
    for lab in labels:
        if lab in out:
            continue
        want = _pair(lab)
        start = _PAIRS.index(want)
        ring = [_PAIRS[(start + j) % len(_PAIRS)] for j in range(len(_PAIRS))]
        colours = {c for c, _ in used}
        pick = (next((p for p in ring if p not in used and p[0] not in colours), None)
                or next((p for p in ring if p not in used), want))
        out[lab] = pick
        used.add(pick)
    return {lab: _make(out[lab]) for lab in labels}


def colors(labels: Iterable[str]) -> dict[str, str]:
    """Label → colour for one figure (:func:`styles`)."""
    return {k: s.color for k, s in styles(labels).items()}


def markers(labels: Iterable[str]) -> dict[str, str]:
    """Label → marker for one figure (:func:`styles`)."""
    return {k: s.marker for k, s in styles(labels).items()}


def band_note(n_min: int, n_max: int | None = None, *, what: str = BAND_CI, unit: str = "seed") -> str:
    """The band wording for a legend, title or caption: ``band: 95% CI ... (n=3)``; ``n=1 seed, no band`` when no
    curve has more than one ``unit``."""
    n_max = n_min if n_max is None else n_max
    n = f"n={n_min}" if n_min == n_max else f"n={n_min}–{n_max}"
    if n_max <= 1:
        return f"{n} {unit}, no band"
    return f"band: {what}, {n} {unit}s"
