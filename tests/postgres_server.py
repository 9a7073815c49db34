"""The private PostgreSQL server for tests that stop and restart one (never the shared server).

The server is :class:`federation.chaos.servers.PostgresServer`; this module keeps the name the tests use
and the ``server`` fixture (import ``private_postgres`` from here).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from federation.chaos.servers import PostgresServer, free_port

PrivateServer = PostgresServer

__all__ = ["PostgresServer", "PrivateServer", "free_port", "private_postgres"]


@pytest.fixture(name="server")
def private_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server, started; deleted after the test (import it as ``server``)."""
    with PostgresServer() as pg:
        yield pg
