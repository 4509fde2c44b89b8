"""Results and run state on disk: the row schema, validated reads, atomic appends, locks, live logs and the provenance
of a row (environment, git commit)."""
