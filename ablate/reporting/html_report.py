"""A self-contained ``index.html`` next to every ``index.md`` that ``ablate report`` writes, and a root page.

* :func:`write_pages` (called at the end of :func:`ablate.reporting.report.build_report`) writes ``DIR/index.html`` for a
  report folder, and ``SUB/index.html`` next to every suite-written ``SUB/index.md`` below it (training's
  ``<device>-<preset>/``). Each page is one file with no external reference: figures are embedded as ``data:`` URIs
  (the SVG, else the PNG), the CSS is inline, there is no script. It holds the published-claims tables first
  (``*_claims.md``, or any table with a ``verdict`` column whose first column names the claim), then each suite's
  own index rendered from its Markdown (tables as HTML tables, figures embedded in place), every other table and
  figure of the folder, and the provenance of ``index.md`` (the regenerate command, the inputs, the environment).
* :func:`ablate.reporting.html_index.write_root_index` writes ``ROOT/index.html`` linking every ``index.html`` below
  ``ROOT`` with a one-line summary (title, suites, device-preset, rows, claim verdicts, commit):
  ``python -m ablate.reporting.report index reports``.

Standard library only (no torch, pandas or matplotlib): the pages are made from the files on disk, so they can be
rebuilt for any existing report folder (``python -m ablate.reporting.report html DIR``). Deterministic: the same folder gives
byte-identical pages (nothing depends on the clock or on absolute paths).
"""

from __future__ import annotations

import html
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from ablate.store.atomic import write_text
from ablate.reporting.html_markdown import (FIGURE_SUFFIXES, MdTable, FigureRef, is_claims, is_table_start, norm, Page,
                                  read_table, slug, verdict_tally, verdict_counts, parse_md_table)

__all__ = ["write_pages", "write_folder_page", "render_folder", "parse_md_table", "folder_summary", "html_document",
           "tally_html", "is_report_index", "NESTED"]

# The first line of a report folder's index.md (ablate.reporting.report.MARKER; repeated here to keep this module free of
# the results/pandas imports; tests/reporting/test_html_report.py checks they agree).
REPORT_MARKER = "<!-- ablate:report -->"
NESTED = ' class="nested"'

CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --rule: #d0d7de; --head: #f6f8fa; --ok: #1a7f37; --bad: #cf222e;
        --warn-bg: #fff8c5; --warn: #9a6700; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.8rem; margin: 0 0 .3rem; }
h2 { font-size: 1.4rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
h4, h5, h6 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p, ul { margin: .5rem 0; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 0.88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--head);
       padding: .05em .3em; border-radius: 3px; }
pre { background: var(--head); border: 1px solid var(--rule); border-radius: 4px; padding: .6rem .8rem;
      overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
pre code { background: none; padding: 0; }
.summary { color: var(--muted); margin: 0 0 1rem; }
.summary b { color: var(--fg); font-weight: 600; }
nav.toc { border: 1px solid var(--rule); border-radius: 4px; padding: .5rem 1rem; margin: 1rem 0;
          background: var(--head); }
nav.toc ul { margin: .2rem 0; padding-left: 1.2rem; }
blockquote { margin: .8rem 0; padding: .5rem .9rem; border-left: 4px solid var(--rule); color: var(--muted); }
blockquote.warning { border-left-color: var(--warn); background: var(--warn-bg); color: var(--fg); }
.table-wrap { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: 13px; line-height: 1.35; }
th, td { border: 1px solid var(--rule); padding: .25rem .5rem; vertical-align: top; text-align: left; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.v-reproduced { color: var(--ok); font-weight: 600; }
td.v-not-reproduced { color: var(--bad); font-weight: 600; }
td.v-inconclusive { color: var(--muted); }
.caption, figcaption { color: var(--muted); font-size: 13px; margin: .3rem 0 0; }
.src { color: var(--muted); font-size: 12px; }
.src code { font-size: 12px; }
section.claims { border: 2px solid var(--rule); border-radius: 6px; padding: 0 1rem .5rem; margin: 1.2rem 0; }
section.claims > h2 { border: none; margin-top: .8rem; }
figure { margin: 1rem 0 1.5rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
.tally span { margin-right: .8rem; }
.tally .v-reproduced { color: var(--ok); } .tally .v-not-reproduced { color: var(--bad); }
table.reports td:first-child { white-space: nowrap; }
.nested { padding-left: 1.2rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: 12px; border-top: 1px solid var(--rule);
         padding-top: .5rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav.toc { display: none; }
  a { color: inherit; }
  .table-wrap { overflow: visible; }
  table { font-size: 7.5pt; }
  th, td { padding: 1px 3px; }
  td.num, th.num { white-space: normal; }
  figure, .table-wrap, blockquote { break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; }
  pre { white-space: pre-wrap; }
}
"""


# ---------------------------------------------------------------------------------------------------------------
# Folders


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def is_report_index(p: Path) -> bool:
    try:
        with open(p, encoding="utf-8") as fh:
            return fh.readline().strip() == REPORT_MARKER
    except OSError:
        return False


def _owned_files(folder: Path) -> list[Path]:
    """Every file below ``folder``, leaving out nested report folders (their own index.md has the marker)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".")
                             and not is_report_index(d / x / "index.md"))
        out += [norm(d / f) for f in sorted(filenames) if not f.startswith(".")]
    return out


def _is_index_md(p: Path) -> bool:
    return p.name == "index.md" or p.name.endswith("_index.md")


def _collect(page: Page, files: Iterable[Path]) -> None:
    stems: dict[Path, list[Path]] = {}
    for f in files:
        if f.suffix == ".md" and not _is_index_md(f):
            t = parse_md_table(_read(f))
            if t is not None:
                page.tables[f] = t
                page.by_key.setdefault(t.key(), f)
        elif f.suffix in FIGURE_SUFFIXES:
            stems.setdefault(f.with_suffix(""), []).append(f)
        elif f.name == "index.md" and norm(f.parent) != norm(page.folder):
            page.pages.add(f)
    for p in sorted(page.tables):
        page.table_ids[p] = page.uid("table-" + page.rel(p.with_suffix("")))
    for stem in sorted(stems):
        fs = sorted(stems[stem], key=lambda x: FIGURE_SUFFIXES.index(x.suffix))
        page.figures[stem] = FigureRef(stem, fs, page.uid("figure-" + page.rel(stem)))


def _sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` per ``## `` section; the part before the first is ``("", preamble)``."""
    out: list[tuple[str, list[str]]] = [("", [])]
    fence = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            out.append((line[3:].strip(), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(b)) for h, b in out]


def _h1(text: str) -> str:
    m = re.search(r"(?m)^#\s+(.+?)\s*$", text)
    return m.group(1).strip() if m else ""


def _plain(md: str) -> str:
    return re.sub(r"[`*]", "", md)


def _data_table(report_md: str) -> MdTable | None:
    for head, body in _sections(report_md):
        if head == "Data":
            lines = body.splitlines()
            for i in range(len(lines)):
                if is_table_start(lines, i):
                    t = read_table(lines, i)[0]
                    if t.header and t.header[0] == "results file":
                        return t
    return None


def _env_value(report_md: str, key: str) -> list[str]:
    for head, body in _sections(report_md):
        if head == "Environment":
            t = parse_md_table(body)
            if t is None:
                return []
            for r in t.rows:
                if r and r[0].strip("`") == key:
                    return sorted({v.strip() for c in r[1:] for v in c.split(",") if v.strip() not in ("", "—")})
    return []


def _report_root(folder: Path) -> Path | None:
    """The report folder ``folder`` belongs to: itself or the nearest parent whose index.md has the marker."""
    for d in [folder, *folder.parents][:4]:
        if is_report_index(d / "index.md"):
            return d
    return None


def folder_summary(folder: Path) -> dict:
    """Title, suites, device-preset names, row and status counts, claim verdicts and commits of one page's folder
    (from its Markdown alone)."""
    folder = norm(Path(folder))
    idx = folder / "index.md"
    text = _read(idx) if idx.exists() else ""
    is_report = is_report_index(idx)
    root = _report_root(folder)
    root_md = _read(root / "index.md") if root is not None else ""
    suites: list[str] = []
    runs: list[str] = []
    rows = 0
    status: dict[str, int] = {}
    data = _data_table(root_md) if root_md else None
    if data is not None:
        for r in data.rows:
            name = Path(r[0].strip("`")).stem
            if not is_report and name != folder.name:
                continue  # a suite sub-folder: only the results file it comes from
            runs.append(name)
            suites += [s.strip() for s in r[1].split(",") if s.strip() and s.strip() != "—"]
            try:
                rows += int(r[2])
            except ValueError:
                pass
            for part in r[3].split(","):
                m = re.match(r"\s*(\d+)\s+(.+?)\s*$", part)
                if m:
                    status[m.group(2)] = status.get(m.group(2), 0) + int(m.group(1))
    if not is_report:
        runs = [folder.name]
        if not suites:
            m = re.match(r"<!--\s*ablate:(\w+)\s*-->", text)
            suites = [m.group(1)] if m else []
    files = _owned_files(folder)
    verdicts: dict[str, int] = {}
    for f in files:
        if f.suffix == ".md" and not _is_index_md(f):
            t = parse_md_table(_read(f))
            if t is not None and is_claims(f, t):
                for k, n in verdict_counts(t).items():
                    verdicts[k] = verdicts.get(k, 0) + n
    if is_report:
        own = [f for f in files if _is_index_md(f) and f != idx]  # the suites' indexes, here and in sub-folders
        titles = [t for t in (_plain(_h1(_read(f))) for f in own) if t]
        title = titles[0] if len(titles) == 1 else (_plain(_h1(text)) or "ablate report")
    else:
        title = _plain(_h1(text)) or folder.name
    commits = [c[:10] for c in _env_value(root_md, "git_commit")] if root_md else []
    return {"title": title, "suites": sorted(set(suites)), "runs": sorted(set(runs)), "rows": rows,
            "status": status, "verdicts": verdicts, "commits": commits, "report": is_report}


def _summary_html(s: dict) -> str:
    parts = []
    if s["suites"]:
        parts.append(f"suite <b>{html.escape(', '.join(s['suites']))}</b>")
    if s["runs"]:
        parts.append(f"device-preset <b>{html.escape(', '.join(s['runs']))}</b>")
    if s["rows"]:
        st = ", ".join(f"{n} {k}" for k, n in sorted(s["status"].items(), key=lambda kv: (kv[0] != "ok", kv[0])))
        parts.append(f"<b>{s['rows']}</b> rows" + (f" ({html.escape(st)})" if st else ""))
    if s["commits"]:
        parts.append("commit " + ", ".join(f"<code>{html.escape(c)}</code>" for c in s["commits"]))
    return " · ".join(parts)


def tally_html(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    total = sum(counts.values())
    return ('<span class="tally">' + "".join(
        f'<span class="v-{slug(k)}">{n} {html.escape(k)}</span>' for k, n in verdict_tally(counts))
        + f"<span>(of {total})</span></span>")


def html_document(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title, quote=False)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _toc(entries: list[tuple[int, str, str]]) -> str:
    """Contents: level-2 entries, each with the level-3 entries after it nested under it."""
    out = ['<nav class="toc" id="contents"><b>Contents</b>', "<ul>"]
    in_item = in_sub = False
    for level, hid, text in entries:
        item = f'<li><a href="#{html.escape(hid)}">{html.escape(text, quote=False)}</a>'
        if level > 2 and in_item:
            if not in_sub:
                out.append("<ul>")
                in_sub = True
            out.append(item + "</li>")
            continue
        if in_sub:
            out.append("</ul>")
            in_sub = False
        if in_item:
            out.append("</li>")
        out.append(item)
        in_item = True
    if in_sub:
        out.append("</ul>")
    if in_item:
        out.append("</li>")
    return "\n".join(out + ["</ul>", "</nav>"])


def _provenance_parts(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The regenerate command (the preamble without title and warnings), Data and Environment of a report index."""
    rest = "\n".join(ln for ln in sections[0][1].splitlines() if not ln.strip().startswith(">")
                     and not ln.startswith("# ") and not ln.strip().startswith("<!--"))
    return [("Regenerate", rest)] + [(h, b) for h, b in sections[1:] if h in ("Data", "Environment")]


def render_folder(folder: Path) -> str:
    """The HTML page of a report folder (``index.md`` with the report marker) or of a suite sub-folder (its own
    ``index.md``) -- see the module docstring."""
    folder = norm(Path(folder))
    idx = folder / "index.md"
    is_report = is_report_index(idx)
    root = _report_root(folder)
    root_md = _read(root / "index.md") if root is not None else ""
    page = Page(folder)
    for reserved in ("contents", "claims", "provenance", "more"):
        page.ids.add(reserved)
    files = _owned_files(folder)
    _collect(page, files)
    summary = folder_summary(folder)

    head = [f"<h1>{html.escape(summary['title'], quote=False)}</h1>"]
    line = _summary_html(summary)
    if line:
        head.append(f'<p class="summary">{line}</p>')
    if not is_report and root is not None and root != folder:
        up = Path(os.path.relpath(root / "index.html", folder)).as_posix()
        head.append(f'<p class="summary">Part of the report <a href="{html.escape(up)}">{html.escape(up)}</a>; its '
                    "provenance is repeated at the end of this page.</p>")

    body: list[str] = []
    # claims first
    claims = [p for p in sorted(page.tables) if is_claims(p, page.tables[p])]
    if claims:
        counts: dict[str, int] = {}
        for p in claims:
            for k, n in verdict_counts(page.tables[p]).items():
                counts[k] = counts.get(k, 0) + n
        page.toc.append((2, "claims", "Published claims vs these results"))
        body.append('<section class="claims" id="claims">\n<h2>Published claims vs these results</h2>')
        if counts:
            body.append(f"<p>{tally_html(counts)}</p>")
        for p in claims:
            body.append(page.table_file(p, heading=page.rel(p.with_suffix("")) if len(claims) > 1 else ""))
        body.append("</section>")

    sections = _sections(_read(idx)) if idx.exists() else [("", "")]
    prov: list[str] = []
    if is_report:
        preamble = sections[0][1]
        # the warnings go under the title; the regenerate command into the provenance
        pre_lines = preamble.splitlines()
        quotes = "\n".join(ln for ln in pre_lines if ln.strip().startswith(">") or not ln.strip())
        if quotes.strip():
            head.append(page.markdown(quotes, folder))
        prov_src = _provenance_parts(sections)
        across = [(h, b) for h, b in sections[1:] if h == "Across runs"]
        suite_sections = [(h, b) for h, b in sections[1:] if h not in ("Data", "Environment", "Across runs")]
        for suite, sbody in suite_sections:
            own: list[Path] = []
            linked: list[Path] = []
            for m in re.finditer(r"\]\(([^)\s]+)\)", sbody):
                p = page.target(m.group(1), folder)
                if p is None:
                    continue
                (own if _is_index_md(p) else linked).append(p)
            for p in own:
                page.sections[p] = page.uid(f"suite-{suite}-{page.rel(p.with_suffix(''))}")
            for p in own:
                if not p.exists():
                    continue
                text = _read(p)
                sid = page.sections[p]
                title = _h1(text) or suite
                page.toc.append((2, sid, _plain(title)))
                body.append(f'<section id="{sid}" data-source="{html.escape(page.rel(p))}">')
                body.append(f'<h2>{page.inline(title, p.parent)}</h2>')
                body.append(f'<p class="src">suite <code>{html.escape(suite)}</code> · from '
                            f"<code>{html.escape(page.rel(p))}</code>"
                            + (f' · <a href="{html.escape(page.rel(p.with_suffix(".html")))}">its own page</a>'
                               if p in page.pages else "") + "</p>")
                without_h1 = re.sub(r"(?m)^#\s+.+$", "", text, count=1)
                body.append(page.markdown(without_h1, p.parent, offset=1, toc_levels=(3,)))
                body.append("</section>")
            rest_refs = [p for p in linked if (p in page.tables and p not in page.shown)
                         or (p.suffix in FIGURE_SUFFIXES and p.with_suffix("") in page.figures
                             and p.with_suffix("") not in page.shown)]
            if rest_refs:
                mid = page.uid(f"more-{suite}")
                title = f"More {suite} tables and figures" if own else suite
                page.toc.append((2, mid, title))
                body.append(f'<section id="{mid}">\n<h2>{html.escape(title, quote=False)}</h2>')
                body.append(page.expand_references(rest_refs))
                body.append("</section>")
        for h, b in across:
            aid = page.uid("across-runs")
            page.toc.append((2, aid, h))
            body.append(f'<section id="{aid}">\n<h2>{html.escape(h, quote=False)}</h2>')
            body.append(page.markdown(b, folder, offset=1, toc_levels=()))
            body.append("</section>")
    else:
        text = _read(idx) if idx.exists() else ""
        page.sections[idx] = "top"
        page.ids.add("top")
        without_h1 = re.sub(r"(?m)^#\s+.+$", "", text, count=1)
        body.append(page.markdown(without_h1, folder, offset=0, toc_levels=(2,)))
        prov_src = _provenance_parts(_sections(root_md)) if root is not None and root != folder else []

    # anything not shown yet: every table and figure of the folder is on the page
    left = [p for p in sorted(page.tables) if p not in page.shown]
    left += [f.files[0] for s, f in sorted(page.figures.items()) if s not in page.shown]
    if left:
        page.toc.append((2, "more", "Other tables and figures"))
        body.append('<section id="more">\n<h2>Other tables and figures</h2>')
        body.append(page.expand_references(left))
        body.append("</section>")

    if prov_src:
        page.toc.append((2, "provenance", "Provenance"))
        base = root if root is not None else folder
        prov.append('<section id="provenance">\n<h2>Provenance</h2>')
        if base != folder:
            prov.append(f'<p class="src">From <code>{html.escape(page.rel(base / "index.md"))}</code>, the report '
                        "this folder belongs to.</p>")
        for h, b in prov_src:
            if not b.strip():
                continue
            prov.append(f'<h3 id="{page.uid("provenance-" + h)}">{html.escape(h, quote=False)}</h3>')
            prov.append(page.markdown(b, base, offset=2, toc_levels=()))
        prov.append("</section>")

    toc = _toc(page.toc) if len(page.toc) > 1 else ""
    foot = ('<footer>Written by <code>ablate report</code> from the files of this folder (tables: the '
            "<code>.md</code> files, also as LaTeX <code>.tex</code>; figures embedded from the <code>.svg</code>, "
            "also as <code>.png</code>). One self-contained file: no script, no network.</footer>")
    return html_document(summary["title"], head + ([toc] if toc else []) + body + prov + [foot])


def write_folder_page(folder: Path) -> Path:
    folder = Path(folder)
    out = folder / "index.html"
    _write(out, render_folder(folder))
    return out


def write_pages(report_dir: Path) -> list[Path]:
    """``index.html`` for the report folder ``report_dir`` and for every suite ``index.md`` below it."""
    report_dir = Path(report_dir)
    written = [write_folder_page(report_dir)]
    for f in _owned_files(report_dir):
        if f.name == "index.md" and norm(f.parent) != norm(report_dir):
            written.append(write_folder_page(f.parent))
    return written


_write = write_text  # atomic (ablate.store.atomic)
