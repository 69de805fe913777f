"""What the vault needs from a database: the `Storage` interface, the rows it passes, and what a backend must guarantee.

The vault and every other module of `privacy` reach the database only through `Storage`; all SQL
lives in a backend: SQLite (`privacy.store.SqliteStore`, the default) or PostgreSQL
(`privacy.pg_store.PgStore`, for several replicas sharing one vault). The database only
ever sees ciphertexts, random ids, sizes, times and consent versions: everything passed here is
already sealed (see `privacy.keys`). Times are fixed-width ISO 8601 UTC text (`iso_utc`), so that
text order is time order in any database.

Guarantees every backend must give (the tests in tests/test_privacy_*.py rely on them):
- `write()` is one transaction that commits all or nothing, and write transactions of all
  processes are serialised from their start (SQLite: BEGIN IMMEDIATE). Audit entries are appended
  inside it: `audit_tail()` then `insert_audit()` must not interleave with another process's append,
  or the HMAC chain forks.
- `snapshot()` is one read transaction: every statement inside sees one committed state.
- `reader()` gives a second, read-only connection in one snapshot (the audit check runs on it
  while the vault's own connection keeps working).
- `change_marker()` changes whenever another connection commits; the vault then asks which subjects
  changed since the marker it last saw (`changed_subjects()`), or, where the backend cannot tell
  (None), re-reads which subjects exist (`subject_ids()`), and decrypts only the new ones. A marker
  that also changes on the vault's own commits only costs a re-read.
- `delete_subjects()` deletes the wrapped key first, and `compact()` afterwards makes the freed
  bytes unreachable from the live database files (SQLite: secure_delete, then a WAL checkpoint
  that truncates the WAL).
- Driver exceptions are listed in `errors`; the vault turns them into VaultError with
  `error_message(exc)`, which says what a person can do (busy, read-only, disk full, corrupt).

The PostgreSQL backend (`privacy.pg_store.PgStore`; psycopg 3; FACEDEMO_DATABASE_URL), chosen in
`privacy.opening.open_store`, provides, in the same terms:
- the same five tables (bytea for blobs, text for the ISO times, bigint seq for the audit log);
- `write()`: a READ COMMITTED transaction that first takes a transaction-level advisory lock
  (`SELECT pg_advisory_xact_lock(<vault constant>)`), which serialises writers as BEGIN IMMEDIATE
  does for SQLite and makes the audit tail read and the append atomic across replicas;
- `snapshot()` and `reader()`: REPEATABLE READ READ ONLY transactions (`reader()` on its own
  connection);
- `change_marker()`: a change sequence, e.g. a one-row table `changes(seq bigint)` incremented in
  every write transaction (a key rotation too: the sync is where another replica's rotation is
  noticed), read cheaply outside a transaction on each call; LISTEN/NOTIFY on a
  `facedemo_vault` channel may wake replicas, but the sequence stays the source of truth because
  notifications are lost while a connection is down (PgStore reads the sequence on each sync, one
  single-row read, and keeps a change log per subject id for `changed_subjects()`);
- `compact()`: VACUUM of subject_keys, templates and subjects after a deletion (autocommit: VACUUM
  cannot run inside a transaction). VACUUM makes the dead rows' space reusable without overwriting
  it; VACUUM FULL rewrites the tables (under an exclusive lock that stops every replica) and is the
  closer match to secure_delete, so PgStore runs plain VACUUM. Neither reaches WAL segments not yet
  recycled, replicas or base backups: the receipt's `wal_checkpointed` is None for this backend
  (`backend == "postgresql"`), and its `copies_before_erasure` names these copies in key-epoch terms;
- `errors = (psycopg.Error,)` and messages for serialization failures, lost connections,
  read-only replicas and a full disk;
- `close()` returning the connection (or the pool's connection).
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from privacy import VaultError

# The tables and what deleting a subject removes from each, in the order they are deleted.
SUBJECT_TABLES = ("subject_keys", "templates", "subjects")


def iso_utc(moment: datetime) -> str:
    """The stored form of a time: ISO 8601 UTC, always with microseconds and +00:00 (fixed width)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class TemplateRow:
    """One sealed template: its random record id, model id, position among the subject's templates of that model,
    dimension (float32 components) and ciphertext."""

    record_id: str
    model_id: str
    row_index: int
    dim: int
    ciphertext: bytes = field(repr=False)

    @classmethod
    def from_db(cls, record_id: str, model_id: str, row_index: int, dim: int, ciphertext) -> TemplateRow:
        """From a database row; the driver's binary type (memoryview, bytes) becomes bytes."""
        return cls(record_id, model_id, row_index, dim, bytes(ciphertext))


@dataclass(frozen=True)
class SealedSubject:
    """What the database holds of one subject, still sealed. wrapped_key is None when its key row is missing."""

    subject_id: str
    record_ct: bytes = field(repr=False)
    created: str  # iso_utc
    expires: str  # iso_utc
    wrapped_key: bytes | None = field(repr=False)
    templates: tuple[TemplateRow, ...] = field(repr=False)

    @classmethod
    def from_db(cls, subject_id: str, record_ct, created: str, expires: str, wrapped_key, template_rows) -> SealedSubject:
        """From a subject's database row and its template rows (record_id, model_id, row_index, dim, ct)."""
        return cls(
            subject_id, bytes(record_ct), created, expires, None if wrapped_key is None else bytes(wrapped_key),
            tuple(TemplateRow.from_db(*t) for t in template_rows),
        )

    @classmethod
    def all_from_db(cls, subject_rows, template_rows) -> list[SealedSubject]:
        """Every subject from its rows (subject_id, record_ct, created, expires, wrapped_key), in their order,
        with its templates from `template_rows` (subject_id, record_id, model_id, row_index, dim, ct)."""
        rows_of: dict[str, list] = defaultdict(list)
        for subject_id, *row in template_rows:
            rows_of[subject_id].append(row)
        return [cls.from_db(*subject, rows_of.get(subject[0], ())) for subject in subject_rows]


@dataclass(frozen=True)
class NewSubject:
    """Every row of one enrolment, written together by `Storage.insert_subject`."""

    subject_id: str
    record_ct: bytes = field(repr=False)
    created: str  # iso_utc
    expires: str  # iso_utc
    consent_version: str
    consent_at: str  # iso_utc
    token_digest: bytes = field(repr=False)
    key_id: str  # the master key that wraps the data key
    wrapped_key: bytes = field(repr=False)
    templates: tuple[TemplateRow, ...] = field(repr=False)


@dataclass(frozen=True)
class TemplateFacts:
    """Sizes of one model's templates of a subject: count, dimension, ciphertext bytes in all."""

    count: int
    dimension: int
    ciphertext_bytes: int


@dataclass(frozen=True)
class SubjectFacts:
    """What `describe` shows of a subject without decrypting anything; key_id is None when the key row is missing."""

    created: str
    expires: str
    consent_version: str
    consent_at: str
    record_bytes: int
    key_id: str | None
    wrapped_key_bytes: int | None
    templates: dict[str, TemplateFacts]  # model id -> sizes, in model id order


@dataclass(frozen=True)
class AuditRow:
    """One audit entry as stored: seq (1, 2, ...), at (ISO 8601), event, fields (JSON text) and its chain MAC."""

    seq: int
    at: str
    event: str
    fields: str
    mac: bytes

    @classmethod
    def from_db(cls, seq: int, at: str, event: str, fields: str, mac) -> AuditRow:
        """From a database row; the driver's binary type (memoryview, bytes) becomes bytes."""
        return cls(seq, at, event, fields, bytes(mac))


class Storage(Protocol):
    """The database under one vault. Not thread-safe: the vault calls it under its lock."""

    errors: tuple[type[BaseException], ...]  # the driver's exceptions, turned into VaultError by the vault
    backend: str  # "sqlite" or "postgresql": what erasure receipts say about the database's own copies

    def error_message(self, exc: BaseException) -> str:
        """What a person reads for one of `errors`: the cause and what to do."""

    def close(self) -> None:
        """Release the connection; idempotent."""

    # ------------------------------------------------------------------ transactions, changes

    def write(self) -> AbstractContextManager[None]:
        """One write transaction, serialised with every other writer from its start (see the module docstring)."""

    def snapshot(self) -> AbstractContextManager[None]:
        """One read transaction: the statements inside see one committed state."""

    def reader(self) -> AbstractContextManager[Storage]:
        """A separate read-only connection to the same database, inside one snapshot; closed on exit."""

    def change_marker(self) -> object:
        """A value that differs after another connection committed (compare with ==)."""

    def changed_subjects(self, since: object) -> dict[str, bool] | None:
        """Inside `snapshot()`: subject id -> whether it exists now, for every subject added or removed by commits
        after the change marker `since`; None when the backend cannot tell (the caller compares `subject_ids()`)."""

    # ----------------------------------------------------------------------- schema and meta

    def read_meta(self) -> dict[str, bytes] | None:
        """Every meta value, or None for a database without the vault's tables yet."""

    def create_schema(self) -> None:
        """Create the tables (inside `write()`)."""

    def get_meta(self, key: str) -> bytes | None:
        """One meta value, or None."""

    def put_meta(self, values: Mapping[str, bytes]) -> None:
        """Insert or replace meta values."""

    def add_meta(self, key: str, value: bytes) -> None:
        """Insert a meta value only when the key is absent."""

    # ------------------------------------------------------------------------------ subjects

    def insert_subject(self, subject: NewSubject) -> None:
        """Insert the subject's row, its wrapped key and its templates."""

    def subject_ids(self) -> set[str]:
        """The id of every subject."""

    def expired_subject_ids(self, now: str) -> list[str]:
        """Ids of subjects whose expiry is at or before `now` (iso_utc), oldest expiry first."""

    def subject_exists(self, subject_id: str) -> bool: ...

    def token_digest(self, subject_id: str) -> bytes | None:
        """The stored digest of the subject's deletion token, or None for no such subject."""

    def consent(self, subject_id: str) -> tuple[str, str] | None:
        """(consent text version, time consent was given), or None."""

    def read_subject(self, subject_id: str) -> SealedSubject | None: ...

    def read_subjects(self) -> list[SealedSubject]:
        """Every subject, in enrolment order (created, then subject id)."""

    def orphan_rows(self) -> int:
        """Key and template rows that belong to no subject (tampering or corruption)."""

    def subject_facts(self, subject_id: str) -> SubjectFacts | None: ...

    def model_dimension(self, model_id: str) -> int | None:
        """The dimension of the stored templates of `model_id`, or None when there are none."""

    def delete_subjects(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """Delete every row of the subjects, wrapped keys first; rows deleted per table of SUBJECT_TABLES."""

    def subject_row_counts(self, subject_id: str) -> dict[str, int]:
        """Rows of the subject left in each table of SUBJECT_TABLES."""

    def wrapped_keys(self) -> list[tuple[str, bytes]]:
        """(subject id, wrapped data key) of every subject key row."""

    def replace_wrapped_key(self, subject_id: str, key_id: str, wrapped_key: bytes) -> None: ...

    def table_counts(self) -> dict[str, int]:
        """Rows in each of meta, SUBJECT_TABLES and audit (a copied vault is checked with these)."""

    def compact(self) -> bool:
        """After a deletion: make freed bytes unreachable from the live files; whether that completed."""

    # --------------------------------------------------------------------------------- audit

    def audit_tail(self) -> tuple[int, bytes] | None:
        """(seq, mac) of the last entry, or None; inside `write()` when an append follows."""

    def insert_audit(self, row: AuditRow) -> None: ...

    def audit_rows(self, after_seq: int | None = None) -> list[AuditRow]:
        """Every entry (whatever its seq, so that a renumbered one is seen), or those with seq > after_seq; in seq order."""

    def audit_row(self, seq: int) -> AuditRow | None: ...

    def audit_extent(self) -> tuple[int, int]:
        """(number of entries, highest seq or 0)."""

    def last_audit_time(self, events: Collection[str]) -> str | None:
        """The `at` of the last entry whose event is one of `events`, or None."""


@contextlib.contextmanager
def translated_errors(store: Storage) -> Iterator[None]:
    """Turn the backend's driver exceptions raised inside into VaultError with a message a person can act on."""
    try:
        yield
    except store.errors as exc:
        raise VaultError(store.error_message(exc)) from None
