"""Benchmark suites: training, length extrapolation and latency."""
