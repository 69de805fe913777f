"""Deletion rights and proofs: deletion tokens, the operator token, retention expiry and signed erasure receipts."""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from privacy.keys import mac, random_id

RECEIPT_VERSION = 1


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
    """
    return {
        "templates_probed": len(matches),
        "matched_subject": any(m == subject_id for m in matches),
        "matched_other": sum(1 for m in matches if m is not None and m != subject_id),
    }


@dataclass(frozen=True)
class ErasureReceipt:
    """Proof of one erasure, signed with HMAC-SHA256 under a key only the vault holds.

    rows_deleted: rows removed per table; templates_deleted: template vectors removed (all models);
    key_destroyed: the subject's wrapped data key was deleted, so any surviving copy of its
    ciphertexts is unreadable; wal_checkpointed: the WAL was copied back and truncated to zero
    bytes; probe: templates_probed, matched_subject (False when the deleted templates no longer
    identify the subject) and matched_other (how many were identified as someone else).
    `signature` (hex) covers every other field; check it with `Vault.verify_receipt`.
    """

    receipt_id: str
    subject_id: str
    erased_at: datetime  # UTC
    authorised_by: str  # "subject" (deletion token) or "operator" (admin token)
    rows_deleted: dict[str, int]
    templates_deleted: int
    key_destroyed: bool
    wal_checkpointed: bool
    probe: dict[str, object]
    signature: str = field(default="")

    def unsigned_dict(self) -> dict[str, object]:
        """Every field but the signature, JSON-ready."""
        data = asdict(self)
        del data["signature"]
        data["erased_at"] = self.erased_at.isoformat(timespec="microseconds")
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
