"""Who may do what: the subject's deletion token, the operator's admin token, the throttle on wrong tokens, refusals audited.

The holder of a subject's deletion token may describe, export and erase that subject; the
operator's admin token may list every subject and erase any, nothing else. Malformed ids and
tokens are refused exactly like wrong ones; while a subject id, the operator account or a client
is locked out (`privacy.throttle`) the token is not looked at. Every refusal is audited, coalesced
per minute (`privacy.audit.AuditLog.refusal`); what a caller typed is never written.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from privacy import VaultError, erasure
from privacy.audit import AuditLog
from privacy.storage import Storage
from privacy.throttle import Throttle, TooManyAttempts, client_key


class Access:
    """Checks tokens for one open vault. Not thread-safe by itself: the vault calls it under its lock.

    token_key: the key of the stored deletion-token digests; admin_token: the operator's token or
    None; now: the vault's clock (checked, UTC).
    """

    def __init__(
        self, throttle: Throttle, admin_token: str | None, token_key: bytes, audit: AuditLog,
        now: Callable[[], datetime],
    ) -> None:
        self._throttle = throttle
        self._admin_token = admin_token
        self._token_key = token_key
        self._audit = audit
        self._now = now

    def _throttle_keys(self, first: str, client: object) -> list[str]:
        key = client_key(client)
        return [first] if key is None else [first, key]

    def _refused(self, event: str, fields: dict[str, object], subject_known: bool) -> None:
        self._audit.refusal(self._now(), event, fields, subject_known)

    def authorise(
        self, store: Storage, action: str, subject_id: object, token: object, client: object, operator_allowed: bool
    ) -> str:
        """"subject" (deletion token) or "operator" (admin token, where allowed); otherwise audit, throttle and raise.

        Raises TooManyAttempts while the subject id or the client is locked out (the token is not
        looked at), else VaultError "unknown subject id or wrong token; nothing was changed".
        """
        id_ok = erasure.well_formed_subject_id(subject_id)
        subject_key = f"subject:{subject_id}" if id_ok else "subject:malformed"
        throttle_keys = self._throttle_keys(subject_key, client)
        try:
            self._throttle.check(throttle_keys, "subject id")
        except TooManyAttempts as exc:
            known = id_ok and store.subject_exists(subject_id)
            self._refused(
                f"{action}_throttled",
                {"subject_id": subject_id if known else None, "subject_known": known, "limit": exc.limit}, known,
            )
            raise
        token_ok = erasure.well_formed_token(token)
        clean_id = subject_id if id_ok else ""
        clean_token = token if token_ok else ""
        digest = store.token_digest(clean_id)
        # An unknown subject is still compared against a dummy digest, and the admin token is always
        # compared, so timing reveals neither which ids exist nor which check passed.
        stored = digest if digest is not None else bytes(32)
        by_subject = erasure.token_matches(self._token_key, clean_id, clean_token, stored) and token_ok
        by_operator = erasure.is_operator(self._admin_token, clean_token) and token_ok and operator_allowed
        known = digest is not None
        if known and by_subject:
            self._throttle.success([subject_key])
            return "subject"
        if known and by_operator:
            return "operator"
        self._throttle.failure(throttle_keys)
        # The id is recorded only when it names a subject: what a caller typed could be anything, even a name.
        self._refused(f"{action}_refused", {"subject_id": clean_id if known else None, "subject_known": known}, known)
        raise VaultError("unknown subject id or wrong token; nothing was changed")

    def authorise_operator(self, action: str, token: object, client: object) -> None:
        """Return when `token` is the admin token; otherwise audit, throttle and raise (as `authorise`)."""
        throttle_keys = self._throttle_keys("operator", client)
        try:
            self._throttle.check(throttle_keys, "operator account")
        except TooManyAttempts as exc:
            self._refused(f"{action}_throttled", {"limit": exc.limit}, False)
            raise
        token_ok = erasure.well_formed_token(token)
        if erasure.is_operator(self._admin_token, token if token_ok else "") and token_ok:
            self._throttle.success(["operator"])
            return
        self._throttle.failure(throttle_keys)
        self._refused(f"{action}_refused", {}, False)
        raise VaultError("listing subjects needs the operator's admin token (FACEDEMO_ADMIN_TOKEN)")
