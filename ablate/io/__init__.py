"""Data in (corpora, tokenizers, Hugging Face datasets) and rows out (CSV/Parquet export, experiment trackers)."""
