"""The local PostgreSQL the SQL-source tests talk to (a real server, never a mock)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

URL = os.environ.get("BACKFLUSH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def reachable_engine(url: str = URL) -> sa.Engine:
    """An engine on the test database; the test is skipped when the server does not answer."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432; start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    return engine
