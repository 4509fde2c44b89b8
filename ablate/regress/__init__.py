"""Regression gates: comparing results against a baseline, calibrating the thresholds, the nightly job."""
