"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, started on a Unix socket in a temporary
directory, as its own user (the server refuses to run as root), and torn down after.

One server per test process, started on first use (`server()`); each test gets a fresh database
(`PostgresServer.new_database`). Tests that need it skip with a reason when the binaries are absent
(`.ci/run` installs the `postgresql` package). Nothing listens on TCP: the socket lives in a folder
only the server's user and root can enter.
"""
from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "postgres"  # Debian's package creates it; used when the tests run as root
SUPERUSER = "facedemo"  # the database role the tests (and the vault) connect as
_counter = itertools.count(1)
_server: PostgresServer | None = None
_unavailable: str | None = None


def binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres (PATH first, then /usr/lib/postgresql/*/bin), or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def database_name(url: str) -> str:
    """The database a URL of `PostgresServer.url` names."""
    return url.split("?", 1)[0].rsplit("/", 1)[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening only on a Unix socket in that folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="facedemo-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # the socket file is .s.PGSQL.5432 in here
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError(f"running as root and there is no {SERVER_USER!r} user to run the server as") from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [*self._as_user, *args]
        # LC_ALL=C: the cluster's locale does not depend on the machine's; HOME: setpriv keeps root's.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(self.root)}
        env.pop("PGDATA", None)
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--no-instructions",
        )
        # Only the Unix socket, in our folder. fsync off: the tests never survive a power cut of the machine;
        # synchronous_commit stays on, so a commit survives the server being killed (stop("immediate")).
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
            )

    def start(self) -> None:
        """Start (or restart after `stop`) and wait until it accepts connections."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean) or "immediate" (as if the machine lost power: connections just drop)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        """The libpq URL of `database`: the socket folder as host, the tests' role, no password (trust)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def execute(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement in autocommit on its own connection; the rows it returns (if any)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = f"vault_{os.getpid()}_{next(_counter)}"
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')

    def tool(self, name: str) -> str:
        """The path of a client program of the same version (pg_dump, psql)."""
        return str(self.bin_dir / name)


def server() -> PostgresServer:
    """The test process's PostgreSQL server, started on first use; skips the test when it cannot run here."""
    global _server, _unavailable
    if _server is not None:
        return _server
    if _unavailable is None:
        bin_dir = binaries()
        if bin_dir is None:
            _unavailable = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
        else:
            started = time.perf_counter()
            try:
                candidate = PostgresServer(bin_dir)
                try:
                    candidate.init()
                    candidate.start()
                except BaseException:
                    candidate.close()
                    raise
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                _unavailable = f"cannot start a PostgreSQL server here: {exc}"
            else:
                _server = candidate
                atexit.register(candidate.close)
                candidate.startup_s = time.perf_counter() - started
                return candidate
    pytest.skip(_unavailable)


def fresh_database() -> Iterator[str]:
    """The body of a `pg_url` fixture: the URL of a fresh database on the test server, dropped afterwards;
    skips without PostgreSQL. Test modules declare the fixture themselves:
        @pytest.fixture
        def pg_url():
            yield from fresh_database()
    """
    srv = server()
    url = srv.new_database()
    yield url
    srv.drop_database(url)
