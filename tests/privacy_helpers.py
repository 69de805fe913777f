"""What the privacy tests share: stand-in templates, probes, a settable clock, the vault's files as bytes, and
`Place`, where a test's vault lives on either backend (SQLite, PostgreSQL)."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from privacy.vault import Vault
from tests import postgres_server

DB_FILE = "vault.sqlite3"
# PostgreSQL runs in `make test` (CI) and is left out of `make test-fast`: the server round trips
# double the loop's time while proving the same behaviours as on SQLite.
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.slow))


def random_templates(seed: int, k: int = 3, dim: int = 128) -> np.ndarray:
    """(k x dim) float32 random vectors standing in for face templates; the same seed gives the same vectors."""
    return np.random.default_rng(seed).standard_normal((k, dim)).astype(np.float32)


def no_probe(model_id: str, templates: np.ndarray) -> list[None]:
    """A probe for `Vault.forget` that identifies nobody."""
    return [None] * len(templates)


def nearest_subject_probe(vault: Vault, max_distance: float = 1.0):
    """A probe as the app would build it: identify each template against the vault's current gallery.

    Returns, per template, the id of the subject holding the nearest template within `max_distance`
    (Euclidean), or None.
    """

    def probe(model_id: str, templates: np.ndarray) -> list[str | None]:
        gallery = vault.subjects(model_id)
        found: list[str | None] = []
        for template in templates:
            best = min(
                ((float(np.linalg.norm(s.templates - template, axis=1).min()), s.subject_id) for s in gallery),
                default=(np.inf, None),
            )
            found.append(best[1] if best[0] <= max_distance else None)
        return found

    return probe


class Clock:
    """A settable vault clock (timezone-aware UTC), starting at 2030-01-01 12:00."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def vault_files(data_dir: Path) -> dict[str, bytes]:
    """Everything SQLite keeps on disk for the vault, file name -> content: the database, its WAL, shared memory, journal."""
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob(f"{DB_FILE}*"))}


def vault_file_bytes(data_dir: Path) -> bytes:
    """The content of all of `vault_files` as one byte string, for searching what reached the disk."""
    return b"".join(vault_files(data_dir).values())


def raw_db(data_dir: Path) -> sqlite3.Connection:
    """A plain SQLite connection to the vault file (autocommit), for playing the attacker."""
    return sqlite3.connect(data_dir / DB_FILE, isolation_level=None)


class PgRaw:
    """A plain autocommit psycopg connection that takes SQL written for SQLite (? placeholders), for playing the attacker."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(sql.replace("?", "%s"), params)

    def __enter__(self) -> PgRaw:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._conn.close()


@dataclass(frozen=True)
class Place:
    """Where a test's vault lives: its data directory and, on PostgreSQL, its database URL (None: SQLite)."""

    data_dir: Path
    database_url: str | None = None

    @property
    def backend(self) -> str:
        return "sqlite" if self.database_url is None else "postgresql"

    def open(self, **options) -> Vault:
        """`Vault.open` on this place (options as for Vault.open)."""
        return Vault.open(self.data_dir, database_url=self.database_url, **options)

    def raw_db(self):
        """A plain autocommit connection to the vault's database (SQL with ? placeholders on both backends)."""
        return raw_db(self.data_dir) if self.database_url is None else PgRaw(self.database_url)

    def table_counts(self, tables=("subjects", "subject_keys", "templates")) -> dict[str, int]:
        with self.raw_db() as db:
            return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    def elsewhere(self, name: str) -> Place:
        """Another, empty place of the same backend (a second vault)."""
        if self.database_url is None:
            return Place(self.data_dir / name)
        return Place(self.data_dir / name, postgres_server.server().new_database())


def vault_place(backend: str, tmp_path: Path) -> Iterator[Place]:
    """The body of each privacy test module's `place` fixture: a place on `backend` ("sqlite": tmp_path;
    "postgresql": a fresh database on the test server, dropped afterwards; skipped when PostgreSQL is not installed).

    Each module declares the fixture itself, so that the tests name it as a parameter without an import:
        @pytest.fixture(params=BACKENDS)
        def place(request, tmp_path):
            yield from vault_place(request.param, tmp_path)
    """
    if backend == "sqlite":
        yield Place(tmp_path)
        return
    server = postgres_server.server()
    url = server.new_database()
    yield Place(tmp_path, url)
    server.drop_database(url)
