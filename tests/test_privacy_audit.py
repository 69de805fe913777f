"""Tests of the audit log: which events it records, that it holds no personal data, and that tampering is detected."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from privacy import audit
from privacy.keys import generate_master_key
from privacy.vault import Vault, VaultError

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "khasTnqz8H5W7u9Ro7mbRrDJOaAox5SP2FZUnkKfudc"  # secrets.token_urlsafe(32), generated once


def random_templates(seed: int, k: int = 3, dim: int = 128) -> np.ndarray:
    """(k x dim) float32 random vectors standing in for face templates."""
    return np.random.default_rng(seed).standard_normal((k, dim)).astype(np.float32)


def no_probe(model_id: str, templates: np.ndarray) -> list[None]:
    return [None] * len(templates)


def open_vault(data_dir: Path) -> Vault:
    return Vault.open(data_dir, master_key=KEY, admin_token=ADMIN)


def make_history(data_dir: Path) -> int:
    """A vault with several audited events; the number of audit entries."""
    with open_vault(data_dir) as v:
        receipts = [v.enroll(f"Person {i}", {MODEL: random_templates(i)}, "v1", True) for i in range(4)]
        v.export(receipts[0].subject_id, receipts[0].deletion_token)
        v.forget(receipts[1].subject_id, receipts[1].deletion_token, no_probe)
        return len(v.audit_entries())


def tamper(data_dir: Path, *statements: tuple[str, tuple]) -> None:
    with sqlite3.connect(data_dir / "vault.sqlite3", isolation_level=None) as db:
        for sql, params in statements:
            db.execute(sql, params)


def verify(data_dir: Path) -> audit.AuditReport:
    with open_vault(data_dir) as v:
        return v.audit_verify()


def test_untouched_log_verifies(tmp_path):
    entries = make_history(tmp_path)
    assert verify(tmp_path) == audit.AuditReport(True, entries, None, None)


def test_log_records_each_kind_of_event(tmp_path):
    with open_vault(tmp_path) as v:
        a = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        v.export(a.subject_id, a.deletion_token)
        with pytest.raises(VaultError):
            v.forget(a.subject_id, "wrong", no_probe)
        v.forget(a.subject_id, a.deletion_token, no_probe)
        v.list_subjects(ADMIN)
        v.rotate_master_key(new_key := generate_master_key())
        events = [e["event"] for e in v.audit_entries()]
    assert events == ["create", "enrol", "export", "forget_refused", "forget", "list_subjects", "rotate_key"]
    with Vault.open(tmp_path, master_key=new_key) as v:
        assert v.audit_verify().ok


def test_log_holds_no_names_templates_or_tokens(tmp_path):
    name = "Ada Lovelace"
    templates = random_templates(1)
    with open_vault(tmp_path) as v:
        receipt = v.enroll(name, {MODEL: templates}, "v1", True)
        v.export(receipt.subject_id, receipt.deletion_token)
        v.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    with sqlite3.connect(tmp_path / "vault.sqlite3") as db:
        text = " ".join(" ".join(str(c) for c in row) for row in db.execute("SELECT seq, at, event, fields FROM audit"))
    assert receipt.subject_id in text
    assert "Ada" not in text and "Lovelace" not in text
    assert receipt.deletion_token not in text
    assert repr(float(templates[0, 0]))[:8] not in text


def test_free_text_is_refused_in_audit_fields(tmp_path):
    db = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, at TEXT, event TEXT, fields TEXT, mac BLOB)")
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    key = bytes(32)
    for fields in ({"name": "Ada Lovelace"}, {"token": "x" * 43}, {"templates": [0.25, 0.5]}, {"nested": {"a": [1]}}):
        with pytest.raises(VaultError):
            audit.append(db, key, now, "enrol", fields)
    with pytest.raises(VaultError, match="unknown audit event"):
        audit.append(db, key, now, "something", {})
    assert audit.append(db, key, now, "enrol", {"subject_id": "abc_DEF-123", "templates": {"m1": 3}}) == 1


def test_edited_entry_is_detected_at_its_index(tmp_path):
    make_history(tmp_path)
    tamper(tmp_path, ("UPDATE audit SET fields = ? WHERE seq = 3", ('{"subject_id":"someone","templates":{"test_model":9}}',)))
    report = verify(tmp_path)
    assert not report.ok and report.first_broken == 2
    assert "entry 2" in report.reason


def test_edited_time_of_an_entry_is_detected(tmp_path):
    make_history(tmp_path)
    tamper(tmp_path, ("UPDATE audit SET at = '2000-01-01T00:00:00.000000+00:00' WHERE seq = 4", ()))
    assert verify(tmp_path).first_broken == 3


def test_deleted_entry_is_detected_at_its_index(tmp_path):
    make_history(tmp_path)
    tamper(tmp_path, ("DELETE FROM audit WHERE seq = 3", ()))
    report = verify(tmp_path)
    assert not report.ok and report.first_broken == 2


def test_deleted_entry_with_renumbered_successors_is_detected(tmp_path):
    make_history(tmp_path)
    tamper(
        tmp_path,
        ("DELETE FROM audit WHERE seq = 3", ()),
        ("UPDATE audit SET seq = seq - 1 WHERE seq > 3", ()),
    )
    assert verify(tmp_path).first_broken == 2


def test_removed_last_entries_are_detected(tmp_path):
    entries = make_history(tmp_path)
    tamper(tmp_path, ("DELETE FROM audit WHERE seq >= ?", (entries - 1,)))
    report = verify(tmp_path)
    assert not report.ok and report.entries == entries - 2 and report.first_broken == entries - 2


def test_emptied_log_is_detected(tmp_path):
    make_history(tmp_path)
    tamper(tmp_path, ("DELETE FROM audit", ()), ("DELETE FROM meta WHERE key = 'audit_head'", ()))
    report = verify(tmp_path)
    assert not report.ok and report.first_broken == 0


def test_reordered_entries_are_detected(tmp_path):
    make_history(tmp_path)
    tamper(
        tmp_path,
        ("UPDATE audit SET seq = -1 WHERE seq = 2", ()),
        ("UPDATE audit SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE audit SET seq = 3 WHERE seq = -1", ()),
    )
    assert verify(tmp_path).first_broken == 1


def test_log_keeps_verifying_after_new_entries_follow_a_reopen(tmp_path):
    make_history(tmp_path)
    with open_vault(tmp_path) as v:
        v.enroll("Later", {MODEL: random_templates(9)}, "v1", True)
        assert v.audit_verify().ok
