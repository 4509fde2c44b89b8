"""Helpers the test modules share."""

from __future__ import annotations

import pytest

from ablate.cli import main


def cli(capsys, *argv, env: dict | None = None) -> tuple[int, str, str]:
    """Run ``ablate argv`` in-process (each argument as ``str``; ``env``: variables set for the call); returns
    ``(exit code, stdout, stderr)`` of this call only (output captured before it is dropped)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err
