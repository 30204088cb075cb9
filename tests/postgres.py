"""A private PostgreSQL server for a test session or a benchmark, never the machine's own.

``initdb`` into a fresh temporary directory, then ``postgres`` on a free port of 127.0.0.1 (and a
unix socket in that directory), password authentication (scram-sha-256) with a password made for
this server, stopped and removed at the end. PostgreSQL refuses to run as root: when this process
is root, the server runs as the ``postgres`` system user, which owns the directory.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import psycopg
from psycopg import sql

from tests.mosquitto import free_port

SUPERUSER = "postgres"
SERVER_USER = "postgres"
"""The system user the server runs as when this process is root (Debian's postgresql package)."""

# Throwaway data: a crash loses nothing worth keeping, and the suite creates a database per test.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresError(RuntimeError):
    """The server could not be found, set up or started; the message says why and what to do."""


def find_bindir() -> Path:
    """The directory holding the server binaries (``initdb``, ``postgres``).

    ``pg_config --bindir`` first; on Debian it may name a client-only version, so then the newest
    ``/usr/lib/postgresql/<version>/bin``, then wherever ``initdb`` is on the PATH.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=_version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise PostgresError(
        "the PostgreSQL server (initdb and postgres) is not installed: "
        "run tools/install-system-deps.sh"
    )


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def _owner() -> pwd.struct_passwd | None:
    """Whom the server runs as: None for this process's own user, unless that is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses root: there is no {SERVER_USER!r} system "
            "user to run it as (the postgresql package, tools/install-system-deps.sh, adds it)"
        ) from None


class Postgres:
    """A PostgreSQL server on 127.0.0.1:`port`; `durable` keeps fsync and full-page writes on.

    Use as a context manager, or `start()` and `stop()`.
    """

    host = "127.0.0.1"

    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = find_bindir()
        self.owner = _owner()
        # UTC whatever the host's zone: timestamps read back the same on every machine.
        self.settings = {"timezone": "UTC"} | ({} if durable else FAST)
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """The SQLAlchemy URL of `database`; ``driver="postgresql"`` gives a libpq one."""
        return f"{driver}://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Postgres:
        """initdb, start, and wait until the server accepts a login; raise with its log if not."""
        self.workdir = Path(tempfile.mkdtemp(prefix="roadsign-postgres-"))
        try:
            self._initdb()
            # Two processes can draw the same free port; the loser sees it taken and draws again.
            for _ in range(5):
                self.port = free_port()
                if self._run(timeout):
                    return self
            raise PostgresError(f"postgres found no free port: {self._log()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (a fast shutdown: clients are disconnected) and delete its files."""
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """CREATE DATABASE `name`, a copy of `template` when given."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(query)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name`, disconnecting whoever is still connected to it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def execute(self, query: sql.SQL | sql.Composed) -> None:
        """Run one statement outside a transaction (as CREATE DATABASE needs) as the superuser."""
        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as admin:
            admin.execute(query)

    def _initdb(self) -> None:
        assert self.workdir is not None
        password_file = self.workdir / "password"
        password_file.write_text(self.password)
        if self.owner is not None:
            for path in (self.workdir, password_file):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        initdb = self._spawn(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.workdir / "data"),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(password_file),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                # Only initdb's own files skip the flush to disk; the server's settings decide
                # how durable the data is.
                "--no-sync",
                "--no-instructions",
            ],
            subprocess.PIPE,
        )
        try:
            output, _ = initdb.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            initdb.kill()
            raise PostgresError("initdb did not finish within 120 s") from None
        finally:
            password_file.unlink()
        if initdb.returncode != 0:
            raise PostgresError(
                f"initdb failed ({initdb.returncode}): {output.decode(errors='replace')}"
            )

    def _run(self, timeout: float) -> bool:
        """Start postgres on `self.port`; True once it accepts a login, False if the port was
        taken, PostgresError for any other failure."""
        assert self.workdir is not None
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.workdir / "data")]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        with (self.workdir / "postgres.log").open("wb") as log:
            self.process = self._spawn(argv, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                if "could not bind" in self._log() or "could not create any TCP" in self._log():
                    return False
                raise PostgresError(f"postgres exited at start: {self._log()}")
            try:
                psycopg.connect(self.url(driver="postgresql"), connect_timeout=2).close()
            except psycopg.OperationalError:
                time.sleep(0.05)
            else:
                return True
        raise PostgresError(
            f"postgres did not accept a login within {timeout:.0f} s: {self._log()}"
        )

    def _spawn(self, argv: list[str], stdout: IO[bytes] | int) -> subprocess.Popen[bytes]:
        """Start a server binary as the server's owner, in its directory, with a clean
        environment (no PG* variable of ours leaks in), stderr with stdout."""
        assert self.workdir is not None
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        owner = self.owner
        if owner is not None:
            env |= {"HOME": owner.pw_dir, "USER": owner.pw_name}
        return subprocess.Popen(
            argv,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
            # Its own session: a Ctrl-C meant for pytest must not stop it before teardown.
            start_new_session=True,
        )

    def _log(self) -> str:
        assert self.workdir is not None
        log = self.workdir / "postgres.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
