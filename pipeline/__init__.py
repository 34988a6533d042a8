"""Backflush reconciliation: landing tables in, backflush adjustments, postings and variance out."""

__version__ = "0.1.0"
