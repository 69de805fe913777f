"""One subject's blobs: sealing a name and templates for the database, and opening what the database holds.

A subject's record is JSON {"name": ..., "templates": {model id: [record id, ...]}} sealed with the
subject's data key; each template is its float32 little-endian bytes sealed with the same key,
bound to (subject id, record id, model id) by `privacy.keys`. The record lists every template row,
so a row added or removed is detected when the subject is opened.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from privacy import VaultError, keys
from privacy.keys import MasterKey
from privacy.storage import SealedSubject, Storage, TemplateRow
from privacy.validation import NAME_MAX_CHARS

# A subject's sealed record (name + template ids) is padded to a multiple of this many bytes, with
# room for the longest name, so that its size tells nothing about the name's length.
RECORD_BUCKET_BYTES = 1024
# A name's JSON text (ensure_ascii=False) takes at most 4 bytes a character: UTF-8 needs at most 4,
# and the only characters JSON escapes in an accepted name are '"' and '\' (2 bytes each).
_NAME_MAX_JSON_BYTES = 4 * NAME_MAX_CHARS


@dataclass
class Subject:
    """A subject decrypted in memory."""

    name: str = field(repr=False)
    created: datetime
    expires: datetime
    templates: dict[str, np.ndarray] = field(repr=False)  # model id -> (k x D) float32, read-only


@dataclass(frozen=True)
class SealedEnrolment:
    """A new subject's blobs, sealed with its fresh data key (which is wrapped by the master key at insert time)."""

    data_key: bytes = field(repr=False)
    record_ct: bytes = field(repr=False)
    templates: tuple[TemplateRow, ...] = field(repr=False)


def read_only(array: np.ndarray) -> np.ndarray:
    """`array`, marked read-only (what the gallery hands out must not be changed by callers)."""
    array.flags.writeable = False
    return array


def padded_record(name: str, manifest: dict[str, list[str]]) -> bytes:
    """The JSON plaintext of a subject record, padded with trailing spaces (which JSON ignores).

    The padded length is the record's length without the name plus room for the longest name,
    rounded up to RECORD_BUCKET_BYTES: it depends on the template ids, never on the name.
    """
    record = json.dumps({"name": name, "templates": manifest}, ensure_ascii=False).encode("utf-8")
    without_name = len(record) - len(json.dumps(name, ensure_ascii=False).encode("utf-8")) + 2
    target = -(-(without_name + _NAME_MAX_JSON_BYTES) // RECORD_BUCKET_BYTES) * RECORD_BUCKET_BYTES
    return record + b" " * (target - len(record))


def seal_subject(subject_id: str, name: str, vectors: dict[str, np.ndarray]) -> SealedEnrolment:
    """Seal a validated name and (k x D) float32 templates per model under a new data key, with new record ids."""
    data_key = keys.new_data_key()
    manifest: dict[str, list[str]] = {}
    rows = []
    for model_id, array in vectors.items():
        manifest[model_id] = []
        for index, vector in enumerate(array):
            record_id = keys.random_id(12)
            ct = keys.seal_template(data_key, subject_id, record_id, model_id, vector.astype("<f4").tobytes())
            rows.append(TemplateRow(record_id, model_id, index, array.shape[1], ct))
            manifest[model_id].append(record_id)
    record_ct = keys.seal_record(data_key, subject_id, padded_record(name, manifest))
    return SealedEnrolment(data_key, record_ct, tuple(rows))


def open_subject(master: MasterKey, sealed: SealedSubject) -> Subject:
    """Decrypt one subject; VaultError when any blob fails authentication or rows were added, removed or moved."""
    subject_id = sealed.subject_id
    if sealed.wrapped_key is None:
        raise VaultError(f"subject {subject_id} has no data key: the vault has been tampered with or corrupted")
    data_key = keys.open_subject_key(master, subject_id, sealed.wrapped_key)
    record = json.loads(keys.open_record(data_key, subject_id, sealed.record_ct))
    manifest: dict[str, list[str]] = record["templates"]
    by_record = {row.record_id: row for row in sealed.templates}
    if by_record.keys() != {rid for rids in manifest.values() for rid in rids}:
        raise VaultError(
            f"template rows of subject {subject_id} were added or removed: the vault has been tampered with"
        )
    templates = {}
    for model_id, record_ids in manifest.items():
        vectors = []
        for index, record_id in enumerate(record_ids):
            row = by_record[record_id]
            plain = keys.open_template(data_key, subject_id, record_id, model_id, row.ciphertext)
            if row.model_id != model_id or row.row_index != index or len(plain) != 4 * row.dim:
                raise VaultError(
                    f"template {record_id} of subject {subject_id} does not match its row: the vault has been tampered with"
                )
            vectors.append(np.frombuffer(plain, dtype="<f4"))
        templates[model_id] = read_only(np.stack(vectors).astype(np.float32))
    return Subject(
        record["name"], datetime.fromisoformat(sealed.created), datetime.fromisoformat(sealed.expires), templates
    )


def load_subject(store: Storage, master: MasterKey, subject_id: str) -> Subject:
    """Read one subject from the store and decrypt it; VaultError when there is no such subject."""
    sealed = store.read_subject(subject_id)
    if sealed is None:
        raise VaultError("no subject with this id (it may have been erased)")
    return open_subject(master, sealed)
