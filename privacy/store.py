"""SQLite storage under the vault: file checks, connection settings, schema, transactions and WAL checkpoints."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from privacy import VaultError

DB_FILE_NAME = "vault.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 15.0  # how long a writer waits for another process's transaction before giving up
_SQLITE_HEADER = b"SQLite format 3\x00"
_TABLES = {"meta", "subjects", "subject_keys", "templates", "audit"}

# Plain columns hold only what is not personal: random ids, model ids, sizes, times and the consent
# text version. Names and templates exist only inside sealed blobs (see privacy.keys.seal).
_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE subjects (
    subject_id      TEXT PRIMARY KEY,
    record_ct       BLOB NOT NULL,  -- sealed JSON: name and the record ids of every template
    created         TEXT NOT NULL,  -- ISO 8601 UTC, fixed width so text order is time order
    expires         TEXT NOT NULL,
    consent_version TEXT NOT NULL,
    consent_at      TEXT NOT NULL,
    token_digest    BLOB NOT NULL   -- HMAC of the deletion token (the token itself is never stored)
);
CREATE INDEX subjects_expires ON subjects (expires);
CREATE TABLE subject_keys (
    subject_id  TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,      -- which master key wraps it
    wrapped_key BLOB NOT NULL
);
CREATE TABLE templates (
    record_id  TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    model_id   TEXT NOT NULL,
    row_index  INTEGER NOT NULL,    -- position of the template among the subject's templates of the model
    dim        INTEGER NOT NULL,    -- float32 components
    ct         BLOB NOT NULL
);
CREATE INDEX templates_subject ON templates (subject_id);
CREATE INDEX templates_model ON templates (model_id);
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    event  TEXT NOT NULL,
    fields TEXT NOT NULL,           -- JSON of ids and counts only
    mac    BLOB NOT NULL
);
"""


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """Open the vault database at `path` (created empty, mode 0600, when absent) without writing to it.

    read_only: a connection that can never change the database or its WAL, not even by the
    checkpoint SQLite runs when the last read-write connection closes.
    Raises VaultError when the file is not an SQLite database, is an SQLite database of something
    else, or cannot be opened; such a file is left exactly as it was.
    """
    if path.exists():
        try:
            with open(path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise VaultError(f"cannot read the vault database {path}: {exc.strerror}") from None
        if header and header != _SQLITE_HEADER:
            raise VaultError(f"{path} is not an SQLite database; refusing to open or overwrite it")
    else:
        try:
            # Created here rather than by SQLite so that it (and the -wal/-shm files SQLite gives the
            # same mode) is readable by the owner only.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # another process created it meanwhile
        except OSError as exc:
            raise VaultError(
                f"cannot create the vault database {path}: {exc.strerror}; is the data directory writable?"
            ) from None
    try:
        # isolation_level=None: transactions are explicit (see `transaction`); one connection is shared by
        # the vault's threads under its lock, hence check_same_thread=False.
        target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
        conn = sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=read_only
        )
    except sqlite3.Error as exc:
        raise VaultError(f"cannot open the vault database {path}: {exc}") from None
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        conn.close()
        raise VaultError(
            f"cannot read the vault database {path}: {exc}; it is corrupt, or the data directory is not writable"
        ) from None
    if tables and not _TABLES <= tables:
        conn.close()
        raise VaultError(f"{path} is an SQLite database but not a facedemo vault; refusing to use it")
    return conn


def read_meta(conn: sqlite3.Connection) -> dict[str, bytes] | None:
    """The vault's meta values, or None for a new database that has no tables yet."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    return {key: bytes(value) for key, value in conn.execute("SELECT key, value FROM meta")}


def configure(conn: sqlite3.Connection) -> None:
    """Settings for writing: WAL journal, secure_delete, full sync; VaultError when one does not take."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise VaultError(f"the vault database cannot use WAL mode (got {mode!r}); is the data directory writable?")
    # Deleted content is overwritten with zeros rather than left in free space.
    conn.execute("PRAGMA secure_delete = ON")
    if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
        raise VaultError("this SQLite build does not support secure_delete; refusing to store biometric data")
    # FULL: a committed deletion survives a power cut, so a receipt is never issued for an undone deletion.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = OFF")  # integrity is checked by decryption, not by SQLite


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables (inside the caller's transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: everything inside commits together or not at all.

    BEGIN IMMEDIATE takes the write lock at the start, so two processes never both read and then
    both try to write (which SQLite would refuse with "database is locked" mid-transaction).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # inside: a COMMIT that fails (disk full) must not leave the transaction open
    except BaseException:
        # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR): a second
        # ROLLBACK would fail and hide the error that says what happened.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every statement inside sees the same committed state of the database.

    Another process's commit in between two statements cannot make them disagree (a subject found
    by the first and gone in the second).
    """
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database file and truncate the WAL to zero bytes; whether that completed.

    After a deletion this is what removes the old pages (which still hold ciphertexts) from the WAL.
    """
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def data_version(conn: sqlite3.Connection) -> int:
    """A number that changes whenever another connection (any process) commits to the database."""
    return conn.execute("PRAGMA data_version").fetchone()[0]
