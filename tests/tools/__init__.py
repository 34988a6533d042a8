"""Tests of pipeline/tools/."""
