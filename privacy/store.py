"""The vault's SQLite backend: file checks, connection settings, schema, and every SQL statement of `privacy`.

`SqliteStore` implements `privacy.storage.Storage` (see there for what each method must guarantee).
One file in the data directory, WAL journal, secure_delete on, full sync; transactions are
explicit. Another process's commit shows in `PRAGMA data_version`; audit appends are serialised by
BEGIN IMMEDIATE, which takes the write lock at the start of every write transaction.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

from privacy import VaultError
from privacy.storage import (
    SUBJECT_TABLES,
    AuditRow,
    NewSubject,
    SealedSubject,
    SubjectFacts,
    TemplateFacts,
)

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


def connect(path: Path, read_only: bool = False, check_header: bool = True) -> sqlite3.Connection:
    """Open the vault database at `path` (created empty, mode 0600, when absent) without writing to it.

    read_only: a connection that can never change the database or its WAL, not even by the
    checkpoint SQLite runs when the last read-write connection closes.
    check_header: read the file's first bytes before SQLite opens it. Only where this process has no
    connection to the file yet: closing any descriptor of a file drops every POSIX lock the process
    holds on it, SQLite's included, and another process would then take this one's WAL for unused
    and delete it (https://www.sqlite.org/howtocorrupt.html, section 2.2).
    Raises VaultError when the file is not an SQLite database, is an SQLite database of something
    else, or cannot be opened; such a file is left exactly as it was.
    """
    if not path.exists():
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
    elif check_header:
        try:
            with open(path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise VaultError(f"cannot read the vault database {path}: {exc.strerror}") from None
        if header and header != _SQLITE_HEADER:
            raise VaultError(f"{path} is not an SQLite database; refusing to open or overwrite it")
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


def error_message(exc: BaseException) -> str:
    """What a person reads for an SQLite error: the cause and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return "the vault database is busy (another process is writing to it); try again"
    if "readonly" in text or "read-only" in text:
        return "the vault database is read-only: check the permissions of the data directory"
    if "full" in text:
        return "the disk holding the vault is full; free some space and try again"
    if "malformed" in text or "not a database" in text:
        return f"the vault database is corrupt ({text}); it was left as it is: restore it from a backup"
    return f"vault database error: {text}"


_AUDIT_COLUMNS = "SELECT seq, at, event, fields, mac FROM audit"


class SqliteStore:
    """`privacy.storage.Storage` on one SQLite file. Create with `SqliteStore.open`."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Internal: use `SqliteStore.open`."""
        self.connection: sqlite3.Connection | None = conn  # also the hook for fault-injection tests
        self.path = path

    @classmethod
    def open(cls, path: Path, read_only: bool = False, check_header: bool = True) -> SqliteStore:
        """The vault database at `path` (created empty, mode 0600, when absent); see `connect`.

        A writable store is configured for writing (WAL, secure_delete, full sync); VaultError when
        that fails, with the connection closed.
        """
        conn = connect(path, read_only=read_only, check_header=check_header)
        if not read_only:
            try:
                configure(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise VaultError(error_message(exc)) from None
            except BaseException:
                conn.close()
                raise
        return cls(conn, path)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self.connection is None:
            raise VaultError("the vault is closed")
        return self.connection

    def error_message(self, exc: BaseException) -> str:
        return error_message(exc)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    # ------------------------------------------------------------------ transactions, changes

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction: everything inside commits together or not at all.

        BEGIN IMMEDIATE takes the write lock at the start, so two processes never both read and then
        both try to write (which SQLite would refuse with "database is locked" mid-transaction).
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")  # inside: a COMMIT that fails (disk full) must not leave the transaction open
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR): a second
            # ROLLBACK would fail and hide the error that says what happened.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every statement inside sees the same committed state of the database.

        Another process's commit in between two statements cannot make them disagree (a subject found
        by the first and gone in the second).
        """
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")

    @contextlib.contextmanager
    def reader(self) -> Iterator[SqliteStore]:
        """A read-only connection of its own, in one snapshot: it never changes the database or its WAL."""
        # This process holds the file open already: reading its header again would drop our locks.
        other = SqliteStore.open(self.path, read_only=True, check_header=False)
        try:
            with other.snapshot():
                yield other
        finally:
            other.close()

    def change_marker(self) -> int:
        """PRAGMA data_version: changes whenever another connection (any process) commits."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def changed_subjects(self, since: object) -> None:
        """Always None: data_version says that something changed, not what; the vault compares subject ids."""
        return None

    # ----------------------------------------------------------------------- schema and meta

    def read_meta(self) -> dict[str, bytes] | None:
        conn = self._conn
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return None
        return {key: bytes(value) for key, value in conn.execute("SELECT key, value FROM meta")}

    def create_schema(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    def get_meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def put_meta(self, values: Mapping[str, bytes]) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def add_meta(self, key: str, value: bytes) -> None:
        self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------------------ subjects

    def insert_subject(self, subject: NewSubject) -> None:
        conn = self._conn
        conn.execute(
            "INSERT INTO subjects (subject_id, record_ct, created, expires, consent_version, consent_at, "
            "token_digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (subject.subject_id, subject.record_ct, subject.created, subject.expires, subject.consent_version,
             subject.consent_at, subject.token_digest),
        )
        conn.execute(
            "INSERT INTO subject_keys (subject_id, key_id, wrapped_key) VALUES (?, ?, ?)",
            (subject.subject_id, subject.key_id, subject.wrapped_key),
        )
        conn.executemany(
            "INSERT INTO templates (record_id, subject_id, model_id, row_index, dim, ct) VALUES (?, ?, ?, ?, ?, ?)",
            [(t.record_id, subject.subject_id, t.model_id, t.row_index, t.dim, t.ciphertext) for t in subject.templates],
        )

    def subject_ids(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT subject_id FROM subjects")}

    def expired_subject_ids(self, now: str) -> list[str]:
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT subject_id FROM subjects WHERE expires <= ? ORDER BY expires, subject_id", (now,)
            )
        ]

    def subject_exists(self, subject_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM subjects WHERE subject_id = ?", (subject_id,)).fetchone() is not None

    def token_digest(self, subject_id: str) -> bytes | None:
        row = self._conn.execute("SELECT token_digest FROM subjects WHERE subject_id = ?", (subject_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def consent(self, subject_id: str) -> tuple[str, str] | None:
        row = self._conn.execute(
            "SELECT consent_version, consent_at FROM subjects WHERE subject_id = ?", (subject_id,)
        ).fetchone()
        return (row[0], row[1]) if row is not None else None

    def read_subject(self, subject_id: str) -> SealedSubject | None:
        conn = self._conn
        row = conn.execute(
            "SELECT s.record_ct, s.created, s.expires, k.wrapped_key FROM subjects s "
            "LEFT JOIN subject_keys k USING (subject_id) WHERE s.subject_id = ?",
            (subject_id,),
        ).fetchone()
        if row is None:
            return None
        templates = conn.execute(
            "SELECT record_id, model_id, row_index, dim, ct FROM templates WHERE subject_id = ?", (subject_id,)
        )
        return SealedSubject.from_db(subject_id, *row, templates)

    def read_subjects(self) -> list[SealedSubject]:
        conn = self._conn
        subjects = conn.execute(
            "SELECT s.subject_id, s.record_ct, s.created, s.expires, k.wrapped_key FROM subjects s "
            "LEFT JOIN subject_keys k USING (subject_id) ORDER BY s.created, s.subject_id"
        ).fetchall()
        templates = conn.execute("SELECT subject_id, record_id, model_id, row_index, dim, ct FROM templates")
        return SealedSubject.all_from_db(subjects, templates)

    def orphan_rows(self) -> int:
        return sum(
            self._conn.execute(
                f"SELECT count(*) FROM {table} WHERE subject_id NOT IN (SELECT subject_id FROM subjects)"
            ).fetchone()[0]
            for table in ("subject_keys", "templates")
        )

    def subject_facts(self, subject_id: str) -> SubjectFacts | None:
        conn = self._conn
        row = conn.execute(
            "SELECT s.created, s.expires, s.consent_version, s.consent_at, length(s.record_ct), k.key_id, "
            "length(k.wrapped_key) FROM subjects s LEFT JOIN subject_keys k USING (subject_id) "
            "WHERE s.subject_id = ?",
            (subject_id,),
        ).fetchone()
        if row is None:
            return None
        templates = {
            model_id: TemplateFacts(count, dim, size)
            for model_id, count, dim, size in conn.execute(
                "SELECT model_id, count(*), max(dim), sum(length(ct)) FROM templates WHERE subject_id = ? "
                "GROUP BY model_id ORDER BY model_id",
                (subject_id,),
            )
        }
        return SubjectFacts(*row, templates=templates)

    def model_dimension(self, model_id: str) -> int | None:
        row = self._conn.execute("SELECT dim FROM templates WHERE model_id = ? LIMIT 1", (model_id,)).fetchone()
        return row[0] if row is not None else None

    def delete_subjects(self, subject_ids: Sequence[str]) -> dict[str, int]:
        conn = self._conn
        # The wrapped keys go first: once they are gone, any copy of the ciphertexts is unreadable.
        return {
            table: sum(conn.execute(f"DELETE FROM {table} WHERE subject_id = ?", (sid,)).rowcount for sid in subject_ids)
            for table in SUBJECT_TABLES
        }

    def subject_row_counts(self, subject_id: str) -> dict[str, int]:
        return {
            table: self._conn.execute(f"SELECT count(*) FROM {table} WHERE subject_id = ?", (subject_id,)).fetchone()[0]
            for table in SUBJECT_TABLES
        }

    def wrapped_keys(self) -> list[tuple[str, bytes]]:
        return [(sid, bytes(blob)) for sid, blob in self._conn.execute("SELECT subject_id, wrapped_key FROM subject_keys")]

    def replace_wrapped_key(self, subject_id: str, key_id: str, wrapped_key: bytes) -> None:
        self._conn.execute(
            "UPDATE subject_keys SET wrapped_key = ?, key_id = ? WHERE subject_id = ?", (wrapped_key, key_id, subject_id)
        )

    def table_counts(self) -> dict[str, int]:
        return {
            table: self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("meta", *SUBJECT_TABLES, "audit")
        }

    def compact(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes; whether that completed.

        After a deletion this is what removes the old pages (which still hold ciphertexts) from the WAL;
        secure_delete has already overwritten them in the database file.
        """
        busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    # --------------------------------------------------------------------------------- audit

    def audit_tail(self) -> tuple[int, bytes] | None:
        row = self._conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], bytes(row[1])) if row is not None else None

    def insert_audit(self, row: AuditRow) -> None:
        self._conn.execute(
            "INSERT INTO audit (seq, at, event, fields, mac) VALUES (?, ?, ?, ?, ?)",
            (row.seq, row.at, row.event, row.fields, row.mac),
        )

    def audit_rows(self, after_seq: int | None = None) -> list[AuditRow]:
        if after_seq is None:
            rows = self._conn.execute(f"{_AUDIT_COLUMNS} ORDER BY seq")
        else:
            rows = self._conn.execute(f"{_AUDIT_COLUMNS} WHERE seq > ? ORDER BY seq", (after_seq,))
        return [AuditRow.from_db(*row) for row in rows]

    def audit_row(self, seq: int) -> AuditRow | None:
        row = self._conn.execute(f"{_AUDIT_COLUMNS} WHERE seq = ?", (seq,)).fetchone()
        return AuditRow.from_db(*row) if row is not None else None

    def audit_extent(self) -> tuple[int, int]:
        count, last = self._conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM audit").fetchone()
        return count, last

    def last_audit_time(self, events: Collection[str]) -> str | None:
        names = sorted(events)
        row = self._conn.execute(
            f"SELECT at FROM audit WHERE event IN ({', '.join('?' * len(names))}) ORDER BY seq DESC LIMIT 1", names
        ).fetchone()
        return row[0] if row is not None else None
