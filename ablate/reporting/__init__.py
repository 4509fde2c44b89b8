"""Rows to tables, figures and HTML pages (torch-free)."""
