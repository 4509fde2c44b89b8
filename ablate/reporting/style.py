"""One colour, marker and line style per variant key, the same in every figure of every suite and run (no torch).

The colours are the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), distinguishable with the common
colour-vision deficiencies, without its yellow (unreadable on white): seven colours. Every series also gets a line
style and a marker, so that no two series of one figure look alike, in greyscale too: within one figure the
(colour, line style) pairs differ (up to 7 × 4 = 28 series) and the markers differ (up to 16 series).

    from ablate.reporting.style import styles
    st = styles(["rope", "alibi", "my_plugin_key"])     # one figure's series -> Style(color, marker, linestyle)
    ax.plot(x, y, color=st["rope"].color, marker=st["rope"].marker, ls=st["rope"].linestyle, label="rope")

* Built-in keys come from :data:`KEYS`, a presentation table (names only, in display order per axis): the
  ``i``-th key of an axis gets colour ``i mod 7``, line style ``i div 7`` and marker ``i mod 16`` (the next marker
  when that triple is taken by a key of an earlier axis, or that marker by a key of the same axis), so the same key
  looks the same in the extrapolation, training and latency figures, and the keys of one axis differ in (colour,
  line style) and in marker.
* Any other label (a plugin key, a grid point such as ``original+rope`` or ``norm=layernorm``, a series title) is
  styled by the last built-in key it names (:func:`series_key`: ``modern-swiglu→relu`` → ``relu``), or else by a
  stable hash (crc32). :func:`styles` resolves one figure's labels together: labels that are built-in keys keep
  their style; the others move, deterministically, to the next (colour, line style) pair free in that figure (a
  least-used colour first) and the next marker free in it. Compute it once per report and pass it to every figure.
* :data:`LINESTYLE_NAMES` names the line styles for a legend that explains them (:func:`linestyle_note`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["PALETTE", "MARKERS", "LINESTYLES", "LINESTYLE_NAMES", "KEYS", "Style", "order", "style", "styles",
           "colors", "markers", "series_key", "BAND_CI", "BAND_P20_P80", "band_note", "contrast_on_white",
           "plain_log_ticks", "linestyle_note"]

# Okabe–Ito without yellow, in the order used (black last: reference lines and the Pareto front are grey/black).
PALETTE: tuple[str, ...] = ("#0072B2",  # blue
                            "#E69F00",  # orange
                            "#009E73",  # bluish green
                            "#D55E00",  # vermillion
                            "#CC79A7",  # reddish purple
                            "#56B4E9",  # sky blue
                            "#000000")  # black
# Sixteen filled markers (with seven colours: every (colour, marker) pair of the first 112 slots differs).
# The round-looking ones (pentagon, hexagons) last: at 4 pt they pass for a circle.
MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "d", "x", "+", "p", "h", "H")
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
LINESTYLE_NAMES: dict[str, str] = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}

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
    linestyle: str = "-"


_NC, _NL, _NM = len(PALETTE), len(LINESTYLES), len(MARKERS)


def _builtin_table() -> dict[str, tuple[int, int, int]]:
    """Key → (colour, line style, marker) indices: the ``i``-th key of an axis gets colour ``i mod 7``, line style
    ``i div 7`` and marker ``i mod 16``, or the next marker whose triple no earlier key of the table holds and that
    no earlier key of the same axis has: no two built-in keys look alike, whatever their axes, and the keys of one
    axis differ in marker."""
    table: dict[str, tuple[int, int, int]] = {}
    used: set[tuple[int, int, int]] = set()
    for keys in KEYS.values():
        axis_marks: set[int] = set()
        for i, key in enumerate(keys):
            if key in table:  # a name on two axes keeps its first place
                continue
            c, ls = i % _NC, (i // _NC) % _NL
            ring = [(i + j) % _NM for j in range(_NM)]
            m = next((k for k in ring if (c, ls, k) not in used and k not in axis_marks),
                     next(k for k in ring if (c, ls, k) not in used))
            used.add((c, ls, m))
            axis_marks.add(m)
            table[key] = (c, ls, m)
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


def _triple(label: str) -> tuple[int, int, int]:
    key = series_key(label)
    if key in _TABLE:
        return _TABLE[key]
    h = zlib.crc32(key.encode("utf-8"))
    return h % _NC, (h // _NC) % _NL, (h // (_NC * _NL)) % _NM


def _make(t: tuple[int, int, int]) -> Style:
    return Style(PALETTE[t[0]], MARKERS[t[2]], LINESTYLES[t[1]])


def style(label: str) -> Style:
    """The style of one label on its own (see :func:`styles` for a figure's labels together)."""
    return _make(_triple(label))


def styles(labels: Iterable[str]) -> dict[str, Style]:
    """One distinct style per label of one figure, deterministic: built-in keys keep their own, and so does a series
    of a built-in key (``original+rope``: ``rope``'s) when no other label of the figure has its (colour, line style)
    pair; every other label (in the order given) takes the first (colour, line style) pair free in this figure of a
    least-used colour, of the lowest line style, from its own colour (its key's, or its hash's) on; its marker
    likewise, its own or the next one free in this figure."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    out: dict[str, tuple[int, int, int]] = {}
    for lab in labels:  # exact built-in keys first: they never move
        if lab in _TABLE:
            out[lab] = _TABLE[lab]
    pairs = {(t[0], t[1]) for t in out.values()}
    marks = {t[2] for t in out.values()}
    ring = [(i % _NC, (i // _NC) % _NL) for i in range(_NC * _NL)]
    for lab in labels:
        if lab in out:
            continue
        c, ls, m = _triple(lab)
        if series_key(lab) in _TABLE and (c, ls) not in pairs:  # a series of a key looks like that key
            out[lab] = (c, ls, m)
            pairs.add((c, ls))
            marks.add(m)
            continue
        count = {k: sum(1 for p in pairs if p[0] == k) for k in range(_NC)}
        least = min(count.values())
        start = ring.index((c, 0))
        free = [ring[(start + j) % len(ring)] for j in range(len(ring))]
        free = [p for p in free if p not in pairs and count[p[0]] == least] or [(c, ls)]
        low = min(p[1] for p in free)  # solid lines first
        c, ls = next(p for p in free if p[1] == low)
        m = next(((m + j) % _NM for j in range(_NM) if (m + j) % _NM not in marks), m)
        out[lab] = (c, ls, m)
        pairs.add((c, ls))
        marks.add(m)
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


def linestyle_note(meaning: dict[str, str]) -> str:
    """``solid: trained; dashed: scaled at inference`` for a legend title: what each line style in a figure means
    (``meaning``: line style (``-``, ``--``, ...) → its meaning)."""
    return "; ".join(f"{LINESTYLE_NAMES.get(ls, ls)}: {what}" for ls, what in meaning.items())


def contrast_on_white(color: str) -> float:
    """WCAG 2 contrast ratio of ``color`` (``#RRGGBB``) against white: 1 (invisible) to 21 (black)."""
    rgb = [int(color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return 1.05 / (lum + 0.05)


def plain_log_ticks(ax, which: str = "y") -> None:
    """Tick labels of a log axis as plain numbers (``30``, ``60``, ``0.5``), never ``3×10¹``: 1-2-5 major ticks
    when the axis spans a decade or more, else every integer multiple (a narrow range still gets ticks)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = (ax.get_ylim() if which == "y" else ax.get_xlim())
    wide = lo > 0 and hi / lo >= 10
    subs = (1.0, 2.0, 5.0) if wide else tuple(float(k) for k in range(1, 10))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


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
    then steps further up and down, then sideways too (with a thin leader line when it had to move, kept clear of
    the other labels where any spot allows); inside the axes when it can. Every label is drawn: one that finds no
    free spot at all goes to its last spot tried (then :func:`overlapping_texts` reports it). Deterministic. Call it once the axes limits and the figure layout are
    final (it freezes the limits)."""
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
    wide = [(sgn * (4 + j * 6 * fontsize), dy + sgn_y * k * step, ha, va) for j in range(1, 8) for k in range(0, 12)
            for sgn_y in (1, -1) for sgn, (dx, dy, ha, va) in ((1, spots[0]), (-1, spots[2]))]

    leaders: list[tuple[Any, Any]] = []  # the leader lines drawn so far, as (point, end at its label)

    def fits(box, inside: bool, i: int, leader, strict: bool) -> bool:
        if inside and not (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1):
            return False
        if inside and any(box.overlaps(m) for j, m in enumerate(marks) if j != i):
            return False
        if any(box.overlaps(p) for p in placed):
            return False
        if not strict:  # no spot anywhere keeps the leader lines clear of other labels: the labels still apart
            return True
        return not any(crosses(a, b, box) for a, b in leaders) and (
            leader is None or not any(crosses(*leader, p) for p in placed))

    scale = fig.dpi / 72.0

    def box_at(i: int, size, dx: float, dy: float, ha: str, va: str):
        """The label's box at this spot: its glyph box, measured once, moved (as matplotlib aligns it)."""
        w, h = size
        x, y = pts[i][0] + dx * scale, pts[i][1] + dy * scale
        return Bbox.from_bounds(x - w if ha == "right" else x, y - h if va == "top" else y, w, h)

    out = []
    for i in order:
        t = ax.annotate(str(labels[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(0, 0), ha="left",
                        va="bottom", fontsize=fontsize, annotation_clip=False, **kw)
        size = (lambda b: (b.width, b.height))(_extent(t, renderer))
        t.remove()
        chosen = None
        for inside, candidates, strict in ((True, tries, True), (False, tries, True), (False, wide, True),
                                           (True, tries, False), (False, tries + wide, False)):
            for dx, dy, ha, va in candidates:
                box = box_at(i, size, dx, dy, ha, va)
                chosen = (dx, dy, ha, va, box)
                if fits(box, inside, i, leader_of(pts[i], box) if abs(dy) > 3 or abs(dx) > 4 else None, strict):
                    break
            else:
                continue
            break
        dx, dy, ha, va, box = chosen  # type: ignore[misc]
        arrow = {"arrowprops": {"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}} \
            if abs(dy) > 3 or abs(dx) > 4 else {}
        out.append(ax.annotate(str(labels[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy), ha=ha,
                               va=va, fontsize=fontsize, annotation_clip=False, **arrow, **kw))
        placed.append(box)
        if arrow:
            leaders.append(leader_of(pts[i], box))
    return out


def leader_of(point, box) -> tuple[Any, Any]:
    """A leader line from ``point`` (display coordinates) towards the centre of a label's ``box``, as matplotlib
    draws an annotation's arrow (the part inside the label's own box is hidden by it)."""
    return (point[0], point[1]), ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)


def crosses(a, b, box) -> bool:
    """Whether the segment ``a``-``b`` (display coordinates) runs through the inside of ``box`` (Liang-Barsky
    clipping: exact, however thin the box)."""
    t0, t1 = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - box.x0), (dx, box.x1 - a[0]), (-dy, a[1] - box.y0), (dy, box.y1 - a[1])):
        if p == 0:
            if q <= 0:
                return False
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 >= t1:
            return False
    return True
