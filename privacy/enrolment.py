"""Enrolment: storing a person's name and face templates, encrypted, with their consent and a one-time deletion token."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from privacy import VaultError, erasure, keys, records
from privacy.storage import NewSubject, iso_utc
from privacy.validation import validate_identifier, validate_stored_name, validate_templates

if TYPE_CHECKING:
    from privacy.context import VaultContext


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
            "created_at": iso_utc(self.created_at),
            "expires_at": iso_utc(self.expires_at),
            "templates_stored": dict(self.templates_stored),
            "consent_text_version": self.consent_text_version,
        }


def enroll(
    ctx: VaultContext, name: str, templates: Mapping[str, np.ndarray], consent_text_version: str, consent_given: bool
) -> EnrolmentReceipt:
    """Validate, seal and store one subject in one transaction; see `Vault.enroll`."""
    clean_name = validate_stored_name(name)
    if consent_given is not True:
        raise VaultError("enrolment needs the person's explicit consent (consent_given=True); nothing was stored")
    consent_version = validate_identifier(consent_text_version, "consent_text_version")
    vectors = validate_templates(templates)
    subject_id = keys.random_id(16)
    token = erasure.issue_deletion_token()
    # Sealed before taking the lock; only the data key's wrapping needs the current master key.
    sealed = records.seal_subject(subject_id, clean_name, vectors)
    counts = {model_id: len(array) for model_id, array in vectors.items()}
    with ctx.session() as store:
        now = ctx.now()
        expires = erasure.expiry(now, ctx.retention_days)
        with ctx.audit.transaction():
            ctx.keys.assert_current(store)
            for model_id, array in vectors.items():
                stored = store.model_dimension(model_id)
                if stored is not None and stored != array.shape[1]:
                    raise VaultError(
                        f"templates of model {model_id!r} have {array.shape[1]} components, but this vault "
                        f"stores {stored}-component templates for that model; nothing was stored"
                    )
            master = ctx.keys.master
            store.insert_subject(
                NewSubject(
                    subject_id=subject_id,
                    record_ct=sealed.record_ct,
                    created=iso_utc(now),
                    expires=iso_utc(expires),
                    consent_version=consent_version,
                    consent_at=iso_utc(now),
                    token_digest=erasure.token_digest(ctx.secrets.token, subject_id, token),
                    key_id=master.key_id,
                    wrapped_key=keys.seal_subject_key(master, subject_id, sealed.data_key),
                    templates=sealed.templates,
                )
            )
            ctx.audit.append(now, "enrol", {"subject_id": subject_id, "templates": counts})
        ctx.gallery.add(
            subject_id,
            records.Subject(clean_name, now, expires, {m: records.read_only(a.copy()) for m, a in vectors.items()}),
        )
    return EnrolmentReceipt(subject_id, token, now, expires, counts, consent_version)
