"""What the privacy tests share: stand-in templates, probes, a settable clock and the vault's files as bytes."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from privacy.vault import Vault

DB_FILE = "vault.sqlite3"


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
