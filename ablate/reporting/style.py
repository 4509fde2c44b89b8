"""One colour and one marker per variant key, the same in every figure of every suite and run (no torch).

The colours are the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), eight colours distinguishable
with the common colour-vision deficiencies; every series also gets a marker, so two series that share a colour
(more than eight in one figure) still differ, in greyscale too.

    from ablate.reporting.style import styles
    st = styles(["rope", "alibi", "my_plugin_key"])     # one figure's series -> Style(color, marker)
    ax.plot(x, y, color=st["rope"].color, marker=st["rope"].marker, label="rope")

* Built-in keys come from :data:`KEYS`, a presentation table (names only, in display order per axis): the
  ``i``-th key of an axis gets colour ``i mod 8`` and a marker that makes its (colour, marker) pair unique over the
  whole table, so the same key looks the same in the extrapolation, training and latency figures, and the keys of
  one axis differ in colour (up to eight). This module does not load the variant registries (reporting stays torch-free);
  ``tests/reporting/test_style.py`` checks that every registered key is in the table.
* Any other label (a plugin key, a grid point such as ``original+rope`` or ``norm=layernorm``, a series title) is
  styled by the last built-in key it names (:func:`series_key`: ``modern-swiglu→relu`` → ``relu``), or else by a
  stable hash (crc32) of the label into the colour × marker pairs. :func:`styles` resolves one figure's labels
  together: labels that are built-in keys keep their pair; the others move, deterministically, to the next pair
  of a colour not used in that figure (up to eight series; then of a least-used colour), so no two series of one
  figure look alike. Compute it once per report and pass it to every figure of that report.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Iterable

__all__ = ["PALETTE", "MARKERS", "KEYS", "Style", "order", "style", "styles", "colors", "markers", "series_key",
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
                 "rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn", "rope_pi_temp", "rope_ntk_temp",
                 "rope_yarn_notemp"),
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
    """Key → (colour index, marker index): the ``i``-th key of an axis gets colour ``i mod 8`` (so every axis starts
    on the strongest colours) and marker ``i mod 9``, or the next marker whose pair no earlier key of the table
    holds: no two built-in keys look alike, whatever their axes."""
    table: dict[str, tuple[int, int]] = {}
    used: set[tuple[int, int]] = set()
    for keys in KEYS.values():
        for i, key in enumerate(keys):
            if key in table:  # a name on two axes keeps its first place
                continue
            c = i % len(PALETTE)
            m = next((i + j) % len(MARKERS) for j in range(len(MARKERS)) if (c, (i + j) % len(MARKERS)) not in used)
            used.add((c, m))
            table[key] = (c, m)
    return table


_TABLE = _builtin_table()
_SPLIT = re.compile(r"[\s=+→,;:/|()\[\]<>-]+")


def order(axis: str, keys: Iterable[str]) -> list[str]:
    """``keys`` (deduplicated) in the display order of :data:`KEYS` for ``axis``, then the keys it does not name
    (plugins, new built-ins) sorted: the one row order every report's tables and legends use, without loading the
    registries."""
    keys = list(dict.fromkeys(str(k) for k in keys))
    named = KEYS.get(axis, ())
    return [k for k in named if k in keys] + sorted(k for k in keys if k not in named)


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
    (in the order given) takes its own pair (its key's, or its hash's) when its colour is among the least used in
    this figure so far (unused, up to eight series), else the next free pair of such a colour."""
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
        count = {c: sum(1 for u in used if u[0] == c) for c in range(len(PALETTE))}
        least = min(count.values())
        pick = next((p for p in ring if p not in used and count[p[0]] == least), want)
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


# ---------------------------------------------------------------------------------------------------------------
# Text that must not overlap (matplotlib imported lazily: the styles above need none)


def _extent(artist, renderer):
    """The box of a text's glyphs (an annotation's leader line left out)."""
    from matplotlib.text import Annotation, Text

    if isinstance(artist, Annotation):
        artist.update_positions(renderer)  # where the text sits now (offset points from its point)
    return Text.get_window_extent(artist, renderer) if isinstance(artist, Text) else artist.get_window_extent(renderer)


def figure_texts(fig) -> list:
    """The visible texts a reader must tell apart: every axes' texts and annotations, legend entries and titles,
    figure texts and the suptitle (tick labels are laid out by matplotlib itself)."""
    out = []
    legends = list(fig.legends)
    for ax in fig.axes:
        out += [t for t in ax.texts if t.get_visible() and t.get_text().strip()]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for leg in legends:
        if leg.get_visible():
            out += [t for t in leg.get_texts() if t.get_text().strip()]
            if leg.get_title().get_text().strip():
                out.append(leg.get_title())
    out += [t for t in fig.texts if t.get_visible() and t.get_text().strip()]
    return out


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of :func:`figure_texts` whose rendered boxes intersect (empty when every label is readable)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = figure_texts(fig)
    boxes = [(t.get_text(), _extent(t, renderer)) for t in texts]
    pairs = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            if ba.width > 0 and bb.width > 0 and ba.overlaps(bb):
                pairs.append((a, b))
    return pairs


def annotate_points(ax, xs, ys, labels, *, fontsize: float = 6.5, avoid=(), marker_radius: float = 4.0,
                    **kw) -> list:
    """Label the points ``(xs[i], ys[i])`` with ``labels[i]`` so that no two labels overlap (nor the texts in
    ``avoid``), and, where there is room, none covers another point's marker (``marker_radius`` points): each
    label tries, in order, the spots right-above, right-below, left-above and left-below its point,
    then steps further up and down (with a thin leader line when it had to move); inside the axes when it can.
    Deterministic. Call it once the axes limits and the figure layout are final (it freezes the limits)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    from matplotlib.transforms import Bbox

    placed = [_extent(t, renderer) for t in avoid]
    frame = ax.get_window_extent(renderer)
    pts = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    r = marker_radius * fig.dpi / 72.0
    marks = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    order = sorted(range(len(labels)), key=lambda i: (-pts[i][1], pts[i][0], str(labels[i])))
    spots = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top")]
    step = fontsize * 1.3
    tries = spots + [(dx, dy + sgn * k * step, ha, va) for k in range(1, 30) for sgn in (1, -1)
                     for dx, dy, ha, va in (spots[0], spots[2])]

    def fits(box, inside: bool, i: int) -> bool:
        if inside and not (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1):
            return False
        if inside and any(box.overlaps(m) for j, m in enumerate(marks) if j != i):
            return False
        return not any(box.overlaps(p) for p in placed)

    out = []
    for i in order:
        chosen = None
        for inside in (True, False):
            for dx, dy, ha, va in tries:
                t = ax.annotate(str(labels[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy),
                                ha=ha, va=va, fontsize=fontsize, annotation_clip=False, **kw)
                box = _extent(t, renderer)
                t.remove()
                if fits(box, inside, i):
                    chosen = (dx, dy, ha, va, box)
                    break
            if chosen:
                break
        if chosen is None:
            continue
        dx, dy, ha, va, box = chosen
        arrow = {"arrowprops": {"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}} \
            if abs(dy) > 3 else {}
        out.append(ax.annotate(str(labels[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy), ha=ha,
                               va=va, fontsize=fontsize, annotation_clip=False, **arrow, **kw))
        placed.append(box)
    return out
