"""ablate: a benchmarking and ablation harness for Transformer components."""

__version__ = "0.1.0"
