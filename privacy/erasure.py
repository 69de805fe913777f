"""Deletion tokens and their digests, the operator token check, retention expiry, and signed erasure receipts."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from privacy.keys import mac, random_id

# 2: key_destroyed became live_key_deleted and live_rows_deleted; master_key_id,
# master_key_rotation_due and copies_before_erasure were added (claims limited to the live vault).
RECEIPT_VERSION = 2
# What keys.random_id(16) makes: 22 base64url characters (ids made before f3596fd may start with "-").
SUBJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
TOKEN_MAX_CHARS = 256  # deletion tokens have 43; admin tokens are refused at open beyond this


def well_formed_subject_id(value: object) -> bool:
    """Whether `value` has the form of a subject id (anything else cannot name a subject)."""
    return isinstance(value, str) and SUBJECT_ID_PATTERN.fullmatch(value) is not None


def well_formed_token(value: object) -> bool:
    """Whether `value` can be a token: text of 1-256 characters, encodable as UTF-8, without control characters.

    Anything else (None, lists, lone surrogates, NUL bytes, 10 kB strings) is refused as a wrong
    token before it reaches hashing or the database.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= TOKEN_MAX_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) == "Cc" for c in value)


def issue_deletion_token() -> str:
    """A new deletion token: 43 urlsafe characters (256 random bits), shown once to the subject."""
    return random_id(32)


def token_digest(token_key: bytes, subject_id: str, token: str) -> bytes:
    """What the vault stores instead of a deletion token: HMAC-SHA256 bound to the subject id (32 bytes)."""
    return mac(token_key, subject_id.encode("utf-8") + b"\x00" + token.encode("utf-8"))


def token_matches(token_key: bytes, subject_id: str, token: str | None, stored_digest: bytes) -> bool:
    """Whether `token` is the subject's deletion token, compared in constant time."""
    candidate = token_digest(token_key, subject_id, token if isinstance(token, str) else "")
    return hmac.compare_digest(candidate, stored_digest) and isinstance(token, str) and token != ""


def is_operator(admin_token: str | None, token: str | None) -> bool:
    """Whether `token` is the operator's admin token (never true when none is configured)."""
    if not admin_token or not isinstance(token, str):
        return False
    # Comparing fixed-length digests keeps the time independent of where the strings differ and of their lengths.
    return hmac.compare_digest(
        hashlib.sha256(admin_token.encode("utf-8")).digest(), hashlib.sha256(token.encode("utf-8")).digest()
    )


def expiry(created: datetime, retention_days: int) -> datetime:
    """When a subject enrolled at `created` must be purged: `retention_days` days later."""
    return created + timedelta(days=retention_days)


def summarise_probe(subject_id: str, matches: Sequence[str | None]) -> dict[str, object]:
    """The receipt's probe record from the subject id the gallery matched for each deleted template.

    `matches` holds, per probed template, the id of the subject it was identified as, or None.
    See `ErasureReceipt` for the meaning of the three numbers.
    """
    return {
        "templates_probed": len(matches),
        "matched_subject": any(m == subject_id for m in matches),
        "matched_other": sum(1 for m in matches if m is not None and m != subject_id),
    }


def copies_statement(
    master_key_id: str, rotation_due: datetime | None, rotation_days: int | None, now: datetime,
    backend: str = "sqlite", compacted: bool = True,
) -> str:
    """The receipt's plain statement of what happens to copies of the vault made before an erasure.

    backend: the database's kind ("sqlite" or "postgresql"). PostgreSQL keeps copies of its own that
    the vault cannot reach (its write-ahead log, streaming replicas), so its statement names them;
    compacted: whether the VACUUM after the erasure ran (PostgreSQL).
    """
    if backend == "postgresql":
        reused = (
            "the tables were vacuumed after this erasure, which makes that space reusable without overwriting it"
            if compacted else "the VACUUM after this erasure did not run; autovacuum will make that space reusable"
        )
        text = (
            "the PostgreSQL server still has copies of the deleted rows, wrapped key included: in its data files until "
            f"their space is reused ({reused}), in its write-ahead log until those segments are recycled, on its "
            "streaming replicas and in its backups; these, and any copy of the vault made before this erasure, are "
            f"readable with master key {master_key_id}; they become unreadable when that master key is retired "
            "(rotate-key, then destroy the old key)"
        )
    else:
        text = (
            "copies of the vault made before this erasure (backups, snapshots) still hold the wrapped key, "
            f"readable with master key {master_key_id}; they become unreadable when that master key is retired "
            "(rotate-key, then destroy the old key)"
        )
    if rotation_due is not None and rotation_days is not None:
        day = rotation_due.date().isoformat()
        if rotation_due > now:
            text += f"; this vault's schedule (a new master key every {rotation_days} days) retires it by {day}"
        else:
            text += (
                f"; this vault's schedule (a new master key every {rotation_days} days) was to retire it by {day}: "
                "that rotation is overdue"
            )
    return text


@dataclass(frozen=True)
class ErasureReceipt:
    """Proof of one erasure, signed with HMAC-SHA256 under a key only the vault holds.

    Every claim is about the live vault, the one database the app uses, and is exactly true there:
    - rows_deleted: rows removed per table; templates_deleted: template vectors removed (all models);
    - live_key_deleted: the live vault no longer holds the subject's wrapped data key;
    - live_rows_deleted: the live vault no longer holds any row of the subject (record, key, templates);
    - wal_checkpointed: SQLite: the WAL was copied back and truncated to zero bytes, so the deleted
      pages are not left in it (with secure_delete they are overwritten in the database file as well).
      None on PostgreSQL, whose write-ahead log the vault cannot truncate: the rows were deleted and
      the tables vacuumed, and copies_before_erasure says which copies the server keeps;
    - master_key_id: the master key current at the erasure. Copies of the database made before it
      (backups, snapshots, replicas, PostgreSQL's write-ahead log) still hold the wrapped key and
      decrypt with that master key;
    - master_key_rotation_due: when a key rotation schedule is configured, the date (UTC) by which
      the schedule replaces that master key (None without a schedule); copies become unreadable once
      it is replaced and the old key destroyed, not before;
    - copies_before_erasure: the two points above as one plain sentence for people;
    - probe: what identification with the deleted templates gives right after the erasure, against
      the gallery that remains, at the app's decision threshold:
      templates_probed: how many deleted templates were tried;
      matched_subject: whether any of them was still identified as the erased subject (False when
      the erasure took effect in the gallery);
      matched_other: how many of them are now identified as ANOTHER enrolled person. Nonzero
      means someone enrolled looks like the erased person closely enough to pass the threshold, or
      the same person is enrolled a second time under another subject id (who can still be
      recognised through that enrolment); it is not a copy of the erased data.
    `signature` (hex) covers every other field; check it with `Vault.verify_receipt` (receipts of
    earlier versions, with their own fields, verify too).
    """

    receipt_id: str
    subject_id: str
    erased_at: datetime  # UTC
    authorised_by: str  # "subject" (deletion token) or "operator" (admin token)
    rows_deleted: dict[str, int]
    templates_deleted: int
    live_key_deleted: bool
    live_rows_deleted: bool
    wal_checkpointed: bool | None  # None: PostgreSQL (see above)
    master_key_id: str
    master_key_rotation_due: datetime | None  # UTC
    copies_before_erasure: str
    probe: dict[str, object]
    signature: str = field(default="")

    def unsigned_dict(self) -> dict[str, object]:
        """Every field but the signature, JSON-ready."""
        data = asdict(self)
        del data["signature"]
        data["erased_at"] = self.erased_at.isoformat(timespec="microseconds")
        due = self.master_key_rotation_due
        data["master_key_rotation_due"] = due.isoformat(timespec="microseconds") if due is not None else None
        data["version"] = RECEIPT_VERSION
        return data

    def to_dict(self) -> dict[str, object]:
        """The receipt as JSON-ready data, signature included."""
        return {**self.unsigned_dict(), "signature": self.signature}


def _canonical(data: dict[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(receipt_key: bytes, receipt: ErasureReceipt) -> ErasureReceipt:
    """The same receipt with its signature filled in."""
    signature = mac(receipt_key, _canonical(receipt.unsigned_dict())).hex()
    return replace(receipt, signature=signature)


def verify(receipt_key: bytes, data: object) -> bool:
    """Whether `data` (a receipt's `to_dict()`, possibly through JSON) is unmodified and signed by this vault."""
    if not isinstance(data, dict) or not isinstance(data.get("signature"), str):
        return False
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    try:
        expected = mac(receipt_key, _canonical(unsigned)).hex()
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected, data["signature"])
