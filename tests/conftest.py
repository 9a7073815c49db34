"""Shared fixtures: one Ray instance for the whole session, temporary ledgers, paths, and the real
PostgreSQL and Redis servers (checked, and started if absent, before the session: ``tests/services.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every run checks for its servers and starts them if absent: a green run never hides one."""
    done = services.ensure_services()
    started = {k: v for k, v in done.items() if v != "running"}
    if started:
        print(f"\n[services] {started}")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start Ray once per test session (start-up costs ~5 s here); every in-process run joins it."""
    import ray

    from federation.ray_runtime import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(services.POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL ledger URL of its own: a fresh schema (``search_path``) in the test database,
    dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in services.POSTGRES_URL else "?"
    yield f"{services.POSTGRES_URL}{sep}search_path={schema}"
    _pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def redis_url() -> str:
    """The test Redis server (its keys are shared: use ``redis_prefix`` for every key you make)."""
    return services.REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (``test:<id>:``); every key under it is deleted afterwards."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
