"""Make sure the PostgreSQL and Redis servers the tests talk to are up, starting (or installing) them.

Run by ``tests/conftest.py`` at the start of every pytest session, so the README's test command (and
``.ci/run``) never passes because a server was silently missing. Also runnable alone::

    python tests/services.py          # check, start if absent, print what it did

Where the servers are:

- PostgreSQL: ``FEDERATION_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
- Redis: ``FEDERATION_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``).

If the default server does not answer, on a Debian machine (as root) this installs the Debian packages
``postgresql`` and ``redis-server`` when they are missing, starts them, lets local TCP connections in
without a password (trust, as on the CI machines) and creates the database ``test``. A server at a
non-default address is only checked: start it yourself. Anything that fails raises with what to do.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

POSTGRES_URL = os.environ.get("FEDERATION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FEDERATION_TEST_REDIS", "redis://127.0.0.1:6379/0")
_DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
_DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class ServiceError(RuntimeError):
    """A test server is not reachable and could not be started."""


def _log(message: str) -> None:
    print(f"[services] {message}", flush=True)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=600)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise ServiceError(f"{what} did not come up within {seconds:.0f} s")


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"{package} is not installed and this is not a Debian machine run as root; install and start "
            f"it yourself (or point FEDERATION_TEST_POSTGRES / FEDERATION_TEST_REDIS at running servers)"
        )
    _log(f"installing Debian package {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
    install = subprocess.run(
        ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True, env=env
    )
    if install.returncode != 0:
        raise ServiceError(f"apt-get install {package} failed:\n{update.stderr}\n{install.stderr}")


# ------------------------------------------------------------------------------------------------ Redis
def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis(url: str = REDIS_URL) -> str:
    """Return what was done ("running", "started", "installed and started")."""
    parts = urlparse(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if _redis_ping(host, port):
        return "running"
    if url != _DEFAULT_REDIS:
        raise ServiceError(f"Redis at {url} does not answer PING; start it (FEDERATION_TEST_REDIS)")
    done = "started"
    if shutil.which("redis-server") is None:
        _apt_install("redis-server")
        done = "installed and started"
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    _run(
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(port),
        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
    )  # fmt: skip
    _wait(lambda: _redis_ping(host, port), f"Redis on {host}:{port}")
    return done


# ------------------------------------------------------------------------------------------- PostgreSQL
def _pg_answers(url: str) -> bool:
    if shutil.which("psql") is None:
        parts = urlparse(url)
        return _port_open(parts.hostname or "127.0.0.1", parts.port or 5432)
    probe = subprocess.run(
        ["psql", url, "-Atqc", "SELECT 1"], capture_output=True, text=True, timeout=30, check=False
    )
    return probe.returncode == 0


def _pg_version_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent.parent if found else None


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        return _run("runuser", "-u", "postgres", "--", *cmd, check=False)
    return _run(*cmd, check=False)


def ensure_postgres(url: str = POSTGRES_URL) -> str:
    """Return what was done ("running", "started", "installed and started")."""
    if _pg_answers(url):
        return "running"
    if url != _DEFAULT_POSTGRES:
        raise ServiceError(f"PostgreSQL at {url} does not answer; start it (FEDERATION_TEST_POSTGRES)")
    done = "started"
    if _pg_version_dir() is None:
        _apt_install("postgresql")
        done = "installed and started"
    version_dir = _pg_version_dir()
    if version_dir is None:
        raise ServiceError("PostgreSQL was installed but no server binary is in /usr/lib/postgresql")
    version = version_dir.name
    if not Path(f"/etc/postgresql/{version}/main").is_dir():
        _run("pg_createcluster", version, "main")
    hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
    trust = "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n"
    if hba.is_file() and not hba.read_text().startswith(trust):
        hba.write_text(trust + hba.read_text())  # first match wins: local connections need no password
    conf = Path(f"/etc/postgresql/{version}/main/postgresql.conf")
    if conf.is_file() and "listen_addresses = '127.0.0.1" not in conf.read_text():
        conf.write_text(conf.read_text() + "\nlisten_addresses = '127.0.0.1,::1'\nport = 5432\n")
    started = _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start", check=False)
    if started.returncode != 0 and "already running" not in started.stderr:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "reload", check=False)
    _wait(lambda: _port_open("127.0.0.1", 5432), "PostgreSQL on 127.0.0.1:5432")
    exists = _as_postgres("psql", "-Atqc", "SELECT 1 FROM pg_database WHERE datname = 'test'")
    if exists.stdout.strip() != "1":
        _as_postgres("createdb", "test")
    _wait(lambda: _pg_answers(url), f"PostgreSQL at {url}")
    return done


def ensure_services() -> dict[str, str]:
    """Check both servers, starting what is absent; returns what was done for each."""
    return {"postgresql": ensure_postgres(), "redis": ensure_redis()}


if __name__ == "__main__":
    for name, what in ensure_services().items():
        _log(f"{name}: {what}")
