"""Tests of pipeline/intake/."""
