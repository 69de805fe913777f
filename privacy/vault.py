"""Encrypted store of face templates: enrolment, gallery, export, erasure, retention, key rotation.

`Vault` is the package's one entry point, a thin facade: each job lives in its own module.
- opening.py: argument checks, data directory, master key (given or development key file), first set-up;
- storage.py: what the vault needs from a database (`Storage`); store.py: its SQLite backend (the default);
  pg_store.py: its PostgreSQL backend, for replicas sharing one vault; all the SQL is in those two;
  transfer.py: copying a vault from one backend to the other;
- keys.py: master key, data keys and the sealing recipes; records.py: sealing and opening a subject's blobs;
- gallery.py: the decrypted in-memory copy and its sync; access.py: tokens, operator, throttle, refusals;
- audit.py: the HMAC-chained audit log; rotation.py: master-key rotation and noticing one made elsewhere;
- enrolment.py, subject_access.py (describe, export, list), deletion.py (forget, purge): the operations;
- validation.py: what callers may pass (names, ids, templates, the admin token); context.py: the shared parts.

Layout of the protection (README.md, "Privacy"; docs/architecture.md for where each part lives):
- every subject has a random 256-bit data key, stored only wrapped (AES-256-GCM) by the master key;
- the subject's record (name + the ids of its template rows) and each template are sealed with that
  key, with associated data naming (subject id, record id, model id), so a blob moved fails to open;
- a random vault secret, wrapped by the master key, derives the audit, receipt and token keys, so a
  key rotation re-wraps two kinds of small blobs and leaves templates, receipts and the audit chain as
  they were;
- erasure deletes the wrapped key and every row in one transaction, then compacts (SQLite:
  secure_delete on, the WAL truncated; PostgreSQL: VACUUM); a copy made before (a backup, and on
  PostgreSQL its write-ahead log and replicas too) stays readable with the master key of that time
  until that key is retired by a rotation (key epochs: see `ErasureReceipt`);
- who may do what: the holder of a subject's deletion token may describe, export and erase that
  subject; the operator's admin token may list every subject and erase any, nothing else (it
  cannot read one person's data through describe or export);
- wrong tokens are limited by `privacy.throttle` and their refusals audited, coalesced per minute;
- a subject's sealed record is padded to a size that does not depend on the name's length.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np

from privacy import VaultError, deletion, enrolment, erasure, keys, rotation, subject_access
from privacy.access import Access
from privacy.audit import AuditLog, AuditReport
from privacy.context import VaultContext, checked_now, utc_now
from privacy.deletion import Probe
from privacy.enrolment import EnrolmentReceipt
from privacy.erasure import ErasureReceipt
from privacy.gallery import Gallery, GalleryChanges, StoredSubject
from privacy.keys import MasterKey, MasterKeyError
from privacy.opening import check_arguments, check_database_url, open_checked, prepare_data_dir
from privacy.records import RECORD_BUCKET_BYTES
from privacy.rotation import KeyGuard
from privacy.throttle import Throttle, TooManyAttempts
from privacy.validation import (
    ADMIN_TOKEN_MAX_CHARS,
    ADMIN_TOKEN_MIN_BITS,
    ADMIN_TOKEN_MIN_CHARS,
    MAX_TEMPLATE_DIM,
    NAME_JOINERS,
    NAME_MAX_CHARS,
    validate_name,
)

__all__ = [
    "ADMIN_TOKEN_MAX_CHARS",
    "ADMIN_TOKEN_MIN_BITS",
    "ADMIN_TOKEN_MIN_CHARS",
    "AuditReport",
    "EnrolmentReceipt",
    "ErasureReceipt",
    "GalleryChanges",
    "MAX_TEMPLATE_DIM",
    "MasterKeyError",
    "NAME_JOINERS",
    "NAME_MAX_CHARS",
    "Probe",
    "RECORD_BUCKET_BYTES",
    "StoredSubject",
    "Throttle",
    "TooManyAttempts",
    "Vault",
    "VaultError",
    "validate_name",
]


class Vault:
    """The encrypted template store of one data directory; safe to share between threads and processes.

    Create with `Vault.open`. Subjects are decrypted into memory once at open and kept current on
    every change, including changes committed by other processes (checked on each read).

    Methods that check a token (describe, export, forget, list_subjects) take `client`, an opaque
    identity of the caller (the app passes the IP address) used only by the throttle, never written
    to the audit log or the database. A wrong, malformed or throttled token raises VaultError
    (TooManyAttempts while locked out) and is audited, coalesced per minute (see `privacy.audit`).
    """

    def __init__(self, ctx: VaultContext) -> None:
        """Internal: use `Vault.open`."""
        self._ctx = ctx

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
        database_url: str | None = None,
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
        database_url: None for the SQLite database in `data_dir` (the default), or a postgresql:// URL
            (FACEDEMO_DATABASE_URL) for a vault that several processes or machines share; `data_dir`
            then holds only the development-mode key file, if any. Every replica must use the same master key.
        Raises MasterKeyError for a malformed or wrong key (nothing on disk is changed), VaultError
        when the directory or database cannot be used or the stored data fails authentication.
        Subjects past their expiry are purged before this returns.
        """
        data_dir = Path(data_dir)
        # Checked before anything is created on disk, like every other argument.
        given = MasterKey(keys.parse_master_key(master_key)) if master_key is not None else None
        check_arguments(retention_days, admin_token, key_rotation_days, throttle)
        check_database_url(database_url)
        prepare_data_dir(data_dir)
        clock = clock or utc_now
        opened = open_checked(data_dir, given, lambda: checked_now(clock), database_url)
        try:
            log = AuditLog(opened.store, opened.secrets.audit)
            ctx = VaultContext(
                store=opened.store,
                keys=KeyGuard(opened.master, opened.dev_mode, data_dir),
                secrets=opened.secrets,
                audit=log,
                access=Access(
                    throttle if throttle is not None else Throttle(), admin_token, opened.secrets.token, log,
                    lambda: checked_now(clock),
                ),
                gallery=Gallery(),
                clock=clock,
                retention_days=retention_days,
                key_rotation_days=key_rotation_days,
            )
            with ctx.session() as store:
                ctx.gallery.load(store, ctx.keys)
            vault = cls(ctx)
            vault.purge_expired()
            return vault
        except BaseException:
            opened.store.close()
            raise

    # ------------------------------------------------------------------------------ public API

    @property
    def dev_mode(self) -> bool:
        """True when the master key comes from `<data_dir>/master.key` rather than from the caller."""
        return self._ctx.keys.dev_mode

    @property
    def version(self) -> int:
        """A number that grows whenever the stored subjects change; cache anything built from `subjects()` on it."""
        with self._ctx.session():
            self._ctx.sync()
            return self._ctx.gallery.version

    def subjects(self, model_id: str) -> list[StoredSubject]:
        """The enrolled subjects that have templates of `model_id`, decrypted, in enrolment order."""
        with self._ctx.session():
            self._ctx.sync()
            return self._ctx.gallery.subjects(model_id)

    def changes_since(self, model_id: str, version: int | None) -> GalleryChanges:
        """What changed for `model_id` after `version` (a `GalleryChanges.version` seen before), read in step with
        other processes: the subjects added, decrypted, and the ids removed, with the current version. With
        version None, or when the changes can no longer be listed (very many since), every subject (complete)."""
        with self._ctx.session():
            self._ctx.sync()
            return self._ctx.gallery.changes_since(model_id, version)

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
        return enrolment.enroll(self._ctx, name, templates, consent_text_version, consent_given)

    def describe(self, subject_id: str, token: str, *, client: str | None = None) -> dict[str, object]:
        """What is stored about the subject, without decrypting it: dates, consent, key id, counts, sizes (bytes).

        token: the subject's own deletion token; the admin token is refused like a wrong token.
        client: the caller's identity for the throttle (see `Vault`). Refusals are audited.
        Read in one snapshot, so a subject erased meanwhile by another process gives VaultError.
        """
        return subject_access.describe(self._ctx, subject_id, token, client)

    def export(self, subject_id: str, token: str, *, client: str | None = None) -> dict[str, object]:
        """The subject's own data, decrypted: name, dates, consent and templates (model id -> k lists of D floats).

        token: the subject's own deletion token; the admin token is refused like a wrong token.
        client: the caller's identity for the throttle (see `Vault`). Audited, refusals too.
        """
        return subject_access.export(self._ctx, subject_id, token, client)

    def forget(self, subject_id: str, token: str, probe: Probe, *, client: str | None = None) -> ErasureReceipt:
        """Erase a subject and return a signed receipt that says what was removed and what the probe found.

        token: the subject's deletion token or the admin token; otherwise VaultError, nothing is
        deleted and the attempt is audited. client: the caller's identity for the throttle (see
        `Vault`). In one transaction the subject's wrapped data key and every row are deleted; then
        the database is compacted (SQLite: the WAL truncated; PostgreSQL: the tables vacuumed) and the
        in-memory gallery updated (other processes' galleries on their next call). Finally `probe(model_id, templates)`
        is called per model with the deleted (k x D float32) templates, outside the vault's lock; it
        must return, per template, the subject id the current gallery identifies at the app's
        threshold, or None. If the probe raises, the erasure has still happened (see the audit log).
        The receipt's claims are about the live vault; copies made before stay readable with the
        master key named in it until that key is retired (see `ErasureReceipt`).
        """
        return deletion.forget(self._ctx, subject_id, token, probe, client)

    def verify_receipt(self, receipt: Mapping[str, object]) -> bool:
        """Whether `receipt` (an ErasureReceipt's `to_dict()`, possibly via JSON) is unmodified and from this vault."""
        return erasure.verify(self._ctx.secrets.receipt, dict(receipt) if isinstance(receipt, Mapping) else receipt)

    def purge_expired(self) -> list[str]:
        """Erase every subject whose expiry has passed (as forget does, without probe); their ids. Audited."""
        return deletion.purge_expired(self._ctx)

    def list_subjects(self, admin_token: str, *, client: str | None = None) -> list[dict[str, object]]:
        """Operator only: subject_id, name, created, expires and template counts of every subject.

        client: the caller's identity for the throttle (see `Vault`). Audited, refusals too.
        """
        return subject_access.list_subjects(self._ctx, admin_token, client)

    def rotate_master_key(self, new_key: str) -> int:
        """Re-wrap every subject's data key (and the vault secret) under `new_key`; the number of subjects.

        Templates are not re-encrypted. Afterwards the old key is refused at open. In development
        mode `<data_dir>/master.key` is replaced by the new key; otherwise the caller must store
        `new_key` as FACEDEMO_MASTER_KEY. The rotation time is recorded (meta `key_created`) for the
        receipts' rotation due date. Copies of the database made before still open with the old key:
        destroy it (and backups of it) to retire it. Other processes using the vault refuse to work
        until restarted with the new key. Audited.
        """
        return rotation.rotate_master_key(self._ctx, new_key)

    def audit_verify(self, full: bool = False) -> AuditReport:
        """Check the audit log's HMAC chain; the report names the first broken entry (0-based).

        The first call, and every call with full=True (the CLI's `audit --verify`, the page's
        "verify again"), recomputes every entry. Later calls check only that the last entry found
        intact before is unchanged, plus the entries added since (see `audit.check`): milliseconds
        instead of seconds for a long log. It reads on its own read-only connection in one snapshot,
        so the vault's other operations do not wait for it.
        """
        if self._ctx.closed:
            raise VaultError("the vault is closed")
        return self._ctx.audit.verify(full)

    def audit_entries(self) -> list[dict[str, object]]:
        """The audit log, oldest first: seq, at, event, fields (ids and counts only)."""
        with self._ctx.session():
            return self._ctx.audit.entries()

    def close(self) -> None:
        """Write counted refusals, close the database and drop the decrypted gallery; later calls raise VaultError.

        Idempotent.
        """
        ctx = self._ctx
        with ctx.lock:
            if not ctx.closed:
                if ctx.audit.pending():
                    # Counted refusals not yet written; a failure here must not keep the vault open.
                    try:
                        with ctx.audit.transaction():
                            ctx.audit.flush_all(ctx.now())
                    except (*ctx.store.errors, VaultError):
                        pass
                ctx.store.close()
                ctx.closed = True
            ctx.gallery.clear()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def _conn(self) -> object:
        """The SQLite connection while open, else None: a hook for fault-injection tests only (tests/test_faults.py)."""
        return None if self._ctx.closed else getattr(self._ctx.store, "connection", None)
