"""Encrypted store of face templates on SQLite: enrolment, gallery, export, erasure, retention, key rotation.

Layout of the protection (see ../shared/DESIGN.md, "Privacy"):
- every subject has a random 256-bit data key, stored only wrapped (AES-256-GCM) by the master key;
- the subject's record (name + the ids of its template rows) and each template are sealed with that
  key, with associated data naming (subject id, record id, model id), so a blob moved fails to open;
- a random vault secret, wrapped by the master key, derives the audit, receipt and token keys, so a
  key rotation re-wraps two kinds of small blobs and leaves templates, receipts and the audit chain as
  they were;
- erasure deletes the wrapped key and every row in one transaction with secure_delete on, then
  truncates the WAL; a copy made before (a backup) stays readable with the master key of that time
  until that key is retired by a rotation (key epochs: see `ErasureReceipt`);
- who may do what: the holder of a subject's deletion token may describe, export and erase that
  subject; the operator's admin token may list every subject and erase any, nothing else (it
  cannot read one person's data through describe or export);
- wrong tokens are limited by `privacy.throttle` and their refusals audited, coalesced per minute;
- a subject's sealed record is padded to a size that does not depend on the name's length.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from privacy import VaultError, audit, erasure, keys, store, strength
from privacy.audit import AuditReport
from privacy.erasure import ErasureReceipt
from privacy.keys import MasterKey, MasterKeyError
from privacy.throttle import Throttle, TooManyAttempts, client_key

__all__ = [
    "AuditReport",
    "EnrolmentReceipt",
    "ErasureReceipt",
    "MasterKeyError",
    "Probe",
    "StoredSubject",
    "Throttle",
    "TooManyAttempts",
    "Vault",
    "VaultError",
]

NAME_MAX_CHARS = 100
ADMIN_TOKEN_MIN_CHARS = 16
ADMIN_TOKEN_MAX_CHARS = erasure.TOKEN_MAX_CHARS
ADMIN_TOKEN_MIN_BITS = 128  # by strength.entropy_bits, a conservative estimate
# A subject's sealed record (name + template ids) is padded to a multiple of this many bytes, with
# room for the longest name, so that its size tells nothing about the name's length.
RECORD_BUCKET_BYTES = 1024
# A name's JSON text (ensure_ascii=False) takes at most 4 bytes a character: UTF-8 needs at most 4,
# and the only characters JSON escapes in an accepted name are '"' and '\' (2 bytes each).
_NAME_MAX_JSON_BYTES = 4 * NAME_MAX_CHARS
MAX_TEMPLATE_DIM = 65536
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,40}")  # model ids and consent text versions
# Characters that break a name's display or a log line; every script's letters and marks are allowed.
_FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

# probe(model_id, templates (k x D float32)) -> for each template, the subject id it is identified as, or None.
Probe = Callable[[str, np.ndarray], Sequence["str | None"]]


@dataclass(frozen=True)
class StoredSubject:
    """One enrolled person as the matcher sees it: templates is (k x D) float32, read-only, one row per photo."""

    subject_id: str
    name: str = field(repr=False)
    templates: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class EnrolmentReceipt:
    """What the person gets at enrolment. The deletion token is shown once and never stored in clear."""

    subject_id: str
    deletion_token: str = field(repr=False)
    created_at: datetime  # UTC
    expires_at: datetime  # UTC; the subject is purged then
    templates_stored: dict[str, int]  # model id -> number of templates
    consent_text_version: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (times as ISO 8601 UTC)."""
        return {
            "subject_id": self.subject_id,
            "deletion_token": self.deletion_token,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "templates_stored": dict(self.templates_stored),
            "consent_text_version": self.consent_text_version,
        }


@dataclass
class _Subject:
    """A subject decrypted in memory."""

    name: str
    created: datetime
    expires: datetime
    templates: dict[str, np.ndarray]  # model id -> (k x D) float32, read-only


def _iso(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00) so that text order in SQL is time order.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _aad_subject_key(subject_id: str) -> bytes:
    return keys.associated_data("subject key", subject_id)


def _aad_record(subject_id: str) -> bytes:
    return keys.associated_data("subject record", subject_id)


def _aad_template(subject_id: str, record_id: str, model_id: str) -> bytes:
    return keys.associated_data("template", subject_id, record_id, model_id)


_AAD_VAULT_SECRET = keys.associated_data("vault secret")


def _validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise VaultError("the name must be text")
    clean = unicodedata.normalize("NFC", name.strip())
    if not clean:
        raise VaultError("the name is empty")
    if len(clean) > NAME_MAX_CHARS:
        raise VaultError(f"the name has {len(clean)} characters; at most {NAME_MAX_CHARS} are allowed")
    if any(unicodedata.category(c) in _FORBIDDEN_NAME_CATEGORIES for c in clean):
        raise VaultError("the name contains control characters (such as tabs or line breaks)")
    return clean


def _check_admin_token(token: object) -> None:
    """Refuse an operator token that is malformed or has less than ADMIN_TOKEN_MIN_BITS of estimated entropy."""
    hint = f"generate one with: {strength.GENERATE_HINT}"
    if not isinstance(token, str):
        raise VaultError(f"the admin token must be text; {hint}")
    if len(token) < ADMIN_TOKEN_MIN_CHARS:
        raise VaultError(f"the admin token must be at least {ADMIN_TOKEN_MIN_CHARS} characters long; {hint}")
    if not erasure.well_formed_token(token):
        raise VaultError(
            f"the admin token must be at most {ADMIN_TOKEN_MAX_CHARS} characters of UTF-8 text without control "
            f"characters or lone surrogates; {hint}"
        )
    bits = strength.entropy_bits(token)
    if bits < ADMIN_TOKEN_MIN_BITS:
        raise VaultError(
            f"the admin token is too weak: about {bits:.0f} bits of entropy by a conservative estimate, "
            f"{ADMIN_TOKEN_MIN_BITS} are needed (it is short, repetitive, a sequence or made of common words); {hint}"
        )


def _padded_record(name: str, manifest: dict[str, list[str]]) -> bytes:
    """The JSON plaintext of a subject record, padded with trailing spaces (which JSON ignores).

    The padded length is the record's length without the name plus room for the longest name,
    rounded up to RECORD_BUCKET_BYTES: it depends on the template ids, never on the name.
    """
    record = json.dumps({"name": name, "templates": manifest}, ensure_ascii=False).encode("utf-8")
    without_name = len(record) - len(json.dumps(name, ensure_ascii=False).encode("utf-8")) + 2
    target = -(-(without_name + _NAME_MAX_JSON_BYTES) // RECORD_BUCKET_BYTES) * RECORD_BUCKET_BYTES
    return record + b" " * (target - len(record))


def _validate_identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise VaultError(f"{what} must be 1-40 characters of letters, digits, '_', '.', ':' or '-' (got {value!r})")
    return value


def _validate_templates(templates: object) -> dict[str, np.ndarray]:
    """model id -> C-contiguous (k x D) float32 array of finite values, k >= 1, 1 <= D <= 65536."""
    if not isinstance(templates, Mapping) or not templates:
        raise VaultError("templates must map each model id to a (k x D) array, for at least one model")
    clean: dict[str, np.ndarray] = {}
    for model_id, value in templates.items():
        _validate_identifier(model_id, "a model id")
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise VaultError(f"templates of model {model_id!r} must be floating point, not {array.dtype}")
        if array.ndim != 2 or array.shape[0] < 1 or not 1 <= array.shape[1] <= MAX_TEMPLATE_DIM:
            raise VaultError(
                f"templates of model {model_id!r} must be a 2-D array (k templates x D components, k >= 1, "
                f"1 <= D <= {MAX_TEMPLATE_DIM}); got shape {array.shape}"
            )
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
            as_float32 = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(as_float32).all():
            raise VaultError(
                f"templates of model {model_id!r} contain NaN or infinite values (or values beyond float32)"
            )
        clean[model_id] = as_float32
    return clean


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _sqlite_message(exc: sqlite3.Error) -> str:
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


class Vault:
    """The encrypted template store of one data directory; safe to share between threads and processes.

    Create with `Vault.open`. Subjects are decrypted into memory once at open and kept current on
    every change, including changes committed by other processes (checked on each read).

    Methods that check a token (describe, export, forget, list_subjects) take `client`, an opaque
    identity of the caller (the app passes the IP address) used only by the throttle, never written
    to the audit log or the database. A wrong, malformed or throttled token raises VaultError
    (TooManyAttempts while locked out) and is audited, coalesced per minute (see `privacy.audit`).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        data_dir: Path,
        master: MasterKey,
        vault_secret: bytes,
        dev_mode: bool,
        admin_token: str | None,
        retention_days: int,
        clock: Callable[[], datetime],
        key_rotation_days: int | None = None,
        limiter: Throttle | None = None,
    ) -> None:
        """Internal: use `Vault.open`."""
        self._lock = threading.RLock()
        self._audit_lock = threading.Lock()  # audit_verify runs on its own connection, beside the main lock
        self._audit_checkpoint: audit.Checkpoint | None = None
        self._coalescer = audit.Coalescer()
        self._throttle = limiter if limiter is not None else Throttle()
        self._key_rotation_days = key_rotation_days
        self._rotated_elsewhere = False
        self._conn: sqlite3.Connection | None = conn
        self._data_dir = data_dir
        self._master = master
        self._vault_secret = vault_secret
        self._audit_key = keys.derive_key(vault_secret, "audit")
        self._receipt_key = keys.derive_key(vault_secret, "receipt")
        self._token_key = keys.derive_key(vault_secret, "deletion token")
        self._dev_mode = dev_mode
        self._admin_token = admin_token
        self._retention_days = retention_days
        self._clock = clock
        self._gallery: dict[str, _Subject] = {}
        self._views: dict[str, list[StoredSubject]] = {}
        self._version = 0
        self._seen_data_version = -1

    # ----------------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        master_key: str | None = None,
        admin_token: str | None = None,
        retention_days: int = 365,
        clock: Callable[[], datetime] | None = None,
        *,
        key_rotation_days: int | None = None,
        throttle: Throttle | None = None,
    ) -> Vault:
        """Open (or create) the vault in `data_dir` and decrypt its subjects into memory.

        master_key: urlsafe base64 of 32 bytes (FACEDEMO_MASTER_KEY); None means development mode,
            with the key in `<data_dir>/master.key` (created with mode 0600 when absent).
        admin_token: the operator's token (FACEDEMO_ADMIN_TOKEN), or None. It may list every
            subject and erase any, nothing else. Refused unless it has at least 128 bits of entropy
            by a conservative estimate (`privacy.strength`); generate one with
            python -c "import secrets; print(secrets.token_urlsafe(32))".
        retention_days: days from enrolment until a subject is purged (at least 1).
        clock: returns the current time as a timezone-aware datetime (tests inject one).
        key_rotation_days: the operator's master-key rotation schedule in days (FACEDEMO_KEY_ROTATION_DAYS),
            or None for none. Only stated in erasure receipts (the date by which copies made before an
            erasure become unreadable); the vault does not rotate by itself.
        throttle: the limiter of wrong tokens (tests inject one with their own clock); by default a
            new `Throttle` with the policy in `privacy.throttle`.
        Raises MasterKeyError for a malformed or wrong key (nothing on disk is changed), VaultError
        when the directory or database cannot be used or the stored data fails authentication.
        Subjects past their expiry are purged before this returns.
        """
        data_dir = Path(data_dir)
        # Checked before anything is created on disk, like every other argument.
        given = MasterKey(keys.parse_master_key(master_key)) if master_key is not None else None
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise VaultError(f"retention_days must be a whole number of days >= 1, got {retention_days!r}")
        if admin_token is not None:
            _check_admin_token(admin_token)
        if key_rotation_days is not None and (
            isinstance(key_rotation_days, bool) or not isinstance(key_rotation_days, int) or key_rotation_days < 1
        ):
            raise VaultError(f"key_rotation_days must be a whole number of days >= 1 or None, got {key_rotation_days!r}")
        if throttle is not None and not isinstance(throttle, Throttle):
            raise VaultError("throttle must be a privacy.throttle.Throttle")
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise VaultError(f"cannot create the data directory {data_dir}: {exc.strerror or exc}") from None
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise VaultError(f"the data directory {data_dir} is not writable; the vault keeps its database there")
        path = data_dir / store.DB_FILE_NAME
        # Every check that can refuse runs on a read-only connection, so a refused open changes nothing on disk.
        reader = store.connect(path, read_only=True)
        try:
            meta = cls._checked_meta(reader)
            master, dev_mode = cls._resolve_master_key(data_dir, given, meta)
            if meta is not None:
                cls._check_key(master, meta)
        except sqlite3.Error as exc:
            raise VaultError(_sqlite_message(exc)) from None
        finally:
            reader.close()
        conn = store.connect(path)
        try:
            store.configure(conn)
            meta = cls._checked_meta(conn) or cls._initialise(conn, master, _checked_now(clock or _utc_now))
            cls._check_key(master, meta)  # again: another process may have initialised or rotated it meanwhile
            vault_secret = master.unwrap(meta["vault_secret"], _AAD_VAULT_SECRET, "the vault secret")
            if "key_created" not in meta:
                cls._record_key_created(conn, _checked_now(clock or _utc_now))
            vault = cls(
                conn, data_dir, master, vault_secret, dev_mode, admin_token, retention_days, clock or _utc_now,
                key_rotation_days, throttle,
            )
            with vault._session():
                vault._load_all()
            vault.purge_expired()
            return vault
        except sqlite3.Error as exc:
            conn.close()
            raise VaultError(_sqlite_message(exc)) from None
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _checked_meta(conn: sqlite3.Connection) -> dict[str, bytes] | None:
        meta = store.read_meta(conn)
        if meta is None:
            return None
        missing = {"schema_version", "key_check", "key_id", "vault_secret"} - meta.keys()
        if missing:
            raise VaultError(f"the vault's metadata lacks {sorted(missing)}: it has been tampered with or corrupted")
        if meta["schema_version"] != str(store.SCHEMA_VERSION).encode():
            found = meta["schema_version"].decode(errors="replace")
            raise VaultError(f"the vault has schema version {found}; this program reads {store.SCHEMA_VERSION}")
        return meta

    @staticmethod
    def _resolve_master_key(
        data_dir: Path, given: MasterKey | None, meta: dict[str, bytes] | None
    ) -> tuple[MasterKey, bool]:
        """The master key to use and whether this is development mode (key file in the data directory)."""
        if given is not None:
            return given, False
        path = data_dir / keys.KEY_FILE_NAME
        if path.exists():
            master = MasterKey(keys.read_key_file(path))
            pending = data_dir / keys.PENDING_KEY_FILE_NAME
            if meta is not None and not master.matches(meta["key_check"]) and pending.exists():
                # A development-mode rotation committed but stopped before replacing the key file: finish it.
                candidate = MasterKey(keys.read_key_file(pending))
                if candidate.matches(meta["key_check"]):
                    keys.promote_pending_key(data_dir)
                    return candidate, True
            return master, True
        if meta is not None:
            raise MasterKeyError(
                f"this vault was created with a master key, but none was given and {path} does not exist; "
                "set FACEDEMO_MASTER_KEY to the vault's key"
            )
        return MasterKey(keys.create_key_file(path)), True

    @staticmethod
    def _check_key(master: MasterKey, meta: dict[str, bytes]) -> None:
        if not master.matches(meta["key_check"]):
            raise MasterKeyError(
                "the master key does not match this vault (key-check value differs); nothing was changed. "
                "Give the key the vault was created or last rotated with (FACEDEMO_MASTER_KEY)"
            )

    @staticmethod
    def _initialise(conn: sqlite3.Connection, master: MasterKey, now: datetime) -> dict[str, bytes]:
        with store.transaction(conn):
            if store.read_meta(conn) is None:  # re-checked under the write lock: another process may have won
                store.create_schema(conn)
                vault_secret = secrets.token_bytes(keys.KEY_BYTES)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(store.SCHEMA_VERSION).encode()),
                        ("key_check", master.check_value),
                        ("key_id", master.key_id.encode()),
                        ("vault_secret", master.wrap(vault_secret, _AAD_VAULT_SECRET)),
                        ("key_created", _iso(now).encode()),
                    ],
                )
                audit.append(
                    conn, keys.derive_key(vault_secret, "audit"), now, "create", {"key_id": master.key_id}
                )
        return Vault._checked_meta(conn)  # type: ignore[return-value]

    @staticmethod
    def _record_key_created(conn: sqlite3.Connection, now: datetime) -> None:
        """For a vault made before key epochs: when its master key came into use, from the audit log.

        The time of the last "create" or "rotate_key" entry; the current time when there is none
        (a later date than the true one, so a rotation due date derived from it is never too early).
        """
        with store.transaction(conn):
            row = conn.execute(
                "SELECT at FROM audit WHERE event IN ('create', 'rotate_key') ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            created = row[0] if row is not None else _iso(now)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_created', ?)", (created.encode(),))

    # ----------------------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock on an open vault; database errors become VaultError."""
        with self._lock:
            if self._conn is None:
                raise VaultError("the vault is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise VaultError(_sqlite_message(exc)) from None

    def _now(self) -> datetime:
        return _checked_now(self._clock)

    def _rotated_error(self) -> MasterKeyError:
        how = (
            f"(the new key is in {self._data_dir / keys.KEY_FILE_NAME})" if self._dev_mode
            else "with the new FACEDEMO_MASTER_KEY"
        )
        return MasterKeyError(f"the vault's master key was rotated by the operator; this app must be restarted {how}")

    def _assert_key_current(self, conn: sqlite3.Connection) -> None:
        """Inside a transaction: refuse to read or write when another process rotated the master key.

        Once seen, the refusal sticks: everything this process holds was decrypted with the old key.
        """
        if self._rotated_elsewhere:
            raise self._rotated_error()
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None or not self._master.matches(bytes(row[0])):
            self._rotated_elsewhere = True
            raise self._rotated_error()

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """store.transaction, restoring the audit coalescer's counts when the transaction rolls back."""
        saved = self._coalescer.state()
        try:
            with store.transaction(conn):
                yield conn
        except BaseException:
            self._coalescer.restore(saved)
            raise

    def _append(self, conn: sqlite3.Connection, now: datetime, event: str, fields: dict[str, object]) -> None:
        """Add an audit entry (inside `_write`), after any counted refusals whose interval has passed."""
        self._coalescer.flush_due(conn, self._audit_key, now)
        audit.append(conn, self._audit_key, now, event, fields)

    def _refused(self, conn: sqlite3.Connection, event: str, fields: dict[str, object], subject_known: bool) -> None:
        """Audit a refusal, coalesced: written at once, or counted for a later entry (see audit.Coalescer)."""
        now = self._now()
        if self._coalescer.absorb(event, now, subject_known):
            return
        with self._write(conn):
            self._coalescer.record(conn, self._audit_key, now, event, fields, subject_known)

    def _changed(self) -> None:
        self._version += 1
        self._views.clear()

    def _decrypt_subject(
        self,
        subject_id: str,
        record_ct: bytes,
        created: str,
        expires: str,
        wrapped_key: bytes | None,
        template_rows: Sequence[tuple[str, str, int, int, bytes]],
    ) -> _Subject:
        """Open one subject's blobs; template_rows are (record_id, model_id, row_index, dim, ct)."""
        if wrapped_key is None:
            raise VaultError(f"subject {subject_id} has no data key: the vault has been tampered with or corrupted")
        data_key = self._master.unwrap(
            bytes(wrapped_key), _aad_subject_key(subject_id), f"the data key of subject {subject_id}"
        )
        record = json.loads(
            keys.unseal(data_key, bytes(record_ct), _aad_record(subject_id), f"the record of subject {subject_id}")
        )
        manifest: dict[str, list[str]] = record["templates"]
        by_record = {row[0]: row for row in template_rows}
        if by_record.keys() != {rid for rids in manifest.values() for rid in rids}:
            raise VaultError(
                f"template rows of subject {subject_id} were added or removed: the vault has been tampered with"
            )
        templates = {}
        for model_id, record_ids in manifest.items():
            vectors = []
            for index, record_id in enumerate(record_ids):
                _, row_model, row_index, dim, ct = by_record[record_id]
                what = f"template {record_id} of subject {subject_id}"
                plain = keys.unseal(data_key, bytes(ct), _aad_template(subject_id, record_id, model_id), what)
                if row_model != model_id or row_index != index or len(plain) != 4 * dim:
                    raise VaultError(f"{what} does not match its row: the vault has been tampered with")
                vectors.append(np.frombuffer(plain, dtype="<f4"))
            templates[model_id] = _read_only(np.stack(vectors).astype(np.float32))
        return _Subject(record["name"], datetime.fromisoformat(created), datetime.fromisoformat(expires), templates)

    def _read_subject(self, conn: sqlite3.Connection, subject_id: str) -> _Subject:
        row = conn.execute(
            "SELECT s.record_ct, s.created, s.expires, k.wrapped_key FROM subjects s "
            "LEFT JOIN subject_keys k USING (subject_id) WHERE s.subject_id = ?",
            (subject_id,),
        ).fetchone()
        if row is None:
            raise VaultError("no subject with this id (it may have been erased)")
        rows = conn.execute(
            "SELECT record_id, model_id, row_index, dim, ct FROM templates WHERE subject_id = ?", (subject_id,)
        ).fetchall()
        return self._decrypt_subject(subject_id, *row, rows)

    def _load_all(self) -> None:
        """Decrypt every subject into memory (at open), in one read snapshot."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            self._seen_data_version = store.data_version(conn)
            subjects = conn.execute(
                "SELECT s.subject_id, s.record_ct, s.created, s.expires, k.wrapped_key FROM subjects s "
                "LEFT JOIN subject_keys k USING (subject_id) ORDER BY s.created, s.subject_id"
            ).fetchall()
            rows_of: dict[str, list[tuple[str, str, int, int, bytes]]] = defaultdict(list)
            templates = conn.execute("SELECT subject_id, record_id, model_id, row_index, dim, ct FROM templates")
            for subject_id, *row in templates:
                rows_of[subject_id].append(tuple(row))
            orphan_keys = conn.execute(
                "SELECT count(*) FROM subject_keys WHERE subject_id NOT IN (SELECT subject_id FROM subjects)"
            ).fetchone()[0]
        finally:
            conn.execute("COMMIT")
        if orphan_keys or rows_of.keys() - {s[0] for s in subjects}:
            raise VaultError("the vault holds keys or templates of no subject: it has been tampered with or corrupted")
        self._gallery = {s[0]: self._decrypt_subject(*s, rows_of.get(s[0], [])) for s in subjects}
        self._changed()

    def _sync(self) -> None:
        """Bring the in-memory gallery up to date with what other processes committed (lock held)."""
        conn = self._conn
        if self._rotated_elsewhere:
            raise self._rotated_error()
        if store.data_version(conn) == self._seen_data_version:
            return
        with store.snapshot(conn):
            seen = store.data_version(conn)
            self._assert_key_current(conn)
            in_db = {row[0] for row in conn.execute("SELECT subject_id FROM subjects")}
            removed = self._gallery.keys() - in_db
            added = {sid: self._read_subject(conn, sid) for sid in sorted(in_db - self._gallery.keys())}
        self._seen_data_version = seen  # only once the changes were read: a failure is retried next time
        for subject_id in removed:
            del self._gallery[subject_id]
        self._gallery.update(added)
        if removed or added:
            self._changed()

    def _throttle_keys(self, first: str, client: object) -> list[str]:
        key = client_key(client)
        return [first] if key is None else [first, key]

    def _authorise(
        self, conn: sqlite3.Connection, action: str, subject_id: object, token: object, client: object,
        operator_allowed: bool,
    ) -> str:
        """"subject" (deletion token) or "operator" (admin token, where allowed); otherwise audit, throttle and raise.

        Malformed ids and tokens (not text, too long, lone surrogates, control characters) are
        refused exactly like wrong ones. While the subject id or the client is locked out the
        token is not looked at (TooManyAttempts).
        """
        id_ok = erasure.well_formed_subject_id(subject_id)
        subject_key = f"subject:{subject_id}" if id_ok else "subject:malformed"
        throttle_keys = self._throttle_keys(subject_key, client)
        try:
            self._throttle.check(throttle_keys, "subject id")
        except TooManyAttempts as exc:
            known = id_ok and conn.execute("SELECT 1 FROM subjects WHERE subject_id = ?", (subject_id,)).fetchone() is not None
            self._refused(
                conn, f"{action}_throttled",
                {"subject_id": subject_id if known else None, "subject_known": known, "limit": exc.limit}, known,
            )
            raise
        token_ok = erasure.well_formed_token(token)
        clean_id = subject_id if id_ok else ""
        clean_token = token if token_ok else ""
        row = conn.execute("SELECT token_digest FROM subjects WHERE subject_id = ?", (clean_id,)).fetchone()
        # An unknown subject is still compared against a dummy digest, and the admin token is always
        # compared, so timing reveals neither which ids exist nor which check passed.
        stored = bytes(row[0]) if row else bytes(32)
        by_subject = erasure.token_matches(self._token_key, clean_id, clean_token, stored) and token_ok
        by_operator = erasure.is_operator(self._admin_token, clean_token) and token_ok and operator_allowed
        if row is not None and by_subject:
            self._throttle.success([subject_key])
            return "subject"
        if row is not None and by_operator:
            return "operator"
        self._throttle.failure(throttle_keys)
        # The id is recorded only when it names a subject: what a caller typed could be anything, even a name.
        self._refused(
            conn, f"{action}_refused",
            {"subject_id": clean_id if row is not None else None, "subject_known": row is not None}, row is not None,
        )
        raise VaultError("unknown subject id or wrong token; nothing was changed")

    def _authorise_operator(self, conn: sqlite3.Connection, action: str, token: object, client: object) -> None:
        """Return when `token` is the admin token; otherwise audit, throttle and raise (as `_authorise`)."""
        throttle_keys = self._throttle_keys("operator", client)
        try:
            self._throttle.check(throttle_keys, "operator account")
        except TooManyAttempts as exc:
            self._refused(conn, f"{action}_throttled", {"limit": exc.limit}, False)
            raise
        token_ok = erasure.well_formed_token(token)
        if erasure.is_operator(self._admin_token, token if token_ok else "") and token_ok:
            self._throttle.success(["operator"])
            return
        self._throttle.failure(throttle_keys)
        self._refused(conn, f"{action}_refused", {}, False)
        raise VaultError("listing subjects needs the operator's admin token (FACEDEMO_ADMIN_TOKEN)")

    @staticmethod
    def _delete_rows(conn: sqlite3.Connection, subject_ids: Sequence[str]) -> dict[str, int]:
        """Delete every row of the subjects (inside the caller's transaction); rows deleted per table."""
        deleted = {}
        # The wrapped keys go first: once they are gone, any copy of the ciphertexts is unreadable.
        for table in ("subject_keys", "templates", "subjects"):
            deleted[table] = sum(
                conn.execute(f"DELETE FROM {table} WHERE subject_id = ?", (sid,)).rowcount for sid in subject_ids
            )
        return deleted

    # ------------------------------------------------------------------------------ public API

    @property
    def dev_mode(self) -> bool:
        """True when the master key comes from `<data_dir>/master.key` rather than from the caller."""
        return self._dev_mode

    @property
    def version(self) -> int:
        """A number that grows whenever the stored subjects change; cache anything built from `subjects()` on it."""
        with self._session():
            self._sync()
            return self._version

    @property
    def data_dir(self) -> Path:
        """The directory holding the database (and, in development mode, master.key)."""
        return self._data_dir

    def subjects(self, model_id: str) -> list[StoredSubject]:
        """The enrolled subjects that have templates of `model_id`, decrypted, in enrolment order."""
        with self._session():
            self._sync()
            view = self._views.get(model_id)
            if view is None:
                view = [
                    StoredSubject(sid, s.name, s.templates[model_id])
                    for sid, s in self._gallery.items()
                    if model_id in s.templates
                ]
                self._views[model_id] = view
            return list(view)

    def enroll(
        self,
        name: str,
        templates: Mapping[str, np.ndarray],
        consent_text_version: str,
        consent_given: bool,
    ) -> EnrolmentReceipt:
        """Store a person's name and face templates, encrypted, with the consent record.

        templates: model id -> (k x D) float array, one row per photo (stored as float32; every
            subject's templates of one model must have the same D).
        consent_given must be exactly True; anything else is refused and nothing is stored.
        Returns the receipt with the one-time deletion token.
        """
        clean_name = _validate_name(name)
        if consent_given is not True:
            raise VaultError("enrolment needs the person's explicit consent (consent_given=True); nothing was stored")
        consent_version = _validate_identifier(consent_text_version, "consent_text_version")
        vectors = _validate_templates(templates)
        subject_id = keys.random_id(16)
        token = erasure.issue_deletion_token()
        data_key = keys.new_data_key()
        manifest: dict[str, list[str]] = {}
        rows = []
        for model_id, array in vectors.items():
            manifest[model_id] = []
            for index, vector in enumerate(array):
                record_id = keys.random_id(12)
                ct = keys.seal(data_key, vector.astype("<f4").tobytes(), _aad_template(subject_id, record_id, model_id))
                rows.append((record_id, subject_id, model_id, index, array.shape[1], ct))
                manifest[model_id].append(record_id)
        record_ct = keys.seal(data_key, _padded_record(clean_name, manifest), _aad_record(subject_id))
        counts = {model_id: len(array) for model_id, array in vectors.items()}
        with self._session() as conn:
            now = self._now()
            expires = erasure.expiry(now, self._retention_days)
            with self._write(conn):
                self._assert_key_current(conn)
                for model_id, array in vectors.items():
                    stored = conn.execute(
                        "SELECT dim FROM templates WHERE model_id = ? LIMIT 1", (model_id,)
                    ).fetchone()
                    if stored and stored[0] != array.shape[1]:
                        raise VaultError(
                            f"templates of model {model_id!r} have {array.shape[1]} components, but this vault "
                            f"stores {stored[0]}-component templates for that model; nothing was stored"
                        )
                conn.execute(
                    "INSERT INTO subjects (subject_id, record_ct, created, expires, consent_version, consent_at, "
                    "token_digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (subject_id, record_ct, _iso(now), _iso(expires), consent_version, _iso(now),
                     erasure.token_digest(self._token_key, subject_id, token)),
                )
                conn.execute(
                    "INSERT INTO subject_keys (subject_id, key_id, wrapped_key) VALUES (?, ?, ?)",
                    (subject_id, self._master.key_id, self._master.wrap(data_key, _aad_subject_key(subject_id))),
                )
                conn.executemany(
                    "INSERT INTO templates (record_id, subject_id, model_id, row_index, dim, ct) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._append(conn, now, "enrol", {"subject_id": subject_id, "templates": counts})
            self._gallery[subject_id] = _Subject(
                clean_name, now, expires, {m: _read_only(a.copy()) for m, a in vectors.items()}
            )
            self._changed()
        return EnrolmentReceipt(subject_id, token, now, expires, counts, consent_version)

    def describe(self, subject_id: str, token: str, *, client: str | None = None) -> dict[str, object]:
        """What is stored about the subject, without decrypting it: dates, consent, key id, counts, sizes (bytes).

        token: the subject's own deletion token; the admin token is refused like a wrong token.
        client: the caller's identity for the throttle (see `Vault`). Refusals are audited.
        Read in one snapshot, so a subject erased meanwhile by another process gives VaultError.
        """
        with self._session() as conn:
            self._sync()
            self._authorise(conn, "describe", subject_id, token, client, operator_allowed=False)
            with store.snapshot(conn):
                row = conn.execute(
                    "SELECT s.created, s.expires, s.consent_version, s.consent_at, length(s.record_ct), k.key_id, "
                    "length(k.wrapped_key) FROM subjects s LEFT JOIN subject_keys k USING (subject_id) "
                    "WHERE s.subject_id = ?",
                    (subject_id,),
                ).fetchone()
                if row is None:
                    raise VaultError("no subject with this id (it may have been erased)")
                templates = {
                    model_id: {"count": count, "dimension": dim, "ciphertext_bytes": size}
                    for model_id, count, dim, size in conn.execute(
                        "SELECT model_id, count(*), max(dim), sum(length(ct)) FROM templates WHERE subject_id = ? "
                        "GROUP BY model_id ORDER BY model_id",
                        (subject_id,),
                    )
                }
        created, expires, consent_version, consent_at, record_bytes, key_id, wrapped_bytes = row
        if key_id is None:
            raise VaultError(f"subject {subject_id} has no data key: the vault has been tampered with or corrupted")
        return {
            "subject_id": subject_id,
            "created": created,
            "expires": expires,
            "consent": {"given": True, "text_version": consent_version, "given_at": consent_at},
            "encryption": "AES-256-GCM; per-subject data key wrapped by the master key",
            "key_id": key_id,
            "wrapped_key_bytes": wrapped_bytes,
            "record_ciphertext_bytes": record_bytes,
            "templates": templates,
        }

    def export(self, subject_id: str, token: str, *, client: str | None = None) -> dict[str, object]:
        """The subject's own data, decrypted: name, dates, consent and templates (model id -> k lists of D floats).

        token: the subject's own deletion token; the admin token is refused like a wrong token.
        client: the caller's identity for the throttle (see `Vault`). Audited, refusals too.
        """
        with self._session() as conn:
            self._sync()
            by = self._authorise(conn, "export", subject_id, token, client, operator_allowed=False)
            with self._write(conn):
                self._assert_key_current(conn)
                subject = self._read_subject(conn, subject_id)
                consent_version, consent_at = conn.execute(
                    "SELECT consent_version, consent_at FROM subjects WHERE subject_id = ?", (subject_id,)
                ).fetchone()
                counts = {m: len(a) for m, a in subject.templates.items()}
                self._append(conn, self._now(), "export", {"subject_id": subject_id, "by": by, "templates": counts})
        return {
            "subject_id": subject_id,
            "name": subject.name,
            "created": _iso(subject.created),
            "expires": _iso(subject.expires),
            "consent": {"given": True, "text_version": consent_version, "given_at": consent_at},
            "templates": {m: a.tolist() for m, a in subject.templates.items()},
        }

    def forget(self, subject_id: str, token: str, probe: Probe, *, client: str | None = None) -> ErasureReceipt:
        """Erase a subject and return a signed receipt that says what was removed and what the probe found.

        token: the subject's deletion token or the admin token; otherwise VaultError, nothing is
        deleted and the attempt is audited. client: the caller's identity for the throttle (see
        `Vault`). In one transaction the subject's wrapped data key and every row are deleted; then
        the WAL is truncated and the in-memory gallery updated. Finally `probe(model_id, templates)`
        is called per model with the deleted (k x D float32) templates, outside the vault's lock; it
        must return, per template, the subject id the current gallery identifies at the app's
        threshold, or None. If the probe raises, the erasure has still happened (see the audit log).
        The receipt's claims are about the live vault; copies made before stay readable with the
        master key named in it until that key is retired (see `ErasureReceipt`).
        """
        with self._session() as conn:
            self._sync()
            by = self._authorise(conn, "forget", subject_id, token, client, operator_allowed=True)
            receipt_id = keys.random_id(12)
            erased_at = self._now()
            with self._write(conn):
                self._assert_key_current(conn)
                master_key_id = self._master.key_id
                key_created = conn.execute("SELECT value FROM meta WHERE key = 'key_created'").fetchone()
                # Decrypted from the database (not the gallery) so that the probe uses exactly what was stored.
                doomed = self._read_subject(conn, subject_id)
                rows_deleted = self._delete_rows(conn, [subject_id])
                templates_deleted = rows_deleted["templates"]
                left = {
                    table: conn.execute(f"SELECT count(*) FROM {table} WHERE subject_id = ?", (subject_id,)).fetchone()[0]
                    for table in ("subject_keys", "templates", "subjects")
                }
                self._append(
                    conn, erased_at, "forget",
                    {"subject_id": subject_id, "by": by, "receipt_id": receipt_id, "templates": templates_deleted},
                )
            checkpointed = store.checkpoint(conn)
            if self._gallery.pop(subject_id, None) is not None:
                self._changed()
        matches: list[str | None] = []
        try:
            for model_id, array in doomed.templates.items():
                found = list(probe(model_id, array))
                if len(found) != len(array):
                    raise VaultError(f"the probe gave {len(found)} results for {len(array)} templates of {model_id!r}")
                matches.extend(found)
        finally:
            # The deleted templates were kept only for this check; clear the copies this vault made.
            for array in doomed.templates.values():
                array.flags.writeable = True
                array.fill(0.0)
        rotation_due = None
        if self._key_rotation_days is not None and key_created is not None:
            created = datetime.fromisoformat(bytes(key_created[0]).decode())
            rotation_due = (created + timedelta(days=self._key_rotation_days)).astimezone(timezone.utc)
        receipt = ErasureReceipt(
            receipt_id=receipt_id,
            subject_id=subject_id,
            erased_at=erased_at,
            authorised_by=by,
            rows_deleted=rows_deleted,
            templates_deleted=templates_deleted,
            live_key_deleted=rows_deleted["subject_keys"] == 1 and left["subject_keys"] == 0,
            live_rows_deleted=rows_deleted["subjects"] == 1 and not any(left.values()),
            wal_checkpointed=checkpointed,
            master_key_id=master_key_id,
            master_key_rotation_due=rotation_due,
            copies_before_erasure=erasure.copies_statement(
                master_key_id, rotation_due, self._key_rotation_days, erased_at
            ),
            probe=erasure.summarise_probe(subject_id, matches),
        )
        return erasure.sign(self._receipt_key, receipt)

    def verify_receipt(self, receipt: Mapping[str, object]) -> bool:
        """Whether `receipt` (an ErasureReceipt's `to_dict()`, possibly via JSON) is unmodified and from this vault."""
        return erasure.verify(self._receipt_key, dict(receipt) if isinstance(receipt, Mapping) else receipt)

    def purge_expired(self) -> list[str]:
        """Erase every subject whose expiry has passed (as forget does, without probe); their ids. Audited."""
        with self._session() as conn:
            now = self._now()
            with self._write(conn):
                expired = [
                    row[0]
                    for row in conn.execute(
                        "SELECT subject_id FROM subjects WHERE expires <= ? ORDER BY expires, subject_id", (_iso(now),)
                    )
                ]
                if expired:
                    rows_deleted = self._delete_rows(conn, expired)
                    self._append(
                        conn, now, "purge",
                        {"subject_ids": expired, "count": len(expired), "templates": rows_deleted["templates"]},
                    )
            if expired:
                store.checkpoint(conn)
                for subject_id in expired:
                    self._gallery.pop(subject_id, None)
                self._changed()
        return expired

    def list_subjects(self, admin_token: str, *, client: str | None = None) -> list[dict[str, object]]:
        """Operator only: subject_id, name, created, expires and template counts of every subject.

        client: the caller's identity for the throttle (see `Vault`). Audited, refusals too.
        """
        with self._session() as conn:
            self._authorise_operator(conn, "list_subjects", admin_token, client)
            self._sync()
            listing = [
                {
                    "subject_id": sid,
                    "name": s.name,
                    "created": _iso(s.created),
                    "expires": _iso(s.expires),
                    "templates": {m: len(a) for m, a in s.templates.items()},
                }
                for sid, s in self._gallery.items()
            ]
            with self._write(conn):
                self._append(conn, self._now(), "list_subjects", {"count": len(listing)})
        return listing

    def rotate_master_key(self, new_key: str) -> int:
        """Re-wrap every subject's data key (and the vault secret) under `new_key`; the number of subjects.

        Templates are not re-encrypted. Afterwards the old key is refused at open. In development
        mode `<data_dir>/master.key` is replaced by the new key; otherwise the caller must store
        `new_key` as FACEDEMO_MASTER_KEY. The rotation time is recorded (meta `key_created`) for the
        receipts' rotation due date. Copies of the database made before still open with the old key:
        destroy it (and backups of it) to retire it. Other processes using the vault refuse to work
        until restarted with the new key. Audited.
        """
        new = MasterKey(keys.parse_master_key(new_key))
        with self._session() as conn:
            if new.matches(self._master.check_value):
                raise VaultError("the new master key is the key already in use")
            old_key_id = self._master.key_id
            now = self._now()
            with self._write(conn):
                self._assert_key_current(conn)
                wrapped = conn.execute("SELECT subject_id, wrapped_key FROM subject_keys").fetchall()
                for subject_id, blob in wrapped:
                    aad = _aad_subject_key(subject_id)
                    data_key = self._master.unwrap(bytes(blob), aad, f"the data key of subject {subject_id}")
                    conn.execute(
                        "UPDATE subject_keys SET wrapped_key = ?, key_id = ? WHERE subject_id = ?",
                        (new.wrap(data_key, aad), new.key_id, subject_id),
                    )
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [
                        (new.wrap(self._vault_secret, _AAD_VAULT_SECRET), "vault_secret"),
                        (new.check_value, "key_check"),
                        (new.key_id.encode(), "key_id"),
                    ],
                )
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_created', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_iso(now).encode(),),
                )
                self._append(
                    conn, now, "rotate_key",
                    {"old_key_id": old_key_id, "new_key_id": new.key_id, "subjects": len(wrapped)},
                )
                if self._dev_mode:
                    # Written before the commit, so a committed rotation always has its key on disk.
                    keys.write_pending_key(self._data_dir, new.raw)
            self._master = new
            store.checkpoint(conn)  # the old wrapped keys leave the WAL
            if self._dev_mode:
                keys.promote_pending_key(self._data_dir)
        return len(wrapped)

    def audit_verify(self, full: bool = False) -> AuditReport:
        """Check the audit log's HMAC chain; the report names the first broken entry (0-based).

        The first call, and every call with full=True (the CLI's `audit --verify`, the page's
        "verify again"), recomputes every entry. Later calls check only that the last entry found
        intact before is unchanged, plus the entries added since (see `audit.check`): milliseconds
        instead of seconds for a long log. It reads on its own read-only connection in one snapshot,
        so the vault's other operations do not wait for it.
        """
        with self._audit_lock:
            if self._conn is None:
                raise VaultError("the vault is closed")
            try:
                reader = store.connect(self._data_dir / store.DB_FILE_NAME, read_only=True)
                try:
                    with store.snapshot(reader):
                        report, checkpoint = audit.check(
                            reader, self._audit_key, None if full else self._audit_checkpoint
                        )
                finally:
                    reader.close()
            except sqlite3.Error as exc:
                raise VaultError(_sqlite_message(exc)) from None
            self._audit_checkpoint = checkpoint
            return report

    def audit_entries(self) -> list[dict[str, object]]:
        """The audit log, oldest first: seq, at, event, fields (ids and counts only)."""
        with self._session() as conn:
            return audit.entries(conn)

    def close(self) -> None:
        """Write counted refusals, close the database and drop the decrypted gallery; later calls raise VaultError.

        Idempotent.
        """
        with self._lock:
            if self._conn is not None:
                if self._coalescer.pending():
                    # Counted refusals not yet written; a failure here must not keep the vault open.
                    with contextlib.suppress(sqlite3.Error, VaultError):
                        with self._write(self._conn) as conn:
                            self._coalescer.flush_all(conn, self._audit_key, self._now())
                self._conn.close()
                self._conn = None
            self._gallery.clear()
            self._views.clear()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _checked_now(clock: Callable[[], datetime]) -> datetime:
    now = clock()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise VaultError("the vault's clock must return timezone-aware datetimes")
    return now.astimezone(timezone.utc)

