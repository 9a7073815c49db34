"""A private PostgreSQL server for tests that stop and restart one (never the shared server).

``PrivateServer`` runs ``initdb`` in a temporary folder and starts ``postgres`` on a free port with trust
authentication; ``stop()`` / ``start()`` / ``kill()`` really stop and start the server process.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="federation-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._root = os.geteuid() == 0
        if self._root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_owner(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _as_owner(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self._root else list(cmd)
        return subprocess.run(full, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._as_owner(
            _bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, the server shuts down cleanly; ``immediate``: as a crash."""
        self._as_owner(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def wait_ready(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            probe = self._as_owner(_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"private PostgreSQL on port {self.port} did not come up")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(name="server")
def private_postgres() -> Iterator[PrivateServer]:
    """A private PostgreSQL server, started; destroyed after the test (import it as ``server``)."""
    pg = PrivateServer()
    pg.start()
    yield pg
    pg.destroy()
