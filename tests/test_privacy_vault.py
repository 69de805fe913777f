"""Tests of the encrypted template vault: enrolment, validation, what reaches the disk, tamper detection."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privacy.keys import generate_master_key
from privacy.vault import StoredSubject, Vault, VaultError
from tests.privacy_helpers import BACKENDS, Place, random_templates, raw_db, vault_file_bytes, vault_place

MODEL = "test_model"
DIM = 128
KEY = generate_master_key()
ADMIN = "khasTnqz8H5W7u9Ro7mbRrDJOaAox5SP2FZUnkKfudc"  # secrets.token_urlsafe(32), generated once

@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)



def open_vault(where: Path | Place, **options) -> Vault:
    """The test vault in a data directory (SQLite) or at a place (either backend)."""
    where = where if isinstance(where, Place) else Place(where)
    return where.open(master_key=options.pop("master_key", KEY), admin_token=ADMIN, **options)


@pytest.fixture
def vault(place):
    v = open_vault(place)
    yield v
    v.close()


def test_enrolled_subject_is_in_the_gallery_with_its_name_and_templates(vault):
    templates = random_templates(1)
    receipt = vault.enroll("Ada Lovelace", {MODEL: templates}, "v1", True)
    [subject] = vault.subjects(MODEL)
    assert subject.subject_id == receipt.subject_id
    assert subject.name == "Ada Lovelace"
    assert subject.templates.dtype == np.float32
    np.testing.assert_array_equal(subject.templates, templates)
    assert receipt.templates_stored == {MODEL: 3}


def test_enrolment_receipt_has_unguessable_id_token_and_expiry(place):
    with open_vault(place, retention_days=30) as v:
        a = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        b = v.enroll("B", {MODEL: random_templates(2)}, "v1", True)
    assert a.subject_id != b.subject_id and len(a.subject_id) >= 22
    assert a.deletion_token != b.deletion_token and len(a.deletion_token) >= 43
    assert (a.expires_at - a.created_at).days == 30
    assert a.expires_at.utcoffset().total_seconds() == 0


def test_subjects_of_another_model_are_not_returned(vault):
    vault.enroll("A", {MODEL: random_templates(1), "other": random_templates(2, dim=64)}, "v1", True)
    vault.enroll("B", {"other": random_templates(3, dim=64)}, "v1", True)
    assert len(vault.subjects(MODEL)) == 1
    assert len(vault.subjects("other")) == 2
    assert vault.subjects("unknown") == []


def test_enrolment_without_consent_is_refused_and_stores_nothing(vault):
    version = vault.version
    for consent in (False, None, "yes", 1):
        with pytest.raises(VaultError, match="consent"):
            vault.enroll("A", {MODEL: random_templates(1)}, "v1", consent)
    assert vault.subjects(MODEL) == []
    assert vault.version == version


@pytest.mark.parametrize(
    "name, reason",
    [("", "empty"), ("   ", "empty"), ("x" * 101, "the limit is 100"), ("Ada\nLovelace", "control"),
     ("Ada\tL", "control"), ("Ada\x00", "control"), ("Ada\u2028L", "control"), (None, "text")],
)
def test_invalid_name_is_refused_with_a_reason(vault, name, reason):
    with pytest.raises(VaultError, match=reason):
        vault.enroll(name, {MODEL: random_templates(1)}, "v1", True)


@pytest.mark.parametrize("name", ["Zoë Ødegård", "李小龍", "محمد\u200cرضا", "Ἀριστοτέλης", "Nguyễn Thị Minh Khai", "x" * 100])
def test_names_in_any_script_are_accepted_and_returned_unchanged(vault, name):
    vault.enroll(name, {MODEL: random_templates(1)}, "v1", True)
    assert vault.subjects(MODEL)[0].name == name


@pytest.mark.parametrize(
    "templates, reason",
    [
        ({}, "at least one model"),
        ({MODEL: np.zeros(DIM, np.float32)}, "2-D"),
        ({MODEL: np.zeros((0, DIM), np.float32)}, "2-D"),
        ({MODEL: np.zeros((2, 3, 4), np.float32)}, "2-D"),
        ({MODEL: np.full((1, DIM), np.nan, np.float32)}, "NaN"),
        ({MODEL: np.full((1, DIM), np.inf, np.float32)}, "infinite"),
        ({MODEL: np.full((1, DIM), 1e300)}, "beyond float32"),
        ({MODEL: np.ones((1, DIM), np.int64)}, "floating point"),
        ({"bad model id!": np.ones((1, DIM), np.float32)}, "model id"),
        ({"": np.ones((1, DIM), np.float32)}, "model id"),
    ],
)
def test_invalid_templates_are_refused_with_a_reason(vault, templates, reason):
    with pytest.raises(VaultError, match=reason):
        vault.enroll("A", templates, "v1", True)
    assert vault.subjects(MODEL) == []


def test_template_dimension_must_match_the_model_dimension_already_stored(vault):
    vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(VaultError, match="128-component"):
        vault.enroll("B", {MODEL: random_templates(2, dim=64)}, "v1", True)
    assert len(vault.subjects(MODEL)) == 1


def test_float64_templates_are_stored_as_float32(vault):
    templates = np.random.default_rng(5).standard_normal((2, DIM))
    vault.enroll("A", {MODEL: templates}, "v1", True)
    stored = vault.subjects(MODEL)[0].templates
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, templates.astype(np.float32))


def test_gallery_templates_are_read_only(vault):
    vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(ValueError):
        vault.subjects(MODEL)[0].templates[0, 0] = 1.0


def test_reprs_show_neither_name_templates_nor_deletion_token(vault):
    receipt = vault.enroll("Ada Lovelace", {MODEL: random_templates(1)}, "v1", True)
    subject = vault.subjects(MODEL)[0]
    assert "Ada" not in repr(subject) and "array" not in repr(subject)
    assert receipt.deletion_token not in repr(receipt)
    assert isinstance(subject, StoredSubject)


def test_subjects_survive_closing_and_reopening(place):
    templates = {name: random_templates(i) for i, name in enumerate(["A", "B", "C"])}
    with open_vault(place) as v:
        for name, t in templates.items():
            v.enroll(name, {MODEL: t}, "v1", True)
    with open_vault(place) as v:
        stored = {s.name: s.templates for s in v.subjects(MODEL)}
    assert stored.keys() == templates.keys()
    for name, t in templates.items():
        np.testing.assert_array_equal(stored[name], t)


def test_database_files_hold_neither_the_name_nor_any_8_byte_run_of_template_bytes(tmp_path):
    name = "Grace Brewster Murray Hopper"
    templates = random_templates(7)
    template_bytes = templates.astype("<f4").tobytes()
    v = open_vault(tmp_path)
    v.enroll(name, {MODEL: templates}, "v1", True)
    for phase in ("open", "closed"):  # with the WAL in use, then after the final checkpoint
        on_disk = vault_file_bytes(tmp_path)
        assert name.encode("utf-8") not in on_disk, phase
        leaked = [i for i in range(len(template_bytes) - 7) if template_bytes[i : i + 8] in on_disk]
        assert leaked == [], f"{phase}: template bytes found on disk at offsets {leaked[:5]}"
        v.close()


def test_describe_reports_counts_dates_consent_and_sizes_without_the_name(vault):
    receipt = vault.enroll("Ada Lovelace", {MODEL: random_templates(1, k=2)}, "consent-2024-05", True)
    info = vault.describe(receipt.subject_id, receipt.deletion_token)
    assert info["templates"] == {MODEL: {"count": 2, "dimension": DIM, "ciphertext_bytes": 2 * (4 * DIM + 28)}}
    assert info["consent"]["text_version"] == "consent-2024-05"
    assert info["key_id"] and info["wrapped_key_bytes"] == 32 + 28
    assert "Ada" not in repr(info)


def test_describe_with_wrong_token_is_refused(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(VaultError, match="wrong token"):
        vault.describe(receipt.subject_id, "not-the-token")


def test_export_returns_the_subjects_own_data_as_plain_numbers(vault):
    templates = random_templates(3, k=2)
    receipt = vault.enroll("Ada Lovelace", {MODEL: templates}, "v1", True)
    vault.enroll("Someone Else", {MODEL: random_templates(4)}, "v1", True)
    data = vault.export(receipt.subject_id, receipt.deletion_token)
    assert data["name"] == "Ada Lovelace"
    assert data["subject_id"] == receipt.subject_id
    assert data["consent"]["text_version"] == "v1"
    np.testing.assert_array_equal(np.array(data["templates"][MODEL], dtype=np.float32), templates)
    assert "Someone Else" not in repr(data)
    assert any(e["event"] == "export" and e["fields"]["subject_id"] == receipt.subject_id for e in vault.audit_entries())


def test_export_with_wrong_token_is_refused_and_audited(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(VaultError, match="wrong token"):
        vault.export(receipt.subject_id, "wrong")
    assert vault.audit_entries()[-1]["event"] == "export_refused"


def test_list_subjects_needs_the_admin_token(vault):
    receipt = vault.enroll("Ada", {MODEL: random_templates(1)}, "v1", True)
    with pytest.raises(VaultError, match="admin token"):
        vault.list_subjects("guess")
    [row] = vault.list_subjects(ADMIN)
    assert (row["subject_id"], row["name"], row["templates"]) == (receipt.subject_id, "Ada", {MODEL: 3})


def test_too_short_admin_token_is_refused_at_open(tmp_path):
    with pytest.raises(VaultError, match="at least 16"):
        Vault.open(tmp_path, master_key=KEY, admin_token="admin")


def test_closed_vault_refuses_calls(place):
    v = open_vault(place)
    v.close()
    with pytest.raises(VaultError, match="closed"):
        v.subjects(MODEL)


def _two_subjects(place: Place) -> tuple[str, str]:
    with open_vault(place) as v:
        a = v.enroll("A", {MODEL: random_templates(1)}, "v1", True).subject_id
        b = v.enroll("B", {MODEL: random_templates(2)}, "v1", True).subject_id
    return a, b


def test_flipped_bit_in_a_template_ciphertext_is_detected_at_open(place):
    a, _ = _two_subjects(place)
    with place.raw_db() as db:
        record_id, ct = db.execute("SELECT record_id, ct FROM templates WHERE subject_id = ? LIMIT 1", (a,)).fetchone()
        flipped = bytearray(ct)
        flipped[40] ^= 0x01
        db.execute("UPDATE templates SET ct = ? WHERE record_id = ?", (bytes(flipped), record_id))
    with pytest.raises(VaultError, match="tampered"):
        open_vault(place)


def test_flipped_bit_in_a_name_record_is_detected_at_open(place):
    a, _ = _two_subjects(place)
    with place.raw_db() as db:
        ct = bytearray(db.execute("SELECT record_ct FROM subjects WHERE subject_id = ?", (a,)).fetchone()[0])
        ct[-1] ^= 0x80
        db.execute("UPDATE subjects SET record_ct = ? WHERE subject_id = ?", (bytes(ct), a))
    with pytest.raises(VaultError, match="tampered"):
        open_vault(place)


def test_template_ciphertexts_swapped_between_rows_of_one_subject_are_detected(place):
    a, _ = _two_subjects(place)
    with place.raw_db() as db:
        (r1, c1), (r2, c2) = db.execute("SELECT record_id, ct FROM templates WHERE subject_id = ? LIMIT 2", (a,)).fetchall()
        db.execute("UPDATE templates SET ct = ? WHERE record_id = ?", (c2, r1))
        db.execute("UPDATE templates SET ct = ? WHERE record_id = ?", (c1, r2))
    with pytest.raises(VaultError, match="tampered"):
        open_vault(place)


@pytest.mark.parametrize(
    "table, column, key_column",
    [("templates", "ct", "record_id"), ("subjects", "record_ct", "subject_id"), ("subject_keys", "wrapped_key", "subject_id")],
)
def test_ciphertext_copied_from_another_subject_is_detected(place, table, column, key_column):
    a, b = _two_subjects(place)
    with place.raw_db() as db:
        target = db.execute(f"SELECT {key_column} FROM {table} WHERE subject_id = ? LIMIT 1", (a,)).fetchone()[0]
        stolen = db.execute(f"SELECT {column} FROM {table} WHERE subject_id = ? LIMIT 1", (b,)).fetchone()[0]
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?", (stolen, target))
    with pytest.raises(VaultError, match="tampered"):
        open_vault(place)


def test_removed_template_row_is_detected(place):
    a, _ = _two_subjects(place)
    with place.raw_db() as db:
        db.execute("DELETE FROM templates WHERE record_id = (SELECT record_id FROM templates WHERE subject_id = ? LIMIT 1)", (a,))
    with pytest.raises(VaultError, match="tampered"):
        open_vault(place)


def test_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path):
    db_file = tmp_path / "vault.sqlite3"
    junk = np.random.default_rng(0).bytes(8192)
    db_file.write_bytes(junk)
    with pytest.raises(VaultError, match="not an SQLite database"):
        open_vault(tmp_path)
    assert db_file.read_bytes() == junk


def test_damaged_sqlite_file_is_refused_and_left_unchanged(tmp_path):
    _two_subjects(Place(tmp_path))
    db_file = tmp_path / "vault.sqlite3"
    damaged = db_file.read_bytes()[:100] + bytes(range(256)) * 16
    db_file.write_bytes(damaged)
    with pytest.raises(VaultError, match="corrupt|malformed|not a database"):
        open_vault(tmp_path)
    assert db_file.read_bytes() == damaged


def test_sqlite_database_of_another_program_is_refused(tmp_path):
    with raw_db(tmp_path) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    with pytest.raises(VaultError, match="not a facedemo vault"):
        open_vault(tmp_path)


def test_data_directory_that_is_a_file_is_refused(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("x")
    with pytest.raises(VaultError, match="data directory"):
        open_vault(not_a_dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only directories, so the refusal cannot be observed")
def test_read_only_data_directory_is_refused_clearly(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o500)
    try:
        with pytest.raises(VaultError, match="not writable"):
            open_vault(data_dir)
    finally:
        data_dir.chmod(0o700)
