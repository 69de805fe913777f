"""Tests of what an erasure can claim about copies: key epochs, the receipt's statements, rotation seen elsewhere."""
from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from privacy.erasure import RECEIPT_VERSION
from privacy.keys import MasterKey, MasterKeyError, generate_master_key, parse_master_key
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import BACKENDS, Clock, no_probe, random_templates, vault_place

MODEL = "test_model"

@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)



def key_id(key: str) -> str:
    return MasterKey(parse_master_key(key)).key_id


def copy_vault(source: Path, target: Path) -> None:
    """What a backup of a running vault holds: the database file and its WAL."""
    target.mkdir()
    for name in ("vault.sqlite3", "vault.sqlite3-wal"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def test_copy_made_before_forget_decrypts_with_the_old_key_and_not_with_the_rotated_one(tmp_path):
    old, new = generate_master_key(), generate_master_key()
    live, backup = tmp_path / "live", tmp_path / "backup"
    vault = Vault.open(live, master_key=old)
    ada = vault.enroll("Ada Lovelace", {MODEL: random_templates(1)}, "v1", True)
    copy_vault(live, backup)
    receipt = vault.forget(ada.subject_id, ada.deletion_token, no_probe)
    assert receipt.live_key_deleted and receipt.live_rows_deleted
    assert receipt.master_key_id == key_id(old)
    assert f"readable with master key {key_id(old)}" in receipt.copies_before_erasure
    assert "still hold the wrapped key" in receipt.copies_before_erasure
    assert receipt.master_key_rotation_due is None  # no rotation schedule configured
    # Exactly what the receipt says: the copy still decrypts the erased person with the key of that time.
    with Vault.open(backup, master_key=old) as restored:
        assert [s.name for s in restored.subjects(MODEL)] == ["Ada Lovelace"]
    vault.rotate_master_key(new)
    vault.close()
    # The rotation re-wrapped the live vault; the copy opens with the old key only, so destroying
    # the old key is what makes it unreadable.
    with pytest.raises(MasterKeyError, match="does not match"):
        Vault.open(backup, master_key=new)
    with pytest.raises(MasterKeyError, match="does not match"):
        Vault.open(live, master_key=old)
    with Vault.open(live, master_key=new) as rotated:
        assert rotated.subjects(MODEL) == []


def test_receipt_states_the_date_the_rotation_schedule_retires_the_key(tmp_path):
    clock, key = Clock(), generate_master_key()
    with Vault.open(tmp_path, master_key=key, clock=clock, key_rotation_days=90) as vault:
        a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        clock.now += timedelta(days=10)
        receipt = vault.forget(a.subject_id, a.deletion_token, no_probe)
    assert receipt.master_key_rotation_due == datetime(2030, 4, 1, 12, 0, tzinfo=UTC)
    assert "a new master key every 90 days) retires it by 2030-04-01" in receipt.copies_before_erasure
    data = receipt.to_dict()
    assert data["master_key_rotation_due"] == "2030-04-01T12:00:00.000000+00:00"
    assert data["version"] == RECEIPT_VERSION == 2


def test_rotation_starts_a_new_key_epoch_and_an_overdue_rotation_is_said_so(tmp_path):
    clock, old, new = Clock(), generate_master_key(), generate_master_key()
    with Vault.open(tmp_path, master_key=old, clock=clock, key_rotation_days=30) as vault:
        a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        b = vault.enroll("B", {MODEL: random_templates(2)}, "v1", True)
        clock.now += timedelta(days=45)
        overdue = vault.forget(a.subject_id, a.deletion_token, no_probe)
        vault.rotate_master_key(new)
        clock.now += timedelta(days=1)
        fresh = vault.forget(b.subject_id, b.deletion_token, no_probe)
    assert "was to retire it by 2030-01-31" in overdue.copies_before_erasure
    assert "overdue" in overdue.copies_before_erasure and overdue.master_key_id == key_id(old)
    assert fresh.master_key_id == key_id(new)
    assert fresh.master_key_rotation_due == datetime(2030, 3, 17, 12, 0, tzinfo=UTC)


def test_vault_from_before_key_epochs_takes_its_key_date_from_the_audit_log(tmp_path):
    clock, key = Clock(), generate_master_key()
    with Vault.open(tmp_path, master_key=key, clock=clock) as vault:
        a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with sqlite3.connect(tmp_path / "vault.sqlite3") as db:
        db.execute("DELETE FROM meta WHERE key = 'key_created'")
    clock.now += timedelta(days=5)
    with Vault.open(tmp_path, master_key=key, clock=clock, key_rotation_days=10) as vault:
        receipt = vault.forget(a.subject_id, a.deletion_token, no_probe)
        assert vault.audit_verify().ok
    assert receipt.master_key_rotation_due == datetime(2030, 1, 11, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("days", [0, -1, 1.5, True, "90"])
def test_invalid_rotation_schedule_is_refused(tmp_path, days):
    with pytest.raises(VaultError, match="key_rotation_days"):
        Vault.open(tmp_path, master_key=generate_master_key(), key_rotation_days=days)


def test_receipt_version_is_covered_by_the_signature(tmp_path):
    with Vault.open(tmp_path, master_key=generate_master_key()) as vault:
        a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        data = vault.forget(a.subject_id, a.deletion_token, no_probe).to_dict()
        assert vault.verify_receipt(data)
        assert not vault.verify_receipt({**data, "version": 1})


def test_receipt_issued_before_the_version_change_still_verifies(tmp_path):
    from privacy import erasure, keys

    with Vault.open(tmp_path, master_key=generate_master_key()) as vault:
        # A version-1 receipt as the vault signed them (white box: signed with the vault's receipt key).
        v1 = {
            "receipt_id": "r" * 16, "subject_id": "s" * 22, "erased_at": "2030-01-01T12:00:00.000000+00:00",
            "authorised_by": "subject", "rows_deleted": {"subjects": 1, "subject_keys": 1, "templates": 2},
            "templates_deleted": 2, "key_destroyed": True, "wal_checkpointed": True,
            "probe": {"templates_probed": 2, "matched_subject": False, "matched_other": 0}, "version": 1,
        }
        signed = {**v1, "signature": keys.mac(vault._ctx.secrets.receipt, erasure._canonical(v1)).hex()}
        assert vault.verify_receipt(signed)
        assert not vault.verify_receipt({**signed, "templates_deleted": 3})


def test_process_that_sees_a_rotation_by_another_refuses_with_a_message_to_restart(place):
    old, new = generate_master_key(), generate_master_key()
    app = place.open(master_key=old)
    a = app.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with place.open(master_key=old) as operator:
        operator.rotate_master_key(new)
    expected = "the vault's master key was rotated by the operator; this app must be restarted with the new FACEDEMO_MASTER_KEY"
    for call in (
        lambda: app.subjects(MODEL),
        lambda: app.describe(a.subject_id, a.deletion_token),
        lambda: app.export(a.subject_id, a.deletion_token),
        lambda: app.forget(a.subject_id, a.deletion_token, no_probe),
        lambda: app.enroll("B", {MODEL: random_templates(2)}, "v1", True),
        lambda: app.subjects(MODEL),  # and it stays refused
    ):
        with pytest.raises(MasterKeyError) as error:
            call()
        assert str(error.value) == expected
    app.close()
    with place.open(master_key=new) as restarted:
        assert [s.subject_id for s in restarted.subjects(MODEL)] == [a.subject_id]


def test_development_mode_rotation_seen_elsewhere_names_the_key_file(tmp_path):
    app = Vault.open(tmp_path)
    with Vault.open(tmp_path) as operator:
        operator.rotate_master_key(generate_master_key())
    with pytest.raises(MasterKeyError, match=r"must be restarted \(the new key is in .*master\.key\)"):
        app.subjects(MODEL)
    app.close()
