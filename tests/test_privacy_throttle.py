"""Tests of token guessing limits and of the operator's scope: lockouts per subject id, per client and overall."""
from __future__ import annotations

import threading

import pytest

from privacy.keys import generate_master_key
from privacy.throttle import Throttle, ThrottlePolicy, TooManyAttempts
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import no_probe, random_templates

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "md2owvhCDltkzcN5jICxB8TfRbwer7__9O7YlnmOvgE"  # secrets.token_urlsafe(32), generated once
FREE = ThrottlePolicy().free_failures


class Seconds:
    """A settable monotonic clock for the throttle."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Seconds()


@pytest.fixture
def vault(tmp_path, clock):
    v = Vault.open(tmp_path, master_key=KEY, admin_token=ADMIN, throttle=Throttle(clock=clock))
    yield v
    v.close()


def fail(call, *args, **kwargs) -> None:
    with pytest.raises(VaultError, match="wrong token"):
        call(*args, **kwargs)


def lock_out(vault: Vault, subject_id: str, client: str | None = None) -> None:
    """Enough wrong deletion tokens for `subject_id` to lock it (the last one starts the lock)."""
    for _ in range(FREE + 1):
        fail(vault.describe, subject_id, "wrong-token", client=client)


# ------------------------------------------------------------------------------------- policy


def test_delay_grows_exponentially_after_the_free_failures_up_to_the_cap():
    policy = ThrottlePolicy()
    delays = [policy.delay_s(n) for n in range(1, 20)]
    assert delays[: policy.free_failures] == [0.0] * policy.free_failures
    assert delays[policy.free_failures : policy.free_failures + 4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == policy.max_delay_s == 900.0
    assert policy.delay_s(10_000) == 900.0


def test_locked_key_reports_growing_retry_after(clock):
    throttle = Throttle(clock=clock)
    waits = []
    for _ in range(FREE + 5):
        throttle.failure(["subject:x"])
        wait, _ = throttle.retry_after_s(["subject:x"])
        waits.append(wait)
        clock.now += wait  # wait out every lock, then fail again
    assert waits == [0.0] * FREE + [2.0, 4.0, 8.0, 16.0, 32.0]


def test_failures_decay_one_step_per_quiet_period(clock):
    throttle = Throttle(clock=clock)
    for _ in range(8):
        throttle.failure(["k"])
    assert throttle.failures("k") == 8
    clock.now += 900 * 3
    assert throttle.failures("k") == 5
    clock.now += 900 * 10
    assert throttle.failures("k") == 0
    assert throttle.retry_after_s(["k"]) == (0.0, None)


def test_number_of_remembered_keys_is_bounded(clock):
    throttle = Throttle(ThrottlePolicy(max_keys=50, global_failures_per_minute=10**9), clock=clock)
    for i in range(500):
        throttle.failure([f"subject:{i}"])
    assert len(throttle) == 50
    assert throttle.failures("subject:499") == 1 and throttle.failures("subject:0") == 0


# --------------------------------------------------------------------------- through the vault


def test_right_token_is_refused_during_a_lockout_and_accepted_after_it(vault, clock):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    lock_out(vault, receipt.subject_id)
    with pytest.raises(TooManyAttempts) as refused:
        vault.describe(receipt.subject_id, receipt.deletion_token)
    assert refused.value.retry_after_s == 2 and refused.value.limit == "key"
    assert "too many wrong tokens for this subject id or from this client; try again in 2 s" in str(refused.value)
    assert isinstance(refused.value, VaultError)
    with pytest.raises(TooManyAttempts):
        vault.forget(receipt.subject_id, receipt.deletion_token, no_probe)
    assert len(vault.subjects(MODEL)) == 1  # refused without deleting anything
    clock.now += 2
    assert vault.describe(receipt.subject_id, receipt.deletion_token)["subject_id"] == receipt.subject_id


def test_subject_lock_applies_to_every_client_and_other_subjects_stay_open(vault):
    a = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    b = vault.enroll("B", {MODEL: random_templates(2)}, "v1", True)
    lock_out(vault, a.subject_id, client="203.0.113.7")
    with pytest.raises(TooManyAttempts):
        vault.export(a.subject_id, a.deletion_token, client="198.51.100.1")
    assert vault.export(b.subject_id, b.deletion_token, client="198.51.100.1")["subject_id"] == b.subject_id


def test_client_lock_applies_to_every_subject_id_it_tries(vault):
    subjects = [vault.enroll(f"P{i}", {MODEL: random_templates(i)}, "v1", True) for i in range(FREE + 2)]
    # One wrong token per subject id: no subject id is locked, the client is.
    for s in subjects[: FREE + 1]:
        fail(vault.describe, s.subject_id, "wrong-token", client="203.0.113.7")
    last = subjects[-1]
    with pytest.raises(TooManyAttempts):
        vault.describe(last.subject_id, last.deletion_token, client="203.0.113.7")
    assert vault.describe(last.subject_id, last.deletion_token, client="198.51.100.1")
    assert vault.describe(last.subject_id, last.deletion_token)  # a caller without client identity


def test_success_does_not_clear_a_clients_failures(vault):
    own = vault.enroll("Own", {MODEL: random_templates(1)}, "v1", True)
    others = [vault.enroll(f"P{i}", {MODEL: random_templates(10 + i)}, "v1", True) for i in range(FREE + 1)]
    for other in others:
        vault.describe(own.subject_id, own.deletion_token, client="203.0.113.7")  # interleaved successes
        fail(vault.describe, other.subject_id, "wrong-token", client="203.0.113.7")
    with pytest.raises(TooManyAttempts):
        vault.describe(own.subject_id, own.deletion_token, client="203.0.113.7")


def test_unknown_and_malformed_subject_ids_are_throttled_like_known_ones(vault):
    for subject_id in ("A" * 22, "\ud800"):
        lock_out(vault, subject_id)
        with pytest.raises(TooManyAttempts):
            vault.describe(subject_id, "wrong-token")


def test_global_cap_refuses_every_token_check_until_the_minute_ends(tmp_path, clock):
    clock.now = 6000.0  # the start of a minute
    policy = ThrottlePolicy(global_failures_per_minute=20)
    with Vault.open(tmp_path, master_key=KEY, admin_token=ADMIN, throttle=Throttle(policy, clock)) as vault:
        receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        for i in range(20):  # 20 clients, one unknown subject id each: no key reaches its free limit
            fail(vault.describe, f"{i:022d}", "wrong-token", client=f"client {i}")
        clock.now += 15
        with pytest.raises(TooManyAttempts, match="in the last minute; try again in 45 s") as refused:
            vault.describe(receipt.subject_id, receipt.deletion_token, client="someone new")
        assert refused.value.limit == "global" and refused.value.retry_after_s == 45
        with pytest.raises(TooManyAttempts):
            vault.list_subjects(ADMIN)
        clock.now += 45
        assert vault.describe(receipt.subject_id, receipt.deletion_token, client="someone new")


def test_operator_token_guessing_locks_the_operator_account(vault, clock):
    for _ in range(FREE + 1):
        with pytest.raises(VaultError, match="admin token"):
            vault.list_subjects("guess-" + "x" * 20, client="203.0.113.7")
    with pytest.raises(TooManyAttempts, match="operator account") as refused:
        vault.list_subjects(ADMIN, client="198.51.100.1")
    clock.now += refused.value.retry_after_s
    assert vault.list_subjects(ADMIN, client="198.51.100.1") == []


def test_throttle_is_safe_under_concurrent_failures(clock):
    throttle = Throttle(ThrottlePolicy(global_failures_per_minute=10**9), clock=clock)

    def hammer() -> None:
        for _ in range(500):
            throttle.failure(["shared"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.failures("shared") == 2000


# ------------------------------------------------------------------------------ operator scope


def test_admin_token_cannot_describe_or_export_a_subject_and_is_audited_as_refused(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    for call, event in ((vault.describe, "describe_refused"), (vault.export, "export_refused")):
        with pytest.raises(VaultError, match="unknown subject id or wrong token"):
            call(receipt.subject_id, ADMIN)
        entry = vault.audit_entries()[-1]
        assert entry["event"] == event and entry["fields"]["subject_id"] == receipt.subject_id
    assert not any(e["event"] == "export" for e in vault.audit_entries())


def test_admin_token_may_list_and_forget_anyone(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    assert [row["subject_id"] for row in vault.list_subjects(ADMIN)] == [receipt.subject_id]
    assert vault.forget(receipt.subject_id, ADMIN, no_probe).authorised_by == "operator"


def test_refused_listing_is_audited(vault):
    with pytest.raises(VaultError, match="admin token"):
        vault.list_subjects("not-the-admin-token")
    entry = vault.audit_entries()[-1]
    assert (entry["event"], entry["fields"]) == ("list_subjects_refused", {"count": 1})


def test_throttled_attempts_are_audited_without_the_token_or_client(vault):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    lock_out(vault, receipt.subject_id, client="203.0.113.7")
    with pytest.raises(TooManyAttempts):
        vault.describe(receipt.subject_id, receipt.deletion_token, client="203.0.113.7")
    entry = vault.audit_entries()[-1]
    assert entry["event"] == "describe_throttled"
    assert entry["fields"] == {"subject_id": receipt.subject_id, "subject_known": True, "limit": "key", "count": 1}
    text = repr(vault.audit_entries())
    assert "203.0.113.7" not in text and receipt.deletion_token not in text
