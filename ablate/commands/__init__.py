"""The command line's helpers; the typer app itself is ``ablate.cli`` (the top-level cli.py)."""
