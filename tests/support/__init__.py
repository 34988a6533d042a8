"""Shared test fixtures: landing builders, PostgreSQL, the Airflow environment, fault injection."""
