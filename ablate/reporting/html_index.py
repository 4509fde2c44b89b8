"""The root page of the reports (``ROOT/index.html`` linking every report page below ``ROOT`` with a one-line
summary) and the command line of the HTML pages: ``python -m ablate.reporting.report index [ROOT]`` /
``html DIR...``. Standard library only, deterministic (see :mod:`ablate.reporting.html_report`)."""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Sequence

from ablate.reporting.html_markdown import norm
from ablate.reporting.html_report import NESTED, folder_summary, html_document, is_report_index, tally_html, write_pages
from ablate.store.atomic import write_text

__all__ = ["render_root", "write_root_index", "main"]


def _pages_below(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
        d = Path(dirpath)
        if "index.html" in filenames and "index.md" in filenames and norm(d) != norm(root):
            out.append(norm(d / "index.html"))
    return sorted(out, key=lambda p: p.parent.as_posix())


def render_root(root: Path) -> str:
    """The page linking every report page below ``root`` (relative links), one row each."""
    root = norm(Path(root))
    pages = _pages_below(root)
    body = ["<h1>Reports</h1>",
            f'<p class="summary">{len(pages)} report page(s) below this folder, each one self-contained '
            "(tables, figures and provenance inline). Regenerate with <code>bash scripts/regenerate_reports.sh"
            "</code>; this page with <code>python -m ablate.reporting.report index "
            f"{html.escape(root.name or '.')}</code>.</p>"]
    if pages:
        rows = []
        tops = {p.parent for p in pages}
        for p in pages:
            folder = p.parent
            s = folder_summary(folder)
            rel = Path(os.path.relpath(p, root)).as_posix()
            name = Path(os.path.relpath(folder, root)).as_posix()
            nested = any(a in tops for a in folder.parents)
            st = ""
            if s["rows"]:
                st = ", ".join(f"{n} {k}" for k, n in sorted(s["status"].items(),
                                                               key=lambda kv: (kv[0] != "ok", kv[0])))
                st = f"{s['rows']}" + (f" ({st})" if st else "")
            rows.append(
                "<tr>"
                f"<td{NESTED if nested else ''}><a href=\"{html.escape(rel)}\">"
                f"{html.escape(name)}/</a></td>"
                f"<td>{html.escape(s['title'], quote=False)}</td>"
                f"<td>{html.escape(', '.join(s['suites']) or '—')}</td>"
                f"<td>{html.escape(', '.join(s['runs']) or '—')}</td>"
                f"<td>{html.escape(st or '—')}</td>"
                f"<td>{tally_html(s['verdicts']) or '—'}</td>"
                f"<td>{', '.join(f'<code>{html.escape(c)}</code>' for c in s['commits']) or '—'}</td>"
                "</tr>")
        body.append('<div class="table-wrap"><table class="reports"><thead><tr><th>report</th><th>title</th>'
                    "<th>suite</th><th>device-preset</th><th>rows</th><th>published claims</th><th>commit</th>"
                    "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>")
    else:
        body.append("<p>(no report pages yet: <code>ablate report RESULTS --out DIR</code> writes them)</p>")
    body.append("<footer>Written by <code>python -m ablate.reporting.report index</code>. One self-contained file: no script, "
                "no network; the links are relative.</footer>")
    return html_document("Reports", body)


def write_root_index(root: Path) -> Path:
    out = Path(root) / "index.html"
    write_text(out, render_root(Path(root)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Command line


USAGE = """usage: python -m ablate.reporting.report index [ROOT]   ROOT/index.html linking every report page below ROOT
                                             (default ROOT: reports)
       python -m ablate.reporting.report html DIR...    (re)write the index.html pages of existing report folders
"""


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] not in ("index", "html") or any(a in ("-h", "--help") for a in args):
        (sys.stdout if any(a in ("-h", "--help") for a in args) else sys.stderr).write(USAGE)
        return 0 if any(a in ("-h", "--help") for a in args) else 2
    if args[0] == "index":
        if len(args) > 2:
            sys.stderr.write(USAGE)
            return 2
        root = Path(args[1] if len(args) > 1 else "reports")
        if not root.is_dir():
            sys.stderr.write(f"error: {root} is not a folder\n")
            return 2
        sys.stdout.write(f"{write_root_index(root)}\n")
        return 0
    if len(args) < 2:
        sys.stderr.write(USAGE)
        return 2
    for d in args[1:]:
        if not is_report_index(Path(d) / "index.md"):
            sys.stderr.write(f"error: {d}/index.md is not an `ablate report` index\n")
            return 2
        for p in write_pages(Path(d)):
            sys.stdout.write(f"{p}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
