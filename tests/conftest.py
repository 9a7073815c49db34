"""Shared fixtures: one Ray instance for the whole session, temporary ledgers, paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


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
