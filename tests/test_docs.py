"""Docs that match the code: every relative link in README.md and docs/ resolves inside the repository, and every
`ablate <command>` they show is a real command whose --help runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repo(doc):
    for m in re.finditer(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name}: link {target} points to nothing"
        assert ROOT in path.parents or path == ROOT, f"{doc.name}: link {target} leaves the repository"


def test_every_command_the_docs_show_exists_and_its_help_runs():
    shown = set()
    for doc in DOCS:
        shown |= set(re.findall(r"(?m)(?:^|[`$]\s?)ablate ([a-z][a-z-]+)", doc.read_text(encoding="utf-8")))
    assert {"run", "report", "compare", "list"} <= shown
    runner = CliRunner()
    for command in sorted(shown):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"`ablate {command} --help` failed: {result.output[-300:]}"


DIARY = re.compile(r"\b(this session|in this session|not run in this|yesterday|today|last session|next session)\b",
                   re.IGNORECASE)


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_describe_the_code_not_a_session(doc):
    """Docs say what the code does and what was measured (with the command), never when a session did or did not
    do something."""
    hits = [f"{doc.name}:{i}: {line.strip()[:100]}" for i, line in enumerate(doc.read_text().splitlines(), 1)
            if DIARY.search(line)]
    assert not hits, "diary wording:\n" + "\n".join(hits)
