"""Opening a vault: argument checks, the data directory, choosing the master key, the key check, first-time set-up.

Every check that can refuse runs first on a read-only connection, so a refused open (wrong or
missing key, foreign or corrupt database, newer schema) changes nothing on disk or in the database.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from privacy import VaultError, audit, keys, store
from privacy.keys import MasterKey, MasterKeyError, VaultKeys
from privacy.storage import Storage, iso_utc, translated_errors
from privacy.throttle import Throttle
from privacy.validation import check_admin_token

_REQUIRED_META = frozenset({"schema_version", "key_check", "key_id", "vault_secret"})


@dataclass(frozen=True)
class Opened:
    """A vault's database, open for writing and checked against the master key, and what that key unlocked."""

    store: Storage
    master: MasterKey = field(repr=False)
    dev_mode: bool  # the master key is <data_dir>/master.key
    secrets: VaultKeys


def check_arguments(
    retention_days: object, admin_token: object, key_rotation_days: object, throttle: object
) -> None:
    """VaultError for a setting `Vault.open` cannot use; checked before anything is created on disk."""
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
        raise VaultError(f"retention_days must be a whole number of days >= 1, got {retention_days!r}")
    if admin_token is not None:
        check_admin_token(admin_token)
    if key_rotation_days is not None and (
        isinstance(key_rotation_days, bool) or not isinstance(key_rotation_days, int) or key_rotation_days < 1
    ):
        raise VaultError(f"key_rotation_days must be a whole number of days >= 1 or None, got {key_rotation_days!r}")
    if throttle is not None and not isinstance(throttle, Throttle):
        raise VaultError("throttle must be a privacy.throttle.Throttle")


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (mode 0700) when absent; VaultError when it cannot be created or written."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise VaultError(f"cannot create the data directory {data_dir}: {exc.strerror or exc}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise VaultError(f"the data directory {data_dir} is not writable; the vault keeps its database there")


def check_database_url(database_url: object) -> None:
    """VaultError unless `database_url` is None (SQLite in the data directory) or a postgresql:// URL."""
    if database_url is None:
        return
    if not isinstance(database_url, str) or not database_url.startswith(("postgresql://", "postgres://")):
        raise VaultError("the database URL must start with postgresql:// (FACEDEMO_DATABASE_URL), or be unset for SQLite")


def open_store(data_dir: Path, read_only: bool = False, database_url: str | None = None) -> Storage:
    """The vault database: PostgreSQL at `database_url` when given, else SQLite in `data_dir`.

    The one place that picks a backend. psycopg is imported only for PostgreSQL.
    """
    if database_url is not None:
        check_database_url(database_url)
        from privacy import pg_store

        return pg_store.PgStore.open(database_url, read_only=read_only)
    return store.SqliteStore.open(data_dir / store.DB_FILE_NAME, read_only=read_only)


def open_checked(
    data_dir: Path, given: MasterKey | None, now: Callable[[], datetime], database_url: str | None = None
) -> Opened:
    """Open (or create) the vault database with the master key; see `Vault.open` for what is refused.

    given: the caller's master key, or None for development mode (the key file in `data_dir`).
    now: the vault's checked clock, read only when the vault is created or its key date is missing.
    database_url: PostgreSQL (postgresql://...), or None for SQLite in `data_dir`.
    """
    reader = open_store(data_dir, read_only=True, database_url=database_url)
    try:
        with translated_errors(reader):
            meta = _checked_meta(reader)
            master, dev_mode = _resolve_master_key(data_dir, given, meta)
            if meta is not None:
                _check_key(master, meta)
    finally:
        reader.close()
    writer = open_store(data_dir, database_url=database_url)
    try:
        with translated_errors(writer):
            meta = _checked_meta(writer) or _initialise(writer, master, now())
            _check_key(master, meta)  # again: another process may have initialised or rotated it meanwhile
            secrets = VaultKeys(keys.open_vault_secret(master, meta["vault_secret"]))
            if "key_created" not in meta:
                _record_key_created(writer, now())
        return Opened(writer, master, dev_mode, secrets)
    except BaseException:
        writer.close()
        raise


def _checked_meta(db: Storage) -> dict[str, bytes] | None:
    meta = db.read_meta()
    if meta is None:
        return None
    missing = _REQUIRED_META - meta.keys()
    if missing:
        raise VaultError(f"the vault's metadata lacks {sorted(missing)}: it has been tampered with or corrupted")
    if meta["schema_version"] != str(store.SCHEMA_VERSION).encode():
        found = meta["schema_version"].decode(errors="replace")
        raise VaultError(f"the vault has schema version {found}; this program reads {store.SCHEMA_VERSION}")
    return meta


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


def _check_key(master: MasterKey, meta: dict[str, bytes]) -> None:
    if not master.matches(meta["key_check"]):
        raise MasterKeyError(
            "the master key does not match this vault (key-check value differs); nothing was changed. "
            "Give the key the vault was created or last rotated with (FACEDEMO_MASTER_KEY)"
        )


def _initialise(db: Storage, master: MasterKey, now: datetime) -> dict[str, bytes]:
    with db.write():
        if db.read_meta() is None:  # re-checked under the write lock: another process may have won
            db.create_schema()
            secret = keys.new_vault_secret()
            db.put_meta(
                {
                    "schema_version": str(store.SCHEMA_VERSION).encode(),
                    "key_check": master.check_value,
                    "key_id": master.key_id.encode(),
                    "vault_secret": keys.seal_vault_secret(master, secret),
                    "key_created": iso_utc(now).encode(),
                }
            )
            audit.append(db, VaultKeys(secret).audit, now, "create", {"key_id": master.key_id})
    return _checked_meta(db)  # type: ignore[return-value]


def _record_key_created(db: Storage, now: datetime) -> None:
    """For a vault made before key epochs: when its master key came into use, from the audit log.

    The time of the last "create" or "rotate_key" entry; the current time when there is none
    (a later date than the true one, so a rotation due date derived from it is never too early).
    """
    with db.write():
        created = db.last_audit_time({"create", "rotate_key"}) or iso_utc(now)
        db.add_meta("key_created", created.encode())
