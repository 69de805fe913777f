"""Copying a whole vault from one database to another (SQLite to PostgreSQL: `python -m facedemo migrate-vault`).

Rows are copied as they are: ciphertexts, wrapped keys, the audit chain and the meta values
(vault secret, key check) move unchanged, so nothing is decrypted and no key is needed. The copy is
one transaction on the target, checked row for row before it commits; meanwhile the source is held
in one write transaction, so nothing changes there during the copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privacy import VaultError
from privacy.opening import open_store
from privacy.storage import NewSubject, Storage, translated_errors
from privacy.store import DB_FILE_NAME, SCHEMA_VERSION


@dataclass(frozen=True)
class TransferReport:
    """Rows per table in the source and in the target after the copy (equal, or the copy did not commit)."""

    source: dict[str, int]
    target: dict[str, int]
    audit_head_seq: int  # the sequence number of the last audit entry, the same on both sides


def copy_rows(source: Storage, target: Storage) -> TransferReport:
    """Copy every row of `source` into `target`, which must hold no vault yet; VaultError otherwise.

    Runs inside a write transaction on each side; the target's commits only when its row counts
    and its last audit entry equal the source's.
    """
    with translated_errors(source), source.write():
        meta = source.read_meta()
        if meta is None:
            raise VaultError("the source holds no vault (no tables); nothing to copy")
        if meta.get("schema_version") != str(SCHEMA_VERSION).encode():
            raise VaultError("the source vault's format is not the one this program copies; nothing was copied")
        counts = source.table_counts()
        tail = source.audit_tail()
        subjects = []
        for subject_id in sorted(source.subject_ids()):
            sealed, facts = source.read_subject(subject_id), source.subject_facts(subject_id)
            digest = source.token_digest(subject_id)
            if sealed is None or facts is None or digest is None or sealed.wrapped_key is None or facts.key_id is None:
                raise VaultError(f"subject {subject_id} is incomplete in the source (no key or rows): nothing was copied")
            subjects.append(
                NewSubject(
                    subject_id=subject_id, record_ct=sealed.record_ct, created=sealed.created, expires=sealed.expires,
                    consent_version=facts.consent_version, consent_at=facts.consent_at, token_digest=digest,
                    key_id=facts.key_id, wrapped_key=sealed.wrapped_key, templates=sealed.templates,
                )
            )
        audit_rows = source.audit_rows()
        with translated_errors(target), target.write():
            if target.read_meta() is not None:
                raise VaultError("the target database already holds a vault; refusing to overwrite it (nothing was copied)")
            target.create_schema()
            target.put_meta(meta)
            for subject in subjects:
                target.insert_subject(subject)
            for row in audit_rows:
                target.insert_audit(row)
            copied = target.table_counts()
            if copied != counts or target.audit_tail() != tail:
                raise VaultError(f"the copy does not match the source ({copied} != {counts}); nothing was committed")
    return TransferReport(counts, copied, tail[0] if tail else 0)


def migrate_sqlite_vault(data_dir: Path, database_url: str) -> TransferReport:
    """Copy the SQLite vault of `data_dir` into the PostgreSQL database at `database_url` (see `copy_rows`).

    The SQLite file is left as it was: it still holds every subject, and erasures made on the new
    vault do not reach it, so it must be deleted (with its backups) once the new vault is in use.
    """
    path = Path(data_dir) / DB_FILE_NAME
    if not path.is_file():
        raise VaultError(f"no vault to migrate: {path} does not exist")
    source = open_store(Path(data_dir))
    try:
        target = open_store(Path(data_dir), database_url=database_url)
        try:
            return copy_rows(source, target)
        finally:
            target.close()
    finally:
        source.close()
