"""What people may see of what is stored: a subject's description and export (with their deletion token), the
operator's list of subjects (with the admin token)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from privacy import VaultError, records
from privacy.storage import iso_utc

if TYPE_CHECKING:
    from privacy.context import VaultContext


def describe(ctx: VaultContext, subject_id: str, token: str, client: str | None) -> dict[str, object]:
    """Dates, consent, key id, counts and sizes of one subject, read in one snapshot without decrypting; see `Vault.describe`."""
    with ctx.session() as store:
        ctx.sync()
        ctx.access.authorise(store, "describe", subject_id, token, client, operator_allowed=False)
        with store.snapshot():
            facts = store.subject_facts(subject_id)
    if facts is None:
        raise VaultError("no subject with this id (it may have been erased)")
    if facts.key_id is None:
        raise VaultError(f"subject {subject_id} has no data key: the vault has been tampered with or corrupted")
    return {
        "subject_id": subject_id,
        "created": facts.created,
        "expires": facts.expires,
        "consent": {"given": True, "text_version": facts.consent_version, "given_at": facts.consent_at},
        "encryption": "AES-256-GCM; per-subject data key wrapped by the master key",
        "key_id": facts.key_id,
        "wrapped_key_bytes": facts.wrapped_key_bytes,
        "record_ciphertext_bytes": facts.record_bytes,
        "templates": {
            model_id: {"count": t.count, "dimension": t.dimension, "ciphertext_bytes": t.ciphertext_bytes}
            for model_id, t in facts.templates.items()
        },
    }


def export(ctx: VaultContext, subject_id: str, token: str, client: str | None) -> dict[str, object]:
    """The subject's own data decrypted from the database, audited; see `Vault.export`."""
    with ctx.session() as store:
        ctx.sync()
        by = ctx.access.authorise(store, "export", subject_id, token, client, operator_allowed=False)
        with ctx.audit.transaction():
            ctx.keys.assert_current(store)
            subject = records.load_subject(store, ctx.keys.master, subject_id)
            consent_version, consent_at = store.consent(subject_id)  # type: ignore[misc]  # the subject exists
            counts = {m: len(a) for m, a in subject.templates.items()}
            ctx.audit.append(ctx.now(), "export", {"subject_id": subject_id, "by": by, "templates": counts})
    return {
        "subject_id": subject_id,
        "name": subject.name,
        "created": iso_utc(subject.created),
        "expires": iso_utc(subject.expires),
        "consent": {"given": True, "text_version": consent_version, "given_at": consent_at},
        "templates": {m: a.tolist() for m, a in subject.templates.items()},
    }


def list_subjects(ctx: VaultContext, admin_token: str, client: str | None) -> list[dict[str, object]]:
    """Every subject's id, name, dates and template counts, for the operator only, audited; see `Vault.list_subjects`."""
    with ctx.session():
        ctx.access.authorise_operator("list_subjects", admin_token, client)
        ctx.sync()
        listing = [
            {
                "subject_id": sid,
                "name": s.name,
                "created": iso_utc(s.created),
                "expires": iso_utc(s.expires),
                "templates": {m: len(a) for m, a in s.templates.items()},
            }
            for sid, s in ctx.gallery.items()
        ]
        with ctx.audit.transaction():
            ctx.audit.append(ctx.now(), "list_subjects", {"count": len(listing)})
    return listing
