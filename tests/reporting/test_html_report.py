"""index.html pages of `ablate report` (ablate.reporting.html_report): one self-contained file per report folder and suite
sub-folder, and a root page linking them.

Always: a report made from a small results fixture (a fake training suite writing a claims table, tables, a figure
and a sub-folder index) and the committed reports/ pages parse, reference nothing outside themselves (``data:``
URIs, ``#anchors`` with a target, relative links to other index.html pages only), hold every table and figure of
their folder, escape what they show, and equal a fresh rendering of their folder.

With Chromium on PATH (``apt-get install -y chromium``): the pages are screenshotted in headless Chromium, with
the network off, by scripts/screenshot_reports.py, and the screenshots are checked not to be blank. Without it those
tests are skipped (CI has no browser).
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import types
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ablate.reporting import html_index, html_report
from ablate.reporting.report import MARKER, build_report
from ablate.store.results import append_row, make_row

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
EVIL = '<script>alert("x")</script> & a|b'

ENV = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1",
       "env.git_commit": "a" * 40, "env.git_dirty": False, "env.cpu": "AMD EPYC <Zen4>"}


# ---------------------------------------------------------------------------------------------------------------
# What a page must be


class _Page(HTMLParser):
    """Collects ids, src/href, data-source and tags, and checks that elements nest and close."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.sources: dict[str, set[str]] = {}  # tag -> data-source values
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        for k in ("src", "href", "srcset", "action", "poster", "data"):
            if k in a:
                self.refs.append((tag, k, a[k] or ""))
        if "data-source" in a:
            self.sources.setdefault(tag, set()).add(a["data-source"])
        self._in_style = tag == "style"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        self._in_style = False
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        if self._in_style:
            self.style += data
        else:
            self.text.append(data)


def parse(path: Path) -> _Page:
    p = _Page()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>"), path
    p.feed(text)
    p.close()
    assert not p.errors, f"{path}: {p.errors[:5]}"
    assert not p.stack, f"{path}: unclosed {p.stack}"
    return p


def check_self_contained(path: Path) -> _Page:
    page = parse(path)
    assert len(page.ids) == len(set(page.ids)), f"{path}: duplicate ids"
    assert not page.tags & {"script", "link", "iframe", "object", "embed", "base"}, page.tags
    assert "url(" not in page.style and "@import" not in page.style
    for tag, attr, value in page.refs:
        if value.startswith("#"):
            assert value[1:] in page.ids, f"{path}: <{tag} {attr}={value}> points to no id"
        elif value.startswith("data:"):
            assert tag == "img" and attr == "src" and value.startswith(("data:image/svg+xml;base64,",
                                                                        "data:image/png;base64,")), value[:40]
        else:
            assert ":" not in value and not value.startswith("/"), f"{path}: external {attr}={value}"
            assert tag == "a" and value.endswith("index.html"), f"{path}: <{tag} {attr}={value}>"
            assert (path.parent / value).is_file(), f"{path}: link {value} points to nothing"
    return page


def check_has_every_table_and_figure(path: Path) -> None:
    """Every table (``*.md`` but the indexes) and figure (``.svg``/``.png`` stem) of the page's folder is on it."""
    page = check_self_contained(path)
    folder = path.parent
    files = html_report._owned_files(folder)
    tables = {f.relative_to(folder).as_posix() for f in files if f.suffix == ".md" and f.name != "index.md"
              and not f.name.endswith("_index.md")}
    figures = {f.relative_to(folder).with_suffix("").as_posix() for f in files if f.suffix in (".svg", ".png")}
    shown = page.sources.get("table", set())
    assert tables <= shown, f"{path}: tables missing {sorted(tables - shown)}"
    fig_shown = {Path(s).with_suffix("").as_posix() for s in page.sources.get("figure", set())}
    assert figures <= fig_shown, f"{path}: figures missing {sorted(figures - fig_shown)}"
    imgs = [v for t, a, v in page.refs if t == "img"]
    assert len(imgs) >= len(figures)


# ---------------------------------------------------------------------------------------------------------------
# A report from a small results fixture


def _png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="300" height="120" viewBox="0 0 300 120">'
       '<rect width="300" height="120" fill="#fff"/><path d="M10 110 L150 20 L290 60" stroke="#0a58ca" '
       'stroke-width="6" fill="none"/><text x="12" y="18" font-size="14">val loss</text></svg>')


@pytest.fixture
def fake_training(monkeypatch):
    """``ablate.suites.training`` as a fake whose report() writes a ``cpu-tiny/`` folder like the real one: a
    results table (with HTML and a pipe in a cell), a claims table, an unreferenced table, a figure (SVG + PNG), a
    PNG-only figure and its own index.md."""
    mod = types.ModuleType("ablate.suites.training")

    def report(rows, out_dir):
        import pandas as pd

        from ablate.reporting.tables import to_markdown, write_table

        sub = Path(out_dir) / "cpu-tiny"
        sub.mkdir(parents=True, exist_ok=True)
        t = rows[["point", "seed", "val_loss"]].sort_values(["point", "seed"]).reset_index(drop=True)
        files = list(write_table(t, sub / "training_table", caption="val loss <per point>"))
        claims = pd.DataFrame([{"published claim": "GLU beats ReLU", "published": "1.997 → 1.944",
                                "verdict": "reproduced"},
                               {"published claim": "RMSNorm ≈ LayerNorm", "published": "1.838 → 1.821",
                                "verdict": "not reproduced"},
                               {"published claim": EVIL, "published": "—", "verdict": "inconclusive"}])
        files += list(write_table(claims, sub / "training_findings", caption="claims checked"))
        files += list(write_table(pd.DataFrame({"k": ["x"], "v": [1.5]}), sub / "training_extra", caption="extra"))
        (sub / "training_curves.svg").write_text(SVG)
        (sub / "training_curves.png").write_bytes(_png())
        (sub / "training_pareto.png").write_bytes(_png(5, 5))
        files += [sub / "training_curves.svg", sub / "training_curves.png", sub / "training_pareto.png"]
        idx = sub / "index.md"
        idx.write_text("<!-- ablate:training -->\n# Training ablations: cpu-tiny\n\nSome *prose* with `code` and "
                       "**bold** & <angle>.\n\n## Results\n\n" + to_markdown(t, caption="val loss <per point>")
                       + "\n## Curves\n\n![validation loss curves](training_curves.png)\n\n"
                       "## Claims\n\n" + to_markdown(claims, caption="claims checked")
                       + "\n## Files\n\n[training_table.md](training_table.md) · [training_table.tex]"
                       "(training_table.tex); docs: [training](../../docs/training.md), "
                       "[web](https://example.com/x)\n")
        return files + [idx]

    mod.report = report
    monkeypatch.setitem(sys.modules, "ablate.suites.training", mod)


def _row(point, val_loss, env=None, seed=0, ts=None):
    r = make_row("training", "ok", {"point": point, "seed": seed, "device": "cpu"}, {"val_loss": val_loss},
                 env=dict(ENV if env is None else env))
    if ts:
        r["timestamp"] = ts
    return r


@pytest.fixture
def report_dir(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    two = {**ENV, "env.git_commit": "b" * 40}
    res = tmp_path / "results" / "training"
    for r in [_row("base", 2.0, ts="2030-01-01T00:00:00.000000Z"), _row(EVIL, 2.5, ts="2030-01-01T00:00:01.000000Z")]:
        append_row(res / "cpu-tiny.jsonl", r)
    append_row(res / "cpu-tiny-2.jsonl", _row("base", 2.2, env=two, ts="2030-01-02T00:00:00.000000Z"))
    rep = build_report([Path("results/training")], Path("reports/training"))
    rep.html = [p.resolve() for p in rep.html]
    return rep


def test_report_writes_self_contained_pages(report_dir, tmp_path):
    out = tmp_path / "reports" / "training"
    assert (out / "index.md").read_text().startswith(MARKER)
    assert report_dir.html == [out / "index.html", out / "cpu-tiny" / "index.html"]
    assert {p.name for p in report_dir.html} <= {p.name for p in report_dir.all_files()}
    for page in report_dir.html:
        check_has_every_table_and_figure(page)
    text = (out / "index.html").read_text(encoding="utf-8")
    page = parse(out / "index.html")
    # claims near the top: before the suite's narrative and the provenance, with the verdict tally
    assert text.index('id="claims"') < text.index("Training ablations: cpu-tiny</h2>") < text.index(
        'id="provenance"')
    assert 'class="v-reproduced">1 reproduced' in text and 'class="v-not-reproduced">1 not reproduced' in text
    # every figure embedded (the SVG where there is one), across-runs view included (two commits)
    assert text.count("data:image/svg+xml;base64,") >= 2 and "data:image/png;base64," in text
    assert 'data-source="cross_run_runs.md"' in text and 'data-source="cross_run.svg"' in text
    # provenance: the command, the inputs, the environment, the commits
    assert "ablate report results/training --out reports/training" in text
    assert "results/training/cpu-tiny.jsonl" in text and "NVIDIA H100 80GB HBM3" in text
    assert "aaaaaaaaaa" in text and "bbbbbbbbbb" in text
    # escaped, never markup: the evil cell reads as text (its pipe unescaped), the env value too
    body = "".join(page.text)
    assert EVIL in body and "AMD EPYC <Zen4>" in body and "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a|b" in text or \
        "&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; a|b" in text
    # links: the .md table to its anchor, the .tex / docs / web ones as plain text
    assert 'href="#table-cpu-tiny-training-table"' in text and "training_table.tex" in text
    assert "https://example.com/x" in body and 'href="https' not in text
    # the inline copy of the claims table in the suite index points up to the one shown first
    assert text.count('data-source="cpu-tiny/training_findings.md"') == 1
    # the sub-folder page links back up to the report page and repeats its provenance
    sub = (out / "cpu-tiny" / "index.html").read_text(encoding="utf-8")
    assert 'href="../index.html"' in sub and 'id="provenance"' in sub and "NVIDIA H100 80GB HBM3" in sub


def test_pages_are_deterministic_and_rebuildable_from_the_folder(report_dir, tmp_path):
    out = tmp_path / "reports" / "training"
    first = {p: p.read_bytes() for p in report_dir.html}
    assert html_index.main(["html", str(out)]) == 0
    assert {p: p.read_bytes() for p in report_dir.html} == first
    assert html_report.render_folder(out).encode() == first[out / "index.html"]


def test_root_page_links_every_report_page(report_dir, tmp_path, capsys):
    from ablate.reporting.report import _main

    root = tmp_path / "reports"
    assert _main(["index", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / "index.html")
    page = check_self_contained(root / "index.html")
    links = {v for t, a, v in page.refs if t == "a"}
    assert links == {"training/index.html", "training/cpu-tiny/index.html"}
    text = (root / "index.html").read_text(encoding="utf-8")
    assert "Training ablations: cpu-tiny" in text and "cpu-tiny-2" in text
    assert "3 (3 ok)" in text and "1 reproduced" in text and "aaaaaaaaaa" in text


def test_cli_usage_and_errors(tmp_path, capsys):
    from ablate.reporting.report import _main

    assert _main(["index", str(tmp_path / "missing")]) == 2
    assert _main(["html", str(tmp_path)]) == 2
    assert _main([]) == 2 and "index [ROOT]" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _main(["index", str(tmp_path / "empty")]) == 0
    check_self_contained(tmp_path / "empty" / "index.html")


def test_markdown_tables_parse_as_ablate_writes_them():
    t = html_report.parse_md_table("| a   |   b |\n|:----|----:|\n| x\\|y | 1.5 |\n| \\\\z |   — |\n\n"
                                   "Table: the caption\n")
    assert t.header == ["a", "b"] and t.rows == [["x|y", "1.5"], ["\\z", "—"]]
    assert t.numeric == [False, True] and t.caption == "the caption"
    assert html_report.parse_md_table("no table here") is None


def test_marker_matches_the_report_module():
    assert html_report.REPORT_MARKER == MARKER


# ---------------------------------------------------------------------------------------------------------------
# The committed pages


COMMITTED = sorted(p for p in REPORTS.rglob("index.html") if p.parent != REPORTS) if REPORTS.is_dir() else []


@pytest.mark.parametrize("page", COMMITTED or [pytest.param(None, marks=pytest.mark.skip(
    reason="no committed reports/**/index.html"))], ids=lambda p: p.parent.relative_to(REPORTS).as_posix() if p else "")
def test_committed_pages_are_complete_and_up_to_date(page):
    check_has_every_table_and_figure(page)
    fresh = html_report.render_folder(page.parent)
    assert page.read_text(encoding="utf-8") == fresh, \
        f"{page} is out of date with its folder: run `bash scripts/regenerate_reports.sh` and commit it"


def test_every_committed_report_folder_has_a_page_and_the_root_links_them():
    from ablate.reporting.report import report_units

    units = report_units(p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "results").glob("*/*.jsonl")))
    if not units:
        pytest.skip("no committed results")
    for _, out in units:
        assert (ROOT / out / "index.html").is_file(), f"{out}/index.html missing: bash scripts/regenerate_reports.sh"
    root = REPORTS / "index.html"
    assert root.is_file(), "reports/index.html missing: bash scripts/regenerate_reports.sh"
    page = check_self_contained(root)
    links = {v for t, a, v in page.refs if t == "a"}
    assert links == {p.relative_to(REPORTS).as_posix() for p in COMMITTED}
    assert root.read_text(encoding="utf-8") == html_index.render_root(REPORTS), \
        "reports/index.html is out of date: python -m ablate.reporting.report index reports"


# ---------------------------------------------------------------------------------------------------------------
# In a real browser


def _shots():
    spec = importlib.util.spec_from_file_location("screenshot_reports", ROOT / "scripts" / "screenshot_reports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _need_chromium():
    chromium = _shots().find_chromium()
    if chromium is None:
        pytest.skip("headless Chromium not found on PATH (apt-get install -y chromium; or set $CHROMIUM): "
                    "the screenshot check needs a real browser")
    return chromium


def test_fixture_page_renders_in_headless_chromium(report_dir, tmp_path):
    chromium = _need_chromium()
    shots = _shots()
    for page in report_dir.html:
        png = tmp_path / "shots" / f"{page.parent.name}.png"
        dom = shots.screenshot(page, png, chromium, 1280, 2000)
        frac, colours, size = shots.ink(png)
        assert size == (1280, 2000)
        assert frac > 0.01 and colours > 2, f"{page}: blank screenshot ({frac:.2%} ink)"
        assert "Training ablations: cpu-tiny" in dom and "<img" in dom


def test_committed_pages_render_in_headless_chromium(tmp_path):
    _need_chromium()
    if not COMMITTED:
        pytest.skip("no committed reports/**/index.html")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_reports.py"), str(REPORTS),
                           "--out", str(tmp_path / "shots")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok   ") == len(COMMITTED) + 1  # every page and the root page
