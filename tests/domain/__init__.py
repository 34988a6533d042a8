"""Tests of pipeline/domain/."""
