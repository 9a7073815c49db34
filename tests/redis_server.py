"""The private ``redis-server`` for tests that stop, kill or restart Redis (never the shared one).

The server is :class:`federation.chaos.servers.RedisServer`; this module re-exports it and provides the
``private_redis`` fixture (``from tests.redis_server import private_redis``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.chaos.servers import RedisServer, free_port

__all__ = ["RedisServer", "free_port", "private_redis"]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A persistent private server in this test's temporary folder, killed afterwards."""
    with RedisServer(tmp_path / "redis", persist=True) as server:
        yield server
