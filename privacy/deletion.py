"""Erasing subjects from the live vault: `forget` with its probe and signed receipt, and the retention purge.

Both delete the subject's wrapped data key and every row in one transaction (crypto-shredding),
then compact the database (SQLite: the freed bytes leave its files; PostgreSQL: VACUUM, see
`privacy.erasure.copies_statement`), and update the in-memory gallery.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from privacy import VaultError, erasure, keys, records
from privacy.erasure import ErasureReceipt
from privacy.storage import iso_utc

if TYPE_CHECKING:
    from privacy.context import VaultContext

# probe(model_id, templates (k x D float32)) -> for each template, the subject id it is identified as, or None.
Probe = Callable[[str, np.ndarray], Sequence["str | None"]]


def forget(ctx: VaultContext, subject_id: str, token: str, probe: Probe, client: str | None) -> ErasureReceipt:
    """Erase one subject, probe the gallery with its deleted templates, and sign a receipt; see `Vault.forget`."""
    with ctx.session() as store:
        ctx.sync()
        by = ctx.access.authorise(store, "forget", subject_id, token, client, operator_allowed=True)
        receipt_id = keys.random_id(12)
        erased_at = ctx.now()
        with ctx.audit.transaction():
            ctx.keys.assert_current(store)
            master_key_id = ctx.keys.master.key_id
            key_created = store.get_meta("key_created")
            # Decrypted from the database (not the gallery) so that the probe uses exactly what was stored.
            doomed = records.load_subject(store, ctx.keys.master, subject_id)
            rows_deleted = store.delete_subjects([subject_id])
            templates_deleted = rows_deleted["templates"]
            left = store.subject_row_counts(subject_id)
            ctx.audit.append(
                erased_at, "forget",
                {"subject_id": subject_id, "by": by, "receipt_id": receipt_id, "templates": templates_deleted},
            )
        compacted = store.compact()
        backend = store.backend
        ctx.gallery.discard([subject_id])
    matches = _probe(probe, doomed)
    rotation_due = None
    if ctx.key_rotation_days is not None and key_created is not None:
        created = datetime.fromisoformat(key_created.decode())
        rotation_due = (created + timedelta(days=ctx.key_rotation_days)).astimezone(UTC)
    receipt = ErasureReceipt(
        receipt_id=receipt_id,
        subject_id=subject_id,
        erased_at=erased_at,
        authorised_by=by,
        rows_deleted=rows_deleted,
        templates_deleted=templates_deleted,
        live_key_deleted=rows_deleted["subject_keys"] == 1 and left["subject_keys"] == 0,
        live_rows_deleted=rows_deleted["subjects"] == 1 and not any(left.values()),
        # Only SQLite's WAL can be truncated by the vault; PostgreSQL's copies are named in copies_before_erasure.
        wal_checkpointed=compacted if backend == "sqlite" else None,
        master_key_id=master_key_id,
        master_key_rotation_due=rotation_due,
        copies_before_erasure=erasure.copies_statement(
            master_key_id, rotation_due, ctx.key_rotation_days, erased_at, backend, compacted
        ),
        probe=erasure.summarise_probe(subject_id, matches),
    )
    return erasure.sign(ctx.secrets.receipt, receipt)


def _probe(probe: Probe, doomed: records.Subject) -> list[str | None]:
    """Run the probe per model with the deleted templates (outside the vault's lock), then zero those copies."""
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
    return matches


def purge_expired(ctx: VaultContext) -> list[str]:
    """Erase every subject whose expiry has passed (as forget does, without probe); their ids. Audited when any."""
    with ctx.session() as store:
        now = ctx.now()
        with ctx.audit.transaction():
            expired = store.expired_subject_ids(iso_utc(now))
            if expired:
                rows_deleted = store.delete_subjects(expired)
                ctx.audit.append(
                    now, "purge", {"subject_ids": expired, "count": len(expired), "templates": rows_deleted["templates"]}
                )
        if expired:
            store.compact()
            ctx.gallery.discard(expired)
    return expired
