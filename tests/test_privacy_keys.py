"""Tests of master-key handling: format, development-mode key file, wrong-key refusal, rotation, sealing."""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from privacy import keys
from privacy.keys import MasterKeyError, generate_master_key, parse_master_key
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import BACKENDS, Place, no_probe, random_templates, vault_files, vault_place

MODEL = "test_model"

@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)



def test_generated_master_key_is_urlsafe_base64_of_32_random_bytes():
    a, b = generate_master_key(), generate_master_key()
    assert a != b and len(a) == 44
    assert len(base64.urlsafe_b64decode(a)) == 32
    assert parse_master_key(a) == base64.urlsafe_b64decode(a)


def test_master_key_without_padding_or_with_surrounding_space_is_accepted():
    key = generate_master_key()
    assert parse_master_key(" " + key.rstrip("=") + "\n") == parse_master_key(key)


@pytest.mark.parametrize(
    "text",
    ["", "short", base64.urlsafe_b64encode(bytes(31)).decode(), base64.urlsafe_b64encode(bytes(33)).decode(),
     "!" * 44, generate_master_key()[:-2] + "*="],
)
def test_malformed_master_key_is_refused_clearly_without_echoing_it(tmp_path, text):
    with pytest.raises(MasterKeyError, match="32 bytes") as error:
        Vault.open(tmp_path, master_key=text)
    assert not text or text not in str(error.value)
    assert isinstance(error.value, VaultError)
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_development_mode_creates_master_key_file_with_mode_0600(tmp_path):
    with Vault.open(tmp_path) as v:
        assert v.dev_mode
    key_file = tmp_path / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(parse_master_key(key_file.read_text())) == 32
    assert stat.S_IMODE((tmp_path / "vault.sqlite3").stat().st_mode) == 0o600


def test_development_mode_reuses_its_key_file_on_reopen(tmp_path):
    with Vault.open(tmp_path) as v:
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    key_text = (tmp_path / "master.key").read_text()
    with Vault.open(tmp_path) as v:
        assert [s.name for s in v.subjects(MODEL)] == ["A"]
    assert (tmp_path / "master.key").read_text() == key_text


def test_given_master_key_means_not_development_mode_and_no_key_file(tmp_path):
    with Vault.open(tmp_path, master_key=generate_master_key()) as v:
        assert not v.dev_mode
    assert not (tmp_path / "master.key").exists()


def test_key_file_readable_by_others_is_refused(tmp_path):
    Vault.open(tmp_path).close()
    (tmp_path / "master.key").chmod(0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        Vault.open(tmp_path)


def test_wrong_master_key_is_refused_and_nothing_on_disk_changes(tmp_path):
    right = generate_master_key()
    with Vault.open(tmp_path, master_key=right) as v:
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    before = (tmp_path / "vault.sqlite3").read_bytes()
    with pytest.raises(MasterKeyError, match="does not match this vault"):
        Vault.open(tmp_path, master_key=generate_master_key())
    assert (tmp_path / "vault.sqlite3").read_bytes() == before
    # A read-only connection may leave an empty WAL and its index behind, never data.
    assert all(p.stat().st_size == 0 for p in tmp_path.glob("vault.sqlite3-wal"))
    with Vault.open(tmp_path, master_key=right) as v:
        assert len(v.subjects(MODEL)) == 1


def test_wrong_master_key_leaves_a_crashed_writers_wal_untouched(tmp_path):
    right = generate_master_key()
    # A writer that dies without closing leaves its committed transactions in the WAL only.
    child = (
        "import os, sys, numpy as np\n"
        "from privacy.vault import Vault\n"
        "v = Vault.open(sys.argv[1], master_key=sys.argv[2])\n"
        "v.enroll('A', {'test_model': np.ones((2, 8), np.float32)}, 'v1', True)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", child, str(tmp_path), right], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    before = vault_files(tmp_path)
    assert before["vault.sqlite3-wal"]
    with pytest.raises(MasterKeyError, match="does not match this vault"):
        Vault.open(tmp_path, master_key=generate_master_key())
    after = vault_files(tmp_path)
    assert (after["vault.sqlite3"], after["vault.sqlite3-wal"]) == (before["vault.sqlite3"], before["vault.sqlite3-wal"])
    with Vault.open(tmp_path, master_key=right) as v:
        assert [s.name for s in v.subjects(MODEL)] == ["A"]


def test_vault_made_with_a_given_key_is_not_opened_with_a_new_development_key(tmp_path):
    Vault.open(tmp_path, master_key=generate_master_key()).close()
    with pytest.raises(MasterKeyError, match="FACEDEMO_MASTER_KEY"):
        Vault.open(tmp_path)
    assert not (tmp_path / "master.key").exists()


def _enrol_three(place: Place, key: str) -> dict[str, np.ndarray]:
    templates = {name: random_templates(i) for i, name in enumerate(["A", "B", "C"])}
    with place.open(master_key=key) as v:
        for name, t in templates.items():
            v.enroll(name, {MODEL: t}, "v1", True)
    return templates


def test_rotation_refuses_the_old_key_and_every_subject_decrypts_with_the_new(place):
    old, new = generate_master_key(), generate_master_key()
    templates = _enrol_three(place, old)
    with place.open(master_key=old) as v:
        assert v.rotate_master_key(new) == 3
        assert {s.name for s in v.subjects(MODEL)} == set(templates)  # the open vault keeps working
    with pytest.raises(MasterKeyError, match="does not match"):
        place.open(master_key=old)
    with place.open(master_key=new) as v:
        stored = {s.name: s.templates for s in v.subjects(MODEL)}
        assert v.audit_verify().ok
        assert v.audit_entries()[-1]["event"] == "rotate_key"
    for name, t in templates.items():
        np.testing.assert_array_equal(stored[name], t)


def test_rotation_rewraps_keys_without_re_encrypting_templates(place):
    old, new = generate_master_key(), generate_master_key()
    _enrol_three(place, old)
    query = "SELECT ct FROM templates ORDER BY record_id"
    with place.raw_db() as db:
        templates_before = db.execute(query).fetchall()
        wrapped_before = db.execute("SELECT wrapped_key FROM subject_keys ORDER BY subject_id").fetchall()
    with place.open(master_key=old) as v:
        v.rotate_master_key(new)
    with place.raw_db() as db:
        assert db.execute(query).fetchall() == templates_before
        wrapped_after = db.execute("SELECT wrapped_key FROM subject_keys ORDER BY subject_id").fetchall()
        key_ids = {row[0] for row in db.execute("SELECT key_id FROM subject_keys")}
    assert not set(wrapped_before) & set(wrapped_after)
    assert key_ids == {keys.MasterKey(parse_master_key(new)).key_id}


def test_describe_shows_the_new_key_id_after_rotation(tmp_path):
    old, new = generate_master_key(), generate_master_key()
    with Vault.open(tmp_path, master_key=old) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        before = v.describe(receipt.subject_id, receipt.deletion_token)["key_id"]
        v.rotate_master_key(new)
        after = v.describe(receipt.subject_id, receipt.deletion_token)["key_id"]
    assert before != after


def test_rotation_to_the_key_in_use_is_refused(tmp_path):
    key = generate_master_key()
    with Vault.open(tmp_path, master_key=key) as v:
        with pytest.raises(VaultError, match="already in use"):
            v.rotate_master_key(key)


def test_deletion_tokens_and_receipts_from_before_rotation_still_work(place):
    old, new = generate_master_key(), generate_master_key()
    with place.open(master_key=old) as v:
        a = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        b = v.enroll("B", {MODEL: random_templates(2)}, "v1", True)
        receipt = json.loads(json.dumps(v.forget(a.subject_id, a.deletion_token, no_probe).to_dict()))
        v.rotate_master_key(new)
    with place.open(master_key=new) as v:
        assert v.verify_receipt(receipt)
        assert v.forget(b.subject_id, b.deletion_token, no_probe).live_key_deleted


def test_rotation_in_development_mode_replaces_the_key_file(tmp_path):
    with Vault.open(tmp_path) as v:
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        old_text = (tmp_path / "master.key").read_text()
        v.rotate_master_key(generate_master_key())
    assert (tmp_path / "master.key").read_text() != old_text
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    assert not (tmp_path / "master.key.pending").exists()
    with Vault.open(tmp_path) as v:
        assert [s.name for s in v.subjects(MODEL)] == ["A"]


def test_development_rotation_interrupted_before_the_key_file_was_replaced_is_completed_at_open(tmp_path):
    with Vault.open(tmp_path) as v:
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        old_text = (tmp_path / "master.key").read_text()
        v.rotate_master_key(generate_master_key())
    # The state a crash between the database commit and the file replacement leaves behind.
    os.replace(tmp_path / "master.key", tmp_path / "master.key.pending")
    (tmp_path / "master.key").write_text(old_text)
    (tmp_path / "master.key").chmod(0o600)
    with Vault.open(tmp_path) as v:
        assert [s.name for s in v.subjects(MODEL)] == ["A"]
    assert not (tmp_path / "master.key.pending").exists()


def test_sealed_blob_opens_only_with_the_same_key_and_associated_data():
    key = keys.new_data_key()
    aad = keys.associated_data("template", "subject", "record", "model")
    blob = keys.seal(key, b"payload", aad)
    assert keys.unseal(key, blob, aad, "blob") == b"payload"
    assert len(blob) == len(b"payload") + 28
    with pytest.raises(VaultError, match="tampered"):
        keys.unseal(key, blob, keys.associated_data("template", "subject", "other record", "model"), "blob")
    with pytest.raises(VaultError, match="tampered"):
        keys.unseal(keys.new_data_key(), blob, aad, "blob")


def test_sealing_the_same_plaintext_twice_gives_different_blobs():
    key = keys.new_data_key()
    aad = keys.associated_data("x")
    assert keys.seal(key, b"same", aad) != keys.seal(key, b"same", aad)


def test_derived_keys_differ_by_purpose():
    secret = os.urandom(32)
    assert keys.derive_key(secret, "audit") != keys.derive_key(secret, "receipt")
    assert keys.derive_key(secret, "audit") == keys.derive_key(secret, "audit")


def test_random_ids_never_start_with_a_dash_so_they_can_be_typed_as_arguments():
    from privacy.keys import random_id

    ids = [random_id(16) for _ in range(2000)]  # ~31 of them would start with "-" by chance
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) == 22 for i in ids)
