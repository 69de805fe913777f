"""Tests of erasure: who may delete, what deletion removes from memory and disk, receipts, retention purge."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from privacy.erasure import ErasureReceipt
from privacy.keys import generate_master_key
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import (
    BACKENDS,
    Clock,
    Place,
    nearest_subject_probe,
    no_probe,
    random_templates,
    vault_file_bytes,
    vault_place,
)

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "khasTnqz8H5W7u9Ro7mbRrDJOaAox5SP2FZUnkKfudc"  # secrets.token_urlsafe(32), generated once


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)



@pytest.fixture
def vault(place):
    v = place.open(master_key=KEY, admin_token=ADMIN)
    yield v
    v.close()


def test_forget_with_wrong_token_deletes_nothing_and_is_audited(place):
    vault = place.open(master_key=KEY, admin_token=ADMIN)
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    before = place.table_counts()
    for wrong in ("wrong", "", None, receipt.deletion_token[:-1]):
        with pytest.raises(VaultError, match="wrong token"):
            vault.forget(receipt.subject_id, wrong, no_probe)
    assert place.table_counts() == before
    assert [s.subject_id for s in vault.subjects(MODEL)] == [receipt.subject_id]
    first = [e for e in vault.audit_entries() if e["event"] == "forget_refused"]
    assert [e["fields"] for e in first] == [{"subject_id": receipt.subject_id, "subject_known": True, "count": 1}]
    vault.close()  # writes the repeats counted within the minute as one entry
    with place.open(master_key=KEY) as reopened:
        refused = [e for e in reopened.audit_entries() if e["event"] == "forget_refused"]
    assert len(refused) == 2 and sum(e["fields"]["count"] for e in refused) == 4
    assert refused[1]["fields"] == {"count": 3, "repeats_of": refused[0]["seq"], "subjects_known": 3}


def test_one_subjects_token_cannot_forget_another_subject(vault):
    a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    b = vault.enroll("B", {MODEL: random_templates(2)}, "v1", True)
    with pytest.raises(VaultError, match="wrong token"):
        vault.forget(b.subject_id, a.deletion_token, no_probe)
    assert len(vault.subjects(MODEL)) == 2


def test_refused_forget_of_an_unknown_id_does_not_log_what_was_typed(vault):
    with pytest.raises(VaultError, match="unknown subject"):
        vault.forget("Ada Lovelace", "token", no_probe)
    entry = vault.audit_entries()[-1]
    assert entry["event"] == "forget_refused"
    assert entry["fields"] == {"subject_id": None, "subject_known": False, "count": 1}


def test_forget_with_right_token_removes_subject_from_gallery_and_bumps_version(vault):
    keep = vault.enroll("Keep", {MODEL: random_templates(1)}, "v1", True)
    gone = vault.enroll("Gone", {MODEL: random_templates(2)}, "v1", True)
    version = vault.version
    vault.forget(gone.subject_id, gone.deletion_token, no_probe)
    assert [s.subject_id for s in vault.subjects(MODEL)] == [keep.subject_id]
    assert vault.version > version


def test_forgotten_subject_cannot_be_exported_described_or_forgotten_again(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    vault.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    for call in (vault.export, vault.describe):
        with pytest.raises(VaultError):
            call(receipt.subject_id, receipt.deletion_token)
    with pytest.raises(VaultError):
        vault.forget(receipt.subject_id, receipt.deletion_token, no_probe)


def test_forgotten_subject_stays_gone_after_reopening(place):
    with place.open(master_key=KEY) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        v.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    with place.open(master_key=KEY) as v:
        assert v.subjects(MODEL) == []
    assert place.table_counts() == {"subjects": 0, "subject_keys": 0, "templates": 0}


def test_audit_chain_verifies_after_forget(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(VaultError):
        vault.forget(receipt.subject_id, "wrong", no_probe)
    erasure = vault.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    assert vault.audit_verify().ok
    forget_entry = vault.audit_entries()[-1]
    assert forget_entry["event"] == "forget"
    assert forget_entry["fields"]["receipt_id"] == erasure.receipt_id


def test_admin_token_can_forget_any_subject(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    erasure = vault.forget(receipt.subject_id, ADMIN, no_probe)
    assert erasure.authorised_by == "operator"
    assert vault.subjects(MODEL) == []


def test_without_a_configured_admin_token_no_token_but_the_subjects_own_works(place):
    with place.open(master_key=KEY) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        for token in (ADMIN, "", None):
            with pytest.raises(VaultError):
                v.forget(receipt.subject_id, token, no_probe)
        with pytest.raises(VaultError):
            v.list_subjects(None)


def test_receipt_states_rows_deleted_live_key_deleted_and_wal_checkpointed(vault, place):
    receipt = vault.enroll("A", {MODEL: random_templates(1, k=2), "other": random_templates(2, k=1, dim=64)}, "v1", True)
    erasure = vault.forget(receipt.subject_id, receipt.deletion_token, nearest_subject_probe(vault))
    assert isinstance(erasure, ErasureReceipt)
    assert erasure.rows_deleted == {"subjects": 1, "subject_keys": 1, "templates": 3}
    assert erasure.templates_deleted == 3
    assert erasure.live_key_deleted and erasure.live_rows_deleted
    if place.backend == "sqlite":
        assert erasure.wal_checkpointed is True
    else:
        # PostgreSQL's WAL is out of the vault's reach: no claim about it, and the receipt names what keeps copies.
        assert erasure.wal_checkpointed is None
        for copy in ("data files", "write-ahead log", "streaming replicas", "backups", "vacuumed"):
            assert copy in erasure.copies_before_erasure
        assert f"master key {erasure.master_key_id}" in erasure.copies_before_erasure
    assert erasure.probe == {"templates_probed": 3, "matched_subject": False, "matched_other": 0}
    assert erasure.authorised_by == "subject"


def test_probe_runs_against_the_updated_gallery_and_reports_other_matches(vault):
    templates = random_templates(1)
    vault.enroll("Twin", {MODEL: templates}, "v1", True)  # same templates: the probe must find the twin, not the deleted one
    receipt = vault.enroll("A", {MODEL: templates}, "v1", True)
    erasure = vault.forget(receipt.subject_id, receipt.deletion_token, nearest_subject_probe(vault))
    assert erasure.probe == {"templates_probed": 3, "matched_subject": False, "matched_other": 3}


def test_probe_receives_the_deleted_templates(vault):
    templates = random_templates(1)
    receipt = vault.enroll("A", {MODEL: templates}, "v1", True)
    seen = {}

    def probe(model_id, probed):
        seen[model_id] = probed.copy()
        return [None] * len(probed)

    vault.forget(receipt.subject_id, receipt.deletion_token, probe)
    np.testing.assert_array_equal(seen[MODEL], templates)


def test_receipt_signature_verifies_after_json_and_fails_when_edited(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    data = json.loads(json.dumps(vault.forget(receipt.subject_id, receipt.deletion_token, no_probe).to_dict()))
    assert vault.verify_receipt(data)
    for field, value in [("subject_id", "someone-else"), ("live_key_deleted", False), ("templates_deleted", 2),
                         ("copies_before_erasure", "no copies exist"), ("master_key_id", "0" * 16)]:
        assert not vault.verify_receipt({**data, field: value})
    assert not vault.verify_receipt({k: v for k, v in data.items() if k != "signature"})
    assert not vault.verify_receipt("not a receipt")


def test_receipt_of_one_vault_does_not_verify_in_another(place, vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    data = vault.forget(receipt.subject_id, receipt.deletion_token, no_probe).to_dict()
    with place.elsewhere("other").open(master_key=KEY) as other:
        assert not other.verify_receipt(data)


def test_database_files_hold_no_ciphertext_of_the_forgotten_subject(tmp_path):
    v = Vault.open(tmp_path, master_key=KEY)
    neighbours = [v.enroll(f"N{i}", {MODEL: random_templates(10 + i)}, "v1", True) for i in range(5)]
    gone = v.enroll("Gone", {MODEL: random_templates(1, k=4)}, "v1", True)
    neighbours += [v.enroll(f"M{i}", {MODEL: random_templates(20 + i)}, "v1", True) for i in range(5)]
    with Place(tmp_path).raw_db() as db:
        sid = (gone.subject_id,)
        blobs = [bytes(r[0]) for r in db.execute("SELECT ct FROM templates WHERE subject_id = ?", sid)]
        blobs += [bytes(r[0]) for r in db.execute("SELECT record_ct FROM subjects WHERE subject_id = ?", sid)]
        blobs += [bytes(r[0]) for r in db.execute("SELECT token_digest FROM subjects WHERE subject_id = ?", sid)]
        blobs += [bytes(r[0]) for r in db.execute("SELECT wrapped_key FROM subject_keys WHERE subject_id = ?", sid)]
    assert len(blobs) == 7
    assert all(blob in vault_file_bytes(tmp_path) for blob in blobs)  # the search does find them while stored
    v.forget(gone.subject_id, gone.deletion_token, no_probe)
    for phase in ("open", "closed"):
        on_disk = vault_file_bytes(tmp_path)
        # Any 16-byte run of any of the subject's blobs counts as a leftover.
        leftovers = [(n, i) for n, blob in enumerate(blobs) for i in range(0, len(blob) - 15, 4) if blob[i : i + 16] in on_disk]
        assert leftovers == [], f"{phase}: ciphertext of the forgotten subject still on disk: {leftovers[:5]}"
        v.close()
    with Vault.open(tmp_path, master_key=KEY) as v:
        assert len(v.subjects(MODEL)) == len(neighbours)


def test_deletion_token_never_reaches_the_disk(tmp_path):
    with Vault.open(tmp_path, master_key=KEY) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        assert receipt.deletion_token.encode() not in vault_file_bytes(tmp_path)


def test_purge_removes_subjects_past_retention_and_audits_it(place):
    clock = Clock()
    with place.open(master_key=KEY, retention_days=30, clock=clock) as v:
        old = v.enroll("Old", {MODEL: random_templates(1)}, "v1", True)
        clock.now += timedelta(days=10)
        young = v.enroll("Young", {MODEL: random_templates(2)}, "v1", True)
        clock.now += timedelta(days=19, hours=23)
        assert v.purge_expired() == []
        clock.now += timedelta(hours=1)
        version = v.version
        assert v.purge_expired() == [old.subject_id]
        assert [s.subject_id for s in v.subjects(MODEL)] == [young.subject_id]
        assert v.version > version
        entry = v.audit_entries()[-1]
        assert (entry["event"], entry["fields"]["subject_ids"]) == ("purge", [old.subject_id])
        assert v.audit_verify().ok
    assert place.table_counts()["templates"] == 3


def test_open_purges_subjects_that_expired_while_closed(place):
    clock = Clock()
    with place.open(master_key=KEY, retention_days=1, clock=clock) as v:
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    clock.now += timedelta(days=2)
    with place.open(master_key=KEY, retention_days=1, clock=clock) as v:
        assert v.subjects(MODEL) == []
        assert v.audit_entries()[-1]["event"] == "purge"


def test_empty_purge_writes_no_audit_entry(vault):
    entries = len(vault.audit_entries())
    assert vault.purge_expired() == []
    assert len(vault.audit_entries()) == entries


def test_naive_clock_is_refused(tmp_path):
    with pytest.raises(VaultError, match="timezone-aware"):
        Vault.open(tmp_path, master_key=KEY, clock=lambda: datetime(2030, 1, 1))
