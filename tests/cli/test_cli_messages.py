"""What the command line tells users (issue 23): no legacy advice in errors, install hints that name the real
distribution (``ablate-bench``; ``ablate`` on PyPI is an unrelated project), and a README extras table that lists
every extra."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
OLD_HINT = re.compile(r"'ablate\[")  # pip install 'ablate[flash]': the unrelated PyPI project


@pytest.mark.parametrize("setting, sweep", [("model.position=alibi", "--sweep model.position=a,b"),
                                            ("grid.mode=factorial", "--sweep model.KEY=a,b"),
                                            ("model.scale_embeddings=false", "--sweep model.scale_embeddings=")])
def test_training_errors_advise_sweep_not_the_legacy_grid(capsys, tmp_path, setting, sweep):
    code, out, err = cli(capsys, "run", "--suite", "training", "--preset", "micro", "--device", "cpu", "--set",
                         setting, "--out", str(tmp_path), "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("ablate: error: "), err
    assert sweep in err and "--grid" not in err, err


def test_no_install_hint_names_the_unrelated_ablate_project():
    """Every message in the code (and the tests' skip reasons) says pip install 'ablate-bench[EXTRA]'."""
    roots = [ROOT / "ablate", ROOT / "suites", ROOT / "variants", ROOT / "tests", ROOT / "cli.py"]
    files = [f for r in roots for f in ([r] if r.is_file() else r.rglob("*.py"))]
    hits = []
    for f in files:
        if f.resolve() == Path(__file__).resolve():
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if OLD_HINT.search(line) and "str.replace(\"'ablate[\"" not in line:
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("name", ["cpu", "gpu"], ids=["cpu-rows", "cuda-rows"])
def test_reports_of_committed_rows_name_the_distribution(name):
    """Latency rows written before the rename say pip install 'ablate[flash]'; the report's status table (the
    source of latency_status.md/.tex and the HTML page) says 'ablate-bench[flash]'."""
    from ablate.store.results import to_frame
    from ablate.suites.latency.tables import status_table

    path = ROOT / "results" / "latency" / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"no {path.relative_to(ROOT)} in this tree")
    df = to_frame(path)
    assert df["reason"].fillna("").str.contains("'ablate[", regex=False).any()  # the stored rows, as committed
    reasons = status_table(df)["reason"]
    assert not reasons.str.contains("'ablate[", regex=False).any()
    assert reasons.str.contains("pip install 'ablate-bench[", regex=False).any()


def test_readme_extras_table_lists_every_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"(?m)^\| `\[(\w+)\]`.*$", readme)}
    listed = set(rows) | {x for row in rows.values() for x in re.findall(r"`\[(\w+)\]`", row.split("|")[1])}
    assert set(extras) <= listed, f"extras missing from the README table: {sorted(set(extras) - listed)}"
    assert {"hf", "refs"} <= listed
    dev = rows["dev"]
    names = [re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0] for req in extras["dev"]]
    assert all(f"`{n}`" in dev for n in names), [n for n in names if f"`{n}`" not in dev]
