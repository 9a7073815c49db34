"""Private PostgreSQL and Redis servers that the chaos harness may stop, kill and restart.

``federation chaos`` never touches a user's shared servers: a plan that restarts the database or takes
Redis down runs the fleet against one of these instead. Each owns a temporary folder (its data, socket
and log), listens on a free port of 127.0.0.1 and is gone after :meth:`close`::

    with PostgresServer() as pg:               # initdb + start; trust authentication, user postgres
        ledger = open_ledger(pg.url)
        pg.restart(down_s=2.0)                 # clients see the server go away for 2 s
    with RedisServer(persist=True) as redis:   # append-only file, fsync on every write
        redis.kill()                           # SIGKILL: a crash
        redis.start()                          # the same port (and, persisted, the same data) again

They need the server programs of the Debian packages ``postgresql`` (``initdb``, ``pg_ctl``,
``pg_isready``, found in ``/usr/lib/postgresql/*/bin`` or on ``PATH``) and ``redis-server``. PostgreSQL
refuses to run as root: as root the server runs as the ``postgres`` user (through ``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

ShutdownMode = Literal["fast", "immediate"]


class ServerError(RuntimeError):
    """A private server cannot be created, started or stopped; the message says why and what to do."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -------------------------------------------------------------------------------------------- PostgreSQL
def _postgres_program(name: str) -> str:
    """The newest installed version's ``name`` (Debian keeps them per version, off ``PATH``)."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise ServerError(
            f"PostgreSQL's {name} is not installed (looked in /usr/lib/postgresql/*/bin and PATH); install "
            "the server (Debian/Ubuntu: apt-get install postgresql; elsewhere put its bin folder on PATH)"
        )
    return path


class _PrivateServer:
    """What both private servers share: a folder of their own, and a context manager that starts the
    server and ends with :meth:`close` (kill, then delete the folder unless it was given)."""

    directory: Path
    _owned: bool

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Kill the server and delete its temporary folder (a ``directory`` given is kept)."""
        self.kill()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PostgresServer(_PrivateServer):
    """One private PostgreSQL server: ``initdb`` in a temporary folder at the first :meth:`start`, then
    ``postgres`` on 127.0.0.1:``port`` with trust authentication (user ``postgres``, database
    ``postgres``: see :attr:`url`). :meth:`stop`, :meth:`kill` and :meth:`restart` really stop the server
    process; :meth:`close` stops it and deletes the folder. A context manager starts and closes it."""

    def __init__(self, *, port: int | None = None, directory: Path | None = None) -> None:
        """``directory``: where the data folder and log go (default: a new temporary folder, deleted by
        :meth:`close`; a given one is kept, and as root the ``postgres`` user must be able to reach it).
        ``port``: default a free one."""
        self._programs = {name: _postgres_program(name) for name in ("initdb", "pg_ctl", "pg_isready")}
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError(
                    "running as root, and PostgreSQL refuses to: the server would run as the user "
                    "'postgres', which does not exist; install the postgresql package (it creates the "
                    "user) or run as another user"
                ) from None
        self._owned = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="federation-pg-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        """The cluster's data folder (``postmaster.pid`` there names the server process)."""
        self.port = port or free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        """Where clients connect (no password)."""

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [self._programs[program], *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise ServerError(
                f"private PostgreSQL on port {self.port}: {program} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-1500:]}{self._log_tail()}"
            )
        return done

    def _log_tail(self) -> str:
        log = self.directory / "log"
        if not log.is_file():
            return ""
        return f"\nserver log ({log}):\n{log.read_text(errors='replace')[-1500:]}"

    @property
    def running(self) -> bool:
        """Whether the server accepts connections now."""
        if not self.data.is_dir():
            return False
        probe = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1", check=False)
        return probe.returncode == 0

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server (creating its data folder the first time) and wait until it accepts
        connections."""
        if not (self.data / "PG_VERSION").is_file():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"),
            "-w", "-t", str(max(1, int(timeout_s))),
            "-o", f"-p {self.port} -k '{self.directory}' -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the server accepts connections; :class:`ServerError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.running:
            if time.monotonic() > deadline:
                raise ServerError(
                    f"private PostgreSQL on port {self.port} did not accept connections within "
                    f"{timeout_s:g} s{self._log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server. ``fast``: clients are disconnected and the server shuts down cleanly;
        ``immediate``: it quits without a shutdown checkpoint, as in a crash (recovery runs at the next
        start). Stopping a stopped server does nothing."""
        if (self.data / "postmaster.pid").is_file():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """Crash the server (:meth:`stop` ``immediate``)."""
        self.stop("immediate")

    def restart(self, down_s: float = 0.0, *, mode: ShutdownMode = "fast") -> None:
        """Stop the server, keep it down for ``down_s`` seconds, start it again (same port, same data)."""
        self.stop(mode)
        time.sleep(down_s)
        self.start()


# ------------------------------------------------------------------------------------------------- Redis
REDIS_PROGRAM = "redis-server"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_PrivateServer):
    """One private ``redis-server`` on 127.0.0.1:``port``: started by :meth:`start`, stopped,
    killed and restarted at will. ``persist=True`` keeps the data across a kill (append-only file,
    fsync on every write), as a production server would; without it a restart comes back empty.
    A context manager starts and closes it."""

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, persist: bool = False
    ) -> None:
        """``directory``: its data and log (default: a new temporary folder, deleted by :meth:`close`; a
        given one is kept). ``port``: default a free one."""
        program = shutil.which(REDIS_PROGRAM)
        if program is None:
            raise ServerError(
                f"{REDIS_PROGRAM} is not installed (not on PATH); install it (Debian/Ubuntu: apt-get install "
                "redis-server; macOS: brew install redis)"
            )
        self._program = program
        self._owned = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="federation-redis-")) if directory is None else directory
        )
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the server on its port and wait until it answers PING."""
        if self.running:
            raise ServerError(f"redis-server on port {self.port} is already running; stop or kill it first")
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        )
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [
                self._program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
                "--dir", str(self.directory), "--daemonize", "no", "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(self.port):
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                self.process = None
                raise ServerError(f"redis-server on port {self.port} exited at start (log {log}):\n{tail}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"redis-server on port {self.port} did not answer PING within {timeout_s:g} s"
                )
            time.sleep(0.05)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it stays up and accepts connections but answers nothing, so
        every call waits for its timeout, as with a hung or unreachable server. :meth:`resume` ends it."""
        if not self.running:
            raise ServerError(f"redis-server on port {self.port} is not running; start it before pausing it")
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); it answers the calls that waited."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down cleanly (SIGTERM: persisted data is flushed, clients are disconnected);
        a server that does not exit within ``timeout_s`` is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.send_signal(signal.SIGCONT)  # a paused server handles SIGTERM only once resumed
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: clients see their connections reset) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server, keep it down for ``down_s`` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()
