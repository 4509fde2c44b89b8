"""The latency report's figures (matplotlib; no torch). One colour and marker per kernel / layout key, the same as in
every other suite's figures (:mod:`ablate.reporting.style`); each line is the median over repeats with its p20–p80 band
(none with one repeat; the legend title says which)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ablate.reporting.style import BAND_P20_P80, Style, band_note, linestyle_note, styles
from ablate.reporting.tables import figure, plot_style, savefig
from ablate.reporting.tables import pyplot as plt

from .constants import DECODE_MODES, LAYOUTS, STREAM_MODES
from .tables import MIB, column_or, attention_order, numeric_column, softmax_rows



def _log2_lengths(ax, lengths) -> None:
    ax.set_xscale("log", base=2)
    lengths = sorted({int(x) for x in lengths if x == x})
    if lengths:
        ax.set_xticks(lengths)
        ax.set_xticklabels([f"{x // 1024}k" if x >= 1024 and x % 1024 == 0 else str(x) for x in lengths],
                           fontsize=7)
        ax.minorticks_off()


def _log_y(ax) -> None:
    """Log y axis with readable 1-2-5 tick labels (plain numbers, not powers of ten)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _palette(keys: list[str]) -> dict[str, Style]:
    return styles(keys)


def _reps(d) -> list[int]:
    r = numeric_column(d, "reps")
    return [int(x) for x in r if x == x] or [1]


def _band_title(d) -> str:
    reps = _reps(d)
    return band_note(min(reps), max(reps), what=BAND_P20_P80.replace(" over repeats", ""), unit="repeat")


def _line(ax, sub, x: str, y: str, st: Style, *, lo: str | None = None, hi: str | None = None, ls: str | None = None,
          label: str | None = None, grid=None, **kw) -> None:
    """One series: the median over duplicate rows at each x, and the p20–p80 band (``lo``/``hi`` columns) when the
    rows were timed more than once. ``grid``: every x of the panel; the line breaks at those this series did not
    measure (never drawn straight across them). ``ls``: the line style (default: the key's)."""
    g = sub.groupby(x, sort=True)
    m = g[y].median()
    if grid is not None:
        m = m.reindex(sorted(set(grid) | set(m.index)))
    ax.plot(m.index, m.values, color=st.color, marker=st.marker, ms=4, lw=1.4, ls=ls or st.linestyle, label=label,
            **kw)
    if lo and hi and int(numeric_column(sub, "reps").fillna(1).max()) > 1:
        a, b = g[lo].median().reindex(m.index), g[hi].median().reindex(m.index)
        ok = np.isfinite(a.values) & np.isfinite(b.values)
        if ok.any():
            ax.fill_between(m.index, np.where(ok, a.values, np.nan), np.where(ok, b.values, np.nan), color=st.color,
                            alpha=0.15, lw=0)


def _not_measured(ax, rows, pal: dict, x: str = "seq_len") -> int:
    """Mark the lengths a kernel did not measure (OOM, unsupported, ...) on the axes' bottom edge: a × in the
    kernel's colour and the status beside it, never as a value on the y scale. Returns how many were marked."""
    from matplotlib.transforms import blended_transform_factory

    tr = blended_transform_factory(ax.transData, ax.transAxes)
    n = 0
    for i, (a, g) in enumerate(rows.groupby("attention", sort=True)):
        xs = sorted(set(g[x]))
        status = "/".join(sorted({str(v) for v in g["status"]}))
        y = 0.04 + 0.06 * (i % 5)
        ax.plot(xs, [y] * len(xs), transform=tr, marker="x", ls="none", color=pal[a].color if a in pal else "k",
                ms=5, clip_on=False, label="_nolegend_")
        ax.annotate(f"{a}: {status}", (xs[0], y), xycoords=tr, xytext=(-4, 0), textcoords="offset points",
                    fontsize=5.5, va="center", ha="right", color="0.25")
        n += len(xs)
    return n


@figure
def fig_tflops(k, pas: str, stem: Path) -> list[Path]:
    """TFLOP/s vs sequence length per kernel, one panel per head dim x causal (FlashAttention-paper style)."""
    k = softmax_rows(k)
    ok = k[(k["status"] == "ok") & (column_or(k, "group") == "main") & (k["pass"] == pas) & k["tflops"].notna()]
    failed = k[(k["status"] != "ok") & (column_or(k, "group") == "main") & (k["pass"] == pas)]
    gaps = 0
    if ok.empty:
        return []
    ok = ok.assign(mask=ok["causal"].map(lambda v: "causal" if v else "non-causal"),
                   hd=ok["head_dim"].map(lambda v: f"head dim {int(v)}"))
    unit, scale = ("TFLOP/s", 1.0) if ok["tflops"].max() >= 1 else ("GFLOP/s", 1e3)  # CPU numbers are small
    # the rate at the p80 time is the band's low edge, at the p20 time its high edge
    ok = ok.assign(rate=ok["tflops"] * scale, rate_lo=ok["tflops"] * scale * ok["time_ms"] / ok["p80_ms"],
                   rate_hi=ok["tflops"] * scale * ok["time_ms"] / ok["p20_ms"])
    order = attention_order(ok["attention"])
    hds = sorted(ok["head_dim"].unique())
    masks = [m for m in ("non-causal", "causal") if m in set(ok["mask"])]
    with plot_style():
        fig, axes = plt.subplots(len(hds), len(masks), figsize=(4.2 * len(masks), 3.2 * len(hds)), squeeze=False,
                                 sharey=True)
        pal = _palette(order)
        for i, hd in enumerate(hds):
            for j, m in enumerate(masks):
                ax = axes[i][j]
                sub = ok[(ok["head_dim"] == hd) & (ok["mask"] == m)]
                for a in order:
                    if (sub["attention"] == a).any():
                        _line(ax, sub[sub["attention"] == a], "seq_len", "rate", pal[a], lo="rate_lo", hi="rate_hi",
                              label=a, grid=sub["seq_len"])
                gaps += _not_measured(ax, failed[(failed["head_dim"] == hd) & (failed["causal"] == (m == "causal"))
                                                 & failed["attention"].isin(order)], pal)
                _log2_lengths(ax, ok["seq_len"])
                ax.set_title(f"head dim {int(hd)}, {m}", fontsize=9)
                ax.set_xlabel("sequence length")
                ax.set_ylabel(unit if j == 0 else "")
        top = float(np.nanmax(np.r_[ok["rate"].to_numpy(float), ok["rate_hi"].to_numpy(float)]))
        axes[0][0].set_ylim(0, top * 1.06)  # shared y: one limit for every panel
        _legend_on_top(fig, plt, order, pal, f"attention {pas.replace('_', '+')} "
                       f"({', '.join(sorted(ok['dtype'].unique()))}), FlashAttention FLOP convention, on "
                       + ", ".join(sorted(str(x) for x in ok["device_name"].unique())) + f"; {_band_title(ok)}"
                       + (";\n× on the bottom edge: not measured (status named)" if gaps else ""))
        return list(savefig(fig, stem))


def _legend_on_top(fig, plt, order: list[str], pal: dict, title: str) -> None:
    """Title, then one legend row for every panel, above the panels (no overlap with panel titles)."""
    handles = [plt.Line2D([], [], color=pal[a].color, marker=pal[a].marker, ls=pal[a].linestyle, label=a)
               for a in order]
    ncol = min(6, len(order))
    rows = math.ceil(len(order) / ncol)
    top = 1.0 - (0.05 + 0.035 * rows + 0.03 * title.count("\n")) * 6.4 / max(fig.get_figheight(), 1.0)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, top))
    fig.suptitle(title, fontsize=9, y=0.995)


@figure
def fig_memory(k, stem: Path) -> list[Path]:
    """Peak memory vs sequence length (log y); out-of-memory as crosses on the top edge: naive's n² wall."""
    main = k[(column_or(k, "group") == "main")]
    pas = "fwd_bwd" if (main["pass"] == "fwd_bwd").any() else "fwd"
    main = main[main["pass"] == pas]
    ok = main[(main["status"] == "ok") & main["peak_mem_bytes"].notna()]
    if ok.empty:
        return []
    ok = ok.assign(mib=ok["peak_mem_bytes"] / MIB)
    oom = main[main["status"] == "oom"]
    order = attention_order(list(ok["attention"]) + list(oom["attention"]))
    hds = sorted(main["head_dim"].dropna().unique())
    masks = [c for c in (False, True) if c in set(main["causal"])]
    with plot_style():
        fig, axes = plt.subplots(len(masks), len(hds), figsize=(4.2 * len(hds), 3.2 * len(masks)), squeeze=False,
                                 sharey=True)
        pal = _palette(order)
        for i, c in enumerate(masks):
            for j, hd in enumerate(hds):
                ax = axes[i][j]
                sub = ok[(ok["head_dim"] == hd) & (ok["causal"] == c)]
                for a in order:
                    if (sub["attention"] == a).any():
                        _line(ax, sub[sub["attention"] == a], "seq_len", "mib", pal[a], label=a, grid=sub["seq_len"])
                _log_y(ax)
                _not_measured(ax, oom[(oom["head_dim"] == hd) & (oom["causal"] == c)], pal)
                _log2_lengths(ax, main["seq_len"])
                ax.set_title(f"head dim {int(hd)}, {'causal' if c else 'non-causal'} ({pas.replace('_', '+')})",
                             fontsize=9)
                ax.set_xlabel("sequence length")
                ax.set_ylabel("peak MiB above inputs" if j == 0 else "")
        _legend_on_top(fig, plt, order, pal, f"peak memory of {pas.replace('_', '+')} above the inputs "
                       f"(log scale; × on the bottom edge: out of memory, no value)\non "
                       + ", ".join(sorted(str(x) for x in main["device_name"].dropna().unique())))
        return list(savefig(fig, stem))


@figure
def fig_decode(df, stem: Path) -> list[Path]:
    """Per-token decode latency and KV-cache size vs context for MHA / GQA / MQA (closed form dashed)."""
    d = df[(column_or(df, "part") == "decode") & (df["status"] == "ok")]
    if d.empty:
        return []
    d = d.assign(context=numeric_column(d, "context"), ms=numeric_column(d, "time_ms"), kv=numeric_column(d, "kv_bytes") / MIB,
                 closed=numeric_column(d, "kv_bytes_closed_form") / MIB, layout=column_or(d, "layout"),
                 mode=column_or(d, "decode_mode").fillna("eager"))
    order = [x for x in LAYOUTS if x in set(d["layout"])]
    pal = _palette(order)
    modes = [m for m in DECODE_MODES if m in set(d["mode"])]
    dashes = dict(zip(DECODE_MODES, ("-", "--", ":")))
    d = d.assign(lo=numeric_column(d, "p20_ms"), hi=numeric_column(d, "p80_ms"))
    with plot_style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.2))
        for lay in order:
            for mode in modes:
                s = d[(d["layout"] == lay) & (d["mode"] == mode)]
                if not s.empty:
                    _line(a1, s, "context", "ms", pal[lay], lo="lo", hi="hi", ls=dashes.get(mode, "-"),
                          label=lay if len(modes) == 1 else f"{lay}, {mode}")
        a1.set_ylim(bottom=0)
        a1.set_ylabel("ms per decode step (whole batch)")
        a1.set_title(f"decode latency, batch {int(numeric_column(d, 'batch').iloc[0])}", fontsize=9)
        note = linestyle_note({dashes.get(m, "-"): m for m in modes}) if len(modes) > 1 else ""
        a1.legend(fontsize=6, frameon=False, title=_band_title(d) + (f"\n{note}" if note else ""), title_fontsize=6)
        for lay in order:
            s = d[(d["layout"] == lay) & (d["mode"] == modes[0])].sort_values("context")
            a2.plot(s["context"], s["kv"], marker=pal[lay].marker, color=pal[lay].color, ls="-",
                    label=f"{lay} measured")
            a2.plot(s["context"], s["closed"], ls="--", color=pal[lay].color, alpha=0.7, label=f"{lay} closed form")
        _log_y(a2)
        a2.set_ylabel("KV cache MiB")
        a2.set_title("KV cache: nbytes() vs 2·L·kv·d·n·bytes", fontsize=9)
        a2.legend(fontsize=6, frameon=False, title=linestyle_note({"-": "measured", "--": "closed form"}),
                  title_fontsize=6)
        for ax in (a1, a2):
            _log2_lengths(ax, d["context"])
            ax.set_xlabel("context length")
        fig.tight_layout()
        return list(savefig(fig, stem))


@figure
def fig_prefill(df, stem: Path) -> list[Path]:
    d = df[(column_or(df, "part") == "prefill") & (df["status"] == "ok")]
    if d.empty:
        return []
    d = d.assign(prompt=numeric_column(d, "prompt_len"), ms=numeric_column(d, "time_ms"), layout=column_or(d, "layout"))
    order = [x for x in LAYOUTS if x in set(d["layout"])]
    pal = _palette(order)
    d = d.assign(lo=numeric_column(d, "p20_ms"), hi=numeric_column(d, "p80_ms"))
    with plot_style():
        fig, ax = plt.subplots(figsize=(4.4, 3.2))
        for lay in order:
            _line(ax, d[d["layout"] == lay], "prompt", "ms", pal[lay], lo="lo", hi="hi", label=lay)
        _log_y(ax)
        _log2_lengths(ax, d["prompt"])
        ax.set_xlabel("prompt length")
        ax.set_ylabel("prefill ms")
        ax.set_title("prefill latency", fontsize=9)
        ax.legend(fontsize=7, frameon=False, title=_band_title(d), title_fontsize=7)
        return list(savefig(fig, stem))


@figure
def fig_stream(df, stem: Path) -> list[Path]:
    """Per-token latency and cache size vs tokens streamed, one line per StreamingLLM mode (the ``stream`` part), one
    row of two panels per model (attention, position, layout, batch); re-computation keeps no cache, so it is absent
    from the right panel."""
    d = df[(column_or(df, "part") == "stream") & (df["status"] == "ok")]
    if d.empty:
        return []
    d = d.assign(tokens=numeric_column(d, "tokens"), ms=numeric_column(d, "time_ms"), lo=numeric_column(d, "p20_ms"),
                 hi=numeric_column(d, "p80_ms"), kib=numeric_column(d, "kv_bytes") / 1024,
                 mode=column_or(d, "stream_mode"),
                 model=[f"{a}/{p}, {lay}, batch {b}" for a, p, lay, b in zip(
                     column_or(d, "attention"), column_or(d, "position"), column_or(d, "layout"), column_or(d, "batch"))])
    modes = [m for m in STREAM_MODES if m in set(d["mode"])]
    models = list(dict.fromkeys(d["model"]))
    pal = _palette(modes)
    with plot_style():
        fig, axes = plt.subplots(len(models), 2, figsize=(8.4, 3.2 * len(models)), squeeze=False)
        for (a1, a2), model in zip(axes, models):
            for mode in modes:
                s = d[(d["model"] == model) & (d["mode"] == mode)]
                if s.empty:
                    continue
                _line(a1, s, "tokens", "ms", pal[mode], lo="lo", hi="hi", label=mode)
                if s["kib"].notna().any():
                    _line(a2, s, "tokens", "kib", pal[mode], label=mode)
            _log_y(a1)
            a1.set_ylabel("ms per token (whole batch)")
            a1.set_title(f"streaming decode: {model}", fontsize=9)
            a1.legend(fontsize=6, frameon=False, title=_band_title(d[d["model"] == model]), title_fontsize=6)
            _log_y(a2)
            a2.set_ylabel("cache KiB (measured)")
            a2.set_title("cache kept between steps", fontsize=9)
            a2.legend(fontsize=6, frameon=False)
            for ax in (a1, a2):
                _log2_lengths(ax, d["tokens"])
                ax.set_xlabel("tokens streamed")
        fig.tight_layout()
        return list(savefig(fig, stem))
