"""Markdown, as ``ablate report`` writes it, rendered to HTML for the report pages (:mod:`ablate.reporting.html_report`):
tables (:class:`MdTable`, :func:`parse_md_table`), inline markup, and :class:`Page`, the page under construction
that embeds figures as ``data:`` URIs and keeps track of what it has shown. Standard library only."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MdTable", "parse_md_table", "FIGURE_SUFFIXES", "MIME", "VERDICT_ORDER"]

FIGURE_SUFFIXES = (".svg", ".png")  # preference order for embedding
MIME = {".svg": "image/svg+xml", ".png": "image/png"}
VERDICT_ORDER = ("reproduced", "not reproduced", "inconclusive")
NUM = ' class="num"'  # a numeric table cell (right-aligned by the page's CSS)


# ---------------------------------------------------------------------------------------------------------------
# Markdown tables


@dataclass
class MdTable:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""

    def key(self) -> tuple:
        return (tuple(self.header), tuple(tuple(r) for r in self.rows))


_RULE = re.compile(r"^\|(\s*:?-{1,}:?\s*\|)+\s*$")


def _split_row(line: str) -> list[str]:
    """The cells of ``| a | b\\|c |`` (``\\|`` and ``\\\\`` unescaped, as ablate.reporting.tables writes them)."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "|\\":
            cur.append(s[i + 1])
            i += 2
            continue
        if c == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def is_table_start(lines: list[str], i: int) -> bool:
    return (i + 1 < len(lines) and lines[i].lstrip().startswith("|")
            and bool(_RULE.match(lines[i + 1].strip())))


def read_table(lines: list[str], i: int) -> tuple[MdTable, int]:
    """The table starting at ``lines[i]`` and its ``Table: caption`` line (after blank lines); the next index."""
    header = _split_row(lines[i])
    rule = _split_row(lines[i + 1])
    numeric = [c.endswith(":") and not c.startswith(":") for c in rule]
    numeric += [False] * (len(header) - len(numeric))
    rows = []
    j = i + 2
    while j < len(lines) and lines[j].lstrip().startswith("|"):
        cells = _split_row(lines[j])
        cells = (cells + [""] * len(header))[:len(header)]
        rows.append(cells)
        j += 1
    caption = ""
    k = j
    while k < len(lines) and not lines[k].strip():
        k += 1
    if k < len(lines) and lines[k].startswith("Table: "):
        caption = lines[k][len("Table: "):].strip()
        j = k + 1
    return MdTable(header, rows, numeric[:len(header)], caption), j


def parse_md_table(text: str) -> MdTable | None:
    """The first Markdown table in ``text`` (with its ``Table:`` caption), or None."""
    lines = text.splitlines()
    for i in range(len(lines)):
        if is_table_start(lines, i):
            return read_table(lines, i)[0]
    if text.strip() == "(empty table)" or text.rstrip().endswith("(empty table)"):
        cap = text.strip().split("\n\n")[0] if "\n\n" in text.strip() else ""
        return MdTable([], [], [], cap)
    return None


def is_claims(path: Path, table: MdTable) -> bool:
    if path.stem.endswith("_claims"):
        return True
    heads = [h.lower() for h in table.header]
    return "verdict" in heads and bool(heads) and "claim" in heads[0]


def verdict_counts(table: MdTable) -> dict[str, int]:
    heads = [h.lower() for h in table.header]
    if "verdict" not in heads:
        return {}
    col = heads.index("verdict")
    out: dict[str, int] = {}
    for r in table.rows:
        v = r[col].strip().strip("*").strip()
        if v:
            out[v] = out.get(v, 0) + 1
    return out


def verdict_tally(counts: dict[str, int]) -> list[tuple[str, int]]:
    keys = sorted(counts, key=lambda k: (VERDICT_ORDER.index(k) if k in VERDICT_ORDER else len(VERDICT_ORDER), k))
    return [(k, counts[k]) for k in keys]


# ---------------------------------------------------------------------------------------------------------------
# Inline Markdown


_INLINE = re.compile(
    r"(?P<code>`+)(?P<codetext>.+?)(?P=code)"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<isrc>[^)\s]+)\)"
    r"|\[(?P<ltext>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*\\])\*(?=\S)(?P<em>[^*]+?)(?<=\S)\*(?![\w*])"
)


def slug(s: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return s or "x"


def norm(p: Path) -> Path:
    return Path(os.path.normpath(p))


def _has_scheme(s: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", s)) or s.startswith("//")


@dataclass
class FigureRef:
    stem: Path  # absolute-ish stem (folder / name without suffix)
    files: list[Path]
    id: str


@dataclass
class Page:
    """One page under construction: the tables and figures it must show, what it has shown, unique ids."""

    folder: Path
    tables: dict[Path, MdTable] = field(default_factory=dict)  # normalised path of a .md table -> parsed
    table_ids: dict[Path, str] = field(default_factory=dict)
    by_key: dict[tuple, Path] = field(default_factory=dict)
    figures: dict[Path, FigureRef] = field(default_factory=dict)  # normalised stem -> figure
    shown: set[Path] = field(default_factory=set)  # table paths and figure stems already on the page
    sections: dict[Path, str] = field(default_factory=dict)  # a rendered .md file -> the id of its section
    pages: set[Path] = field(default_factory=set)  # other index.md files that get their own index.html
    ids: set[str] = field(default_factory=set)
    toc: list[tuple[int, str, str]] = field(default_factory=list)

    def uid(self, base: str) -> str:
        base = slug(base)
        uid, n = base, 2
        while uid in self.ids:
            uid, n = f"{base}-{n}", n + 1
        self.ids.add(uid)
        return uid

    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.folder)).as_posix()

    # -- inline

    def inline(self, text: str, base: Path) -> str:
        out, pos = [], 0
        for m in _INLINE.finditer(text):
            out.append(html.escape(text[pos:m.start()], quote=False))
            pos = m.end()
            if m.group("code"):
                out.append(f"<code>{html.escape(m.group('codetext').strip(), quote=False)}</code>")
            elif m.group("isrc") is not None:
                out.append(self.image(m.group("alt"), m.group("isrc"), base, block=False))
            elif m.group("href") is not None:
                out.append(self.link(m.group("ltext"), m.group("href"), base))
            elif m.group("bold") is not None:
                out.append(f"<strong>{self.inline(m.group('bold'), base)}</strong>")
            else:
                out.append(f"<em>{self.inline(m.group('em'), base)}</em>")
        out.append(html.escape(text[pos:], quote=False))
        return "".join(out)

    def target(self, href: str, base: Path) -> Path | None:
        if _has_scheme(href) or href.startswith("#") or href.startswith("/"):
            return None
        return norm(base / href.split("#")[0])

    def anchor_for(self, p: Path) -> str | None:
        """The id on this page that shows file ``p`` (a table, a figure file, a rendered index), if any."""
        if p in self.tables:
            return self.table_ids[p]
        if p.suffix in FIGURE_SUFFIXES and p.with_suffix("") in self.figures:
            return self.figures[p.with_suffix("")].id
        if p in self.sections:
            return self.sections[p]
        return None

    def link(self, text: str, href: str, base: Path) -> str:
        label = self.inline(text, base)
        if href.startswith("#"):
            return label  # an anchor of the source Markdown: its ids differ here
        p = self.target(href, base)
        if p is None:
            return f'{label} <span class="src">({html.escape(href)})</span>' if _has_scheme(href) else label
        aid = self.anchor_for(p)
        if aid:
            return f'<a href="#{html.escape(aid)}">{label}</a>'
        if p.name == "index.md" and p in self.pages:
            return f'<a href="{html.escape(self.rel(p.with_suffix(".html")))}">{label}</a>'
        return label  # a file this page does not carry (.tex, docs/...): its name only

    # -- blocks

    def image(self, alt: str, src: str, base: Path, block: bool = True) -> str:
        p = self.target(src, base)
        if p is None:
            return html.escape(alt or src, quote=False)
        stem = p.with_suffix("") if p.suffix in FIGURE_SUFFIXES else p
        fig = self.figures.get(stem)
        if fig is None:
            if p.exists() and p.suffix in MIME:  # an image outside the page's files: embed it as it is
                return f'<img alt="{html.escape(alt)}" src="{_data_uri(p)}">'
            return html.escape(alt or src, quote=False)
        if stem in self.shown:
            return f'<p class="see">Figure <a href="#{fig.id}">{html.escape(alt or stem.name)}</a> (above).</p>'
        return self.figure(fig, alt)

    def figure(self, fig: FigureRef, caption: str = "") -> str:
        self.shown.add(fig.stem)
        f = fig.files[0]
        names = " · ".join(html.escape(self.rel(x)) for x in fig.files)
        cap = f"{html.escape(caption, quote=False)} " if caption else ""
        return (f'<figure id="{fig.id}" data-source="{html.escape(self.rel(f))}">'
                f'<img alt="{html.escape(caption or fig.stem.name)}" src="{_data_uri(f)}">'
                f'<figcaption>{cap}<span class="src">(<code>{names}</code>)</span></figcaption></figure>')

    def table(self, t: MdTable, base: Path, path: Path | None = None) -> str:
        """A table as HTML; ``path``: the table file it shows (gets the file's id and ``data-source``)."""
        attrs = ""
        if path is not None:
            self.shown.add(path)
            attrs = f' id="{self.table_ids[path]}" data-source="{html.escape(self.rel(path))}"'
        heads = [h.lower() for h in t.header]
        vcol = heads.index("verdict") if "verdict" in heads else -1
        out = [f'<div class="table-wrap"><table{attrs}>']
        if t.header:
            out.append("<thead><tr>" + "".join(
                f"<th{NUM if num else ''}>{self.inline(h, base)}</th>"
                for h, num in zip(t.header, t.numeric)) + "</tr></thead>")
        out.append("<tbody>")
        for r in t.rows:
            cells = []
            for i, (c, num) in enumerate(zip(r, t.numeric)):
                cls = ["num"] if num else []
                if i == vcol and c.strip():
                    cls.append("v-" + slug(c.strip("* ")))
                klass = f' class="{" ".join(cls)}"' if cls else ""
                cells.append(f"<td{klass}>{self.inline(c, base)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        if t.caption:
            out.append(f'<p class="caption">{self.inline(t.caption, base)}</p>')
        if path is not None:
            out.append(f'<p class="src">table <code>{html.escape(self.rel(path))}</code></p>')
        return "\n".join(out)

    def table_file(self, path: Path, heading: str = "", level: int = 4) -> str:
        t = self.tables[path]
        head = ""
        if heading:
            head = f"<h{level}>{html.escape(heading, quote=False)}</h{level}>\n"
        return head + self.table(t, path.parent, path)

    def inline_table(self, t: MdTable, base: Path) -> str:
        """A table of a rendered Markdown file: shown as the table file it equals, if any."""
        path = self.by_key.get(t.key())
        if path is None:
            return self.table(t, base)
        if path in self.shown:
            return (f'<p class="see">Table <a href="#{self.table_ids[path]}"><code>{html.escape(self.rel(path))}'
                    f'</code></a> (above).</p>')
        if not t.caption and self.tables[path].caption:
            t = MdTable(t.header, t.rows, t.numeric, self.tables[path].caption)
        return self.table(t, base, path)

    def references_only(self, text: str, base: Path) -> list[Path] | None:
        """The files a paragraph / list of nothing but links to tables and figures names (else None)."""
        found: list[Path] = []
        rest = re.sub(r"!?\[[^\]]*\]\(([^)\s]+)\)", lambda m: found.append(Path(m.group(1))) or " ", text)
        if not found or re.sub(r"[\s·,;:|\-*/]+", "", rest):
            return None
        out = []
        for f in found:
            p = self.target(f.as_posix(), base)
            if p is None:
                return None
            if p in self.tables or (p.suffix in FIGURE_SUFFIXES and p.with_suffix("") in self.figures):
                out.append(p)
            elif p.suffix != ".tex":
                return None
        return out or None

    def expand_references(self, refs: list[Path]) -> str:
        parts, seen = [], set()
        for p in refs:
            if p in self.tables:
                if p in seen:
                    continue
                seen.add(p)
                if p in self.shown:
                    parts.append(f'<p class="see">Table <a href="#{self.table_ids[p]}"><code>'
                                 f'{html.escape(self.rel(p))}</code></a> (above).</p>')
                else:
                    parts.append(self.table_file(p, heading=p.stem))
            else:
                stem = p.with_suffix("")
                if stem in seen:
                    continue
                seen.add(stem)
                fig = self.figures[stem]
                if stem in self.shown:
                    parts.append(f'<p class="see">Figure <a href="#{fig.id}"><code>{html.escape(stem.name)}'
                                 f'</code></a> (above).</p>')
                else:
                    parts.append(self.figure(fig, stem.name))
        return "\n".join(parts)

    def markdown(self, text: str, base: Path, offset: int = 1, toc_levels: tuple[int, ...] = (2,)) -> str:
        """The block Markdown this project writes (headings, paragraphs, lists, quotes, code, pipe tables with a
        ``Table:`` caption, images) as HTML; headings shift down by ``offset`` levels."""
        lines = text.splitlines()
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            s = line.strip()
            if not s:
                i += 1
                continue
            if s.startswith("<!--"):
                while i < len(lines) and "-->" not in lines[i]:
                    i += 1
                i += 1
                continue
            if s.startswith("```"):
                j = i + 1
                body = []
                while j < len(lines) and not lines[j].strip().startswith("```"):
                    body.append(lines[j])
                    j += 1
                out.append(f"<pre><code>{html.escape(chr(10).join(body), quote=False)}</code></pre>")
                i = j + 1
                continue
            m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", s)
            if m:
                level = min(6, len(m.group(1)) + offset)
                hid = self.uid(m.group(2))
                body = self.inline(m.group(2), base)
                if level in toc_levels:
                    self.toc.append((level, hid, re.sub(r"<[^>]+>", "", body)))
                out.append(f'<h{level} id="{hid}">{body}</h{level}>')
                i += 1
                continue
            if is_table_start(lines, i):
                t, i = read_table(lines, i)
                out.append(self.inline_table(t, base))
                continue
            if s.startswith(">"):
                body = []
                while i < len(lines) and lines[i].strip().startswith(">"):
                    body.append(lines[i].strip()[1:].strip())
                    i += 1
                joined = " ".join(body)
                cls = ' class="warning"' if "warning" in joined.lower()[:40] else ""
                out.append(f"<blockquote{cls}><p>{self.inline(joined, base)}</p></blockquote>")
                continue
            if re.match(r"^[-*]\s+", s):
                items: list[str] = []
                while i < len(lines) and lines[i].strip():
                    t = lines[i]
                    if re.match(r"^\s{0,1}[-*]\s+", t):
                        items.append(re.sub(r"^\s*[-*]\s+", "", t))
                    elif items:
                        items[-1] += " " + t.strip()
                    else:
                        break
                    i += 1
                refs = self.references_only(" ".join(items), base)
                if refs:
                    out.append(self.expand_references(refs))
                else:
                    out.append("<ul>\n" + "\n".join(f"<li>{self.inline(it, base)}</li>" for it in items) + "\n</ul>")
                continue
            para = []
            while i < len(lines) and lines[i].strip() and not is_table_start(lines, i) \
                    and not re.match(r"^(#{1,6}\s|```|>|[-*]\s)", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            if not para:  # a line no rule took (cannot happen; be safe)
                para, i = [s], i + 1
            joined = " ".join(para)
            im = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", joined)
            if im:
                out.append(self.image(im.group(1), im.group(2), base))
                continue
            refs = self.references_only(joined, base)
            if refs:
                out.append(self.expand_references(refs))
                continue
            out.append(f"<p>{self.inline(joined, base)}</p>")
        return "\n".join(out)


def _data_uri(path: Path) -> str:
    return f"data:{MIME[path.suffix]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
