"""Tests of the audit log: which events it records, that it holds no personal data, and that tampering is detected."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from privacy import audit, store
from privacy.keys import generate_master_key
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import BACKENDS, Clock, Place, no_probe, random_templates, vault_place

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "khasTnqz8H5W7u9Ro7mbRrDJOaAox5SP2FZUnkKfudc"  # secrets.token_urlsafe(32), generated once

@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)



def open_vault(place: Place) -> Vault:
    return place.open(master_key=KEY, admin_token=ADMIN)


def make_history(place: Place) -> int:
    """A vault with several audited events; the number of audit entries."""
    with open_vault(place) as v:
        receipts = [v.enroll(f"Person {i}", {MODEL: random_templates(i)}, "v1", True) for i in range(4)]
        v.export(receipts[0].subject_id, receipts[0].deletion_token)
        v.forget(receipts[1].subject_id, receipts[1].deletion_token, no_probe)
        return len(v.audit_entries())


def tamper(place: Place, *statements: tuple[str, tuple]) -> None:
    with place.raw_db() as db:
        for sql, params in statements:
            db.execute(sql, params)


def verify(place: Place) -> audit.AuditReport:
    with open_vault(place) as v:
        return v.audit_verify()


def test_untouched_log_verifies(place):
    entries = make_history(place)
    assert verify(place) == audit.AuditReport(True, entries, None, None)


def test_log_records_each_kind_of_event(place):
    with open_vault(place) as v:
        a = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        v.export(a.subject_id, a.deletion_token)
        with pytest.raises(VaultError):
            v.forget(a.subject_id, "wrong", no_probe)
        v.forget(a.subject_id, a.deletion_token, no_probe)
        v.list_subjects(ADMIN)
        v.rotate_master_key(new_key := generate_master_key())
        events = [e["event"] for e in v.audit_entries()]
    assert events == ["create", "enrol", "export", "forget_refused", "forget", "list_subjects", "rotate_key"]
    with place.open(master_key=new_key) as v:
        assert v.audit_verify().ok


def test_log_holds_no_names_templates_or_tokens(place):
    name = "Ada Lovelace"
    templates = random_templates(1)
    with open_vault(place) as v:
        receipt = v.enroll(name, {MODEL: templates}, "v1", True)
        v.export(receipt.subject_id, receipt.deletion_token)
        v.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    with place.raw_db() as db:
        text = " ".join(" ".join(str(c) for c in row) for row in db.execute("SELECT seq, at, event, fields FROM audit"))
    assert receipt.subject_id in text
    assert "Ada" not in text and "Lovelace" not in text
    assert receipt.deletion_token not in text
    assert repr(float(templates[0, 0]))[:8] not in text


def test_free_text_is_refused_in_audit_fields(tmp_path):
    db = store.SqliteStore.open(tmp_path / "a.db")
    db.create_schema()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    key = bytes(32)
    for fields in ({"name": "Ada Lovelace"}, {"token": "x" * 43}, {"templates": [0.25, 0.5]}, {"nested": {"a": [1]}}):
        with pytest.raises(VaultError):
            audit.append(db, key, now, "enrol", fields)
    with pytest.raises(VaultError, match="unknown audit event"):
        audit.append(db, key, now, "something", {})
    assert audit.append(db, key, now, "enrol", {"subject_id": "abc_DEF-123", "templates": {"m1": 3}}) == 1


def test_edited_entry_is_detected_at_its_index(place):
    make_history(place)
    tamper(place, ("UPDATE audit SET fields = ? WHERE seq = 3", ('{"subject_id":"someone","templates":{"test_model":9}}',)))
    report = verify(place)
    assert not report.ok and report.first_broken == 2
    assert "entry 2" in report.reason


def test_edited_time_of_an_entry_is_detected(place):
    make_history(place)
    tamper(place, ("UPDATE audit SET at = '2000-01-01T00:00:00.000000+00:00' WHERE seq = 4", ()))
    assert verify(place).first_broken == 3


def test_deleted_entry_is_detected_at_its_index(place):
    make_history(place)
    tamper(place, ("DELETE FROM audit WHERE seq = 3", ()))
    report = verify(place)
    assert not report.ok and report.first_broken == 2


def test_deleted_entry_with_renumbered_successors_is_detected(place):
    make_history(place)
    tamper(
        place,
        ("DELETE FROM audit WHERE seq = 3", ()),
        ("UPDATE audit SET seq = seq - 1 WHERE seq > 3", ()),
    )
    assert verify(place).first_broken == 2


def test_removed_last_entries_are_detected(place):
    entries = make_history(place)
    tamper(place, ("DELETE FROM audit WHERE seq >= ?", (entries - 1,)))
    report = verify(place)
    assert not report.ok and report.entries == entries - 2 and report.first_broken == entries - 2


def test_emptied_log_is_detected(place):
    make_history(place)
    tamper(place, ("DELETE FROM audit", ()), ("DELETE FROM meta WHERE key = 'audit_head'", ()))
    report = verify(place)
    assert not report.ok and report.first_broken == 0


def test_reordered_entries_are_detected(place):
    make_history(place)
    tamper(
        place,
        ("UPDATE audit SET seq = -1 WHERE seq = 2", ()),
        ("UPDATE audit SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE audit SET seq = 3 WHERE seq = -1", ()),
    )
    assert verify(place).first_broken == 1


def test_log_keeps_verifying_after_new_entries_follow_a_reopen(place):
    make_history(place)
    with open_vault(place) as v:
        v.enroll("Later", {MODEL: random_templates(9)}, "v1", True)
        assert v.audit_verify().ok


# --------------------------------------------------------------------- coalesced refusals


def refusal_counts(entries: list[dict], *events: str) -> int:
    return sum(e["fields"]["count"] for e in entries if e["event"] in events)


def test_500_wrong_tokens_in_one_interval_add_two_entries_that_count_500(place):
    from privacy.throttle import Throttle, ThrottlePolicy

    clock = Clock()
    lenient = Throttle(ThrottlePolicy(free_failures=10**6, global_failures_per_minute=10**6))
    with place.open(master_key=KEY, admin_token=ADMIN, clock=clock, throttle=lenient) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        before = len(v.audit_entries())
        for i in range(500):
            with pytest.raises(VaultError, match="wrong token"):
                v.forget(receipt.subject_id, f"wrong-{i}", no_probe)
        assert len(v.audit_entries()) == before + 1  # the first at once, the repeats counted
    with open_vault(place) as v:
        entries = v.audit_entries()
        assert v.audit_verify().ok
    refused = [e for e in entries if e["event"] == "forget_refused"]
    assert len(refused) == 2 and refusal_counts(entries, "forget_refused") == 500
    assert refused[1]["fields"] == {"count": 499, "repeats_of": refused[0]["seq"], "subjects_known": 499}


def test_refusals_past_the_throttle_are_audited_as_throttled_and_still_counted(place):
    from privacy.throttle import Throttle

    stopped = Throttle(clock=lambda: 1000.0)  # no lock runs out during the test, however slow the machine
    with place.open(master_key=KEY, admin_token=ADMIN, throttle=stopped) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        for i in range(500):
            with pytest.raises(VaultError):  # wrong token, then too many attempts
                v.describe(receipt.subject_id, f"wrong-{i}", client="203.0.113.7")
    with open_vault(place) as v:
        entries = v.audit_entries()
        assert v.audit_verify().ok
    kinds = [e["event"] for e in entries if e["event"].startswith("describe_")]
    assert kinds == ["describe_refused", "describe_throttled", "describe_refused", "describe_throttled"]
    assert refusal_counts(entries, "describe_refused", "describe_throttled") == 500
    assert refusal_counts(entries, "describe_refused") == 6  # the free failures and the one that locked


def test_counted_repeats_are_written_at_the_first_audit_write_after_the_interval(place):
    clock = Clock()
    with place.open(master_key=KEY, admin_token=ADMIN, clock=clock) as v:
        for _ in range(3):
            with pytest.raises(VaultError):
                v.list_subjects("not-the-admin-token")
        clock.now += timedelta(seconds=30)
        v.enroll("A", {MODEL: random_templates(1)}, "v1", True)  # within the interval: repeats stay counted
        clock.now += timedelta(seconds=31)
        v.enroll("B", {MODEL: random_templates(2)}, "v1", True)
        events = [(e["event"], e["fields"].get("count")) for e in v.audit_entries()]
    assert events[1:] == [("list_subjects_refused", 1), ("enrol", None), ("list_subjects_refused", 2), ("enrol", None)]


def test_a_refusal_after_the_interval_writes_the_count_and_opens_a_new_interval(place):
    clock = Clock()
    with place.open(master_key=KEY, admin_token=ADMIN, clock=clock) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        for _ in range(3):
            with pytest.raises(VaultError):
                v.export(receipt.subject_id, "wrong-token")
        clock.now += timedelta(seconds=60)
        with pytest.raises(VaultError):
            v.export(receipt.subject_id, "wrong-token")
        counts = [e["fields"]["count"] for e in v.audit_entries() if e["event"] == "export_refused"]
    assert counts == [1, 2, 1]


# ------------------------------------------------------------------ incremental verification


def test_incremental_check_detects_an_edited_new_entry(place):
    entries = make_history(place)
    with open_vault(place) as v:
        assert v.audit_verify().ok  # full: sets the checkpoint
        v.enroll("Later", {MODEL: random_templates(9)}, "v1", True)
        v.enroll("Later still", {MODEL: random_templates(10)}, "v1", True)
        assert v.audit_verify() == audit.AuditReport(True, entries + 2, None, None)
        v.enroll("Last", {MODEL: random_templates(11)}, "v1", True)
        tamper(place, ("UPDATE audit SET fields = '{}' WHERE seq = ?", (entries + 3,)))
        report = v.audit_verify()
    assert not report.ok and report.first_broken == entries + 2


def test_full_check_detects_an_edited_old_entry_that_the_incremental_check_skips(place):
    make_history(place)
    with open_vault(place) as v:
        assert v.audit_verify().ok
        tamper(place, ("UPDATE audit SET fields = '{}' WHERE seq = 2", ()))
        assert v.audit_verify().ok  # by design: old entries are not recomputed incrementally
        report = v.audit_verify(full=True)
        assert not report.ok and report.first_broken == 1
        assert not v.audit_verify().ok  # no checkpoint after a failed check: full again


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM audit WHERE seq = 2",  # count no longer matches the last sequence number
        "UPDATE audit SET at = '2000-01-01T00:00:00.000000+00:00' WHERE seq = (SELECT max(seq) FROM audit)",
        "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)",
    ],
)
def test_incremental_check_detects_removed_entries_and_an_edited_checkpoint_entry(place, statement):
    make_history(place)
    with open_vault(place) as v:
        assert v.audit_verify().ok
        tamper(place, (statement, ()))
        assert not v.audit_verify().ok


def test_audit_check_does_not_wait_for_the_vaults_lock(place):
    import threading

    make_history(place)
    with open_vault(place) as v:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with v._ctx.lock:  # the vault's lock, as a long enrolment would hold it
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        try:
            assert v.audit_verify(full=True).ok
        finally:
            release.set()
            holder.join()
