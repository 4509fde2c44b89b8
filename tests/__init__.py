"""The tests, one folder per room of ablate/ (tests/core for ablate/core, ...)."""
