"""Tests of what a hostile caller can pass: malformed ids and tokens, name lengths seen through sizes, races."""
from __future__ import annotations

import json
import sqlite3

import pytest

from privacy import records
from privacy.keys import generate_master_key
from privacy.throttle import Throttle, ThrottlePolicy
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import no_probe, random_templates

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "czapHsBmoorm43_nD7cLcBGUl4APl6SIXueOw32cLf4"  # secrets.token_urlsafe(32), generated once
MALFORMED = ["\ud800", "abc\ud800def" * 4, None, "x" * 10_000, "abc\x00def", "\x00" * 22, ["a"], 12, b"bytes", {"a": 1}, ""]


@pytest.fixture
def vault(tmp_path):
    # No lockouts here: these tests look at refusals one by one.
    lenient = Throttle(ThrottlePolicy(free_failures=10**6, global_failures_per_minute=10**6))
    v = Vault.open(tmp_path, master_key=KEY, admin_token=ADMIN, throttle=lenient)
    yield v
    v.close()


def calls(vault: Vault):
    return {
        "describe": lambda sid, token: vault.describe(sid, token),
        "export": lambda sid, token: vault.export(sid, token),
        "forget": lambda sid, token: vault.forget(sid, token, no_probe),
    }


@pytest.mark.parametrize("bad", MALFORMED, ids=lambda b: repr(b)[:20])
def test_malformed_token_is_refused_exactly_like_a_wrong_one_and_audited(vault, bad):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    for action, call in calls(vault).items():
        with pytest.raises(VaultError) as error:
            call(receipt.subject_id, bad)
        assert type(error.value) is VaultError
        assert str(error.value) == "unknown subject id or wrong token; nothing was changed"
        entry = vault.audit_entries()[-1]
        assert entry["event"] == f"{action}_refused"
        assert entry["fields"] == {"subject_id": receipt.subject_id, "subject_known": True, "count": 1}
    assert len(vault.subjects(MODEL)) == 1


@pytest.mark.parametrize("bad", MALFORMED, ids=lambda b: repr(b)[:20])
def test_malformed_subject_id_is_refused_exactly_like_an_unknown_one(vault, bad):
    receipt = vault.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    for action, call in calls(vault).items():
        with pytest.raises(VaultError) as error:
            call(bad, receipt.deletion_token)
        assert str(error.value) == "unknown subject id or wrong token; nothing was changed"
        entry = vault.audit_entries()[-1]
        assert entry["event"] == f"{action}_refused"
        assert entry["fields"] == {"subject_id": None, "subject_known": False, "count": 1}


@pytest.mark.parametrize("bad", MALFORMED, ids=lambda b: repr(b)[:20])
def test_malformed_admin_token_for_listing_is_refused_like_a_wrong_one(vault, bad):
    with pytest.raises(VaultError) as error:
        vault.list_subjects(bad)
    assert str(error.value) == "listing subjects needs the operator's admin token (FACEDEMO_ADMIN_TOKEN)"
    assert vault.audit_entries()[-1]["event"] == "list_subjects_refused"


def test_malformed_tokens_count_towards_the_throttle(tmp_path):
    with Vault.open(tmp_path, master_key=KEY, throttle=Throttle(clock=lambda: 1000.0)) as v:
        receipt = v.enroll("A", {MODEL: random_templates(1)}, "v1", True)
        for bad in MALFORMED[:6]:
            with pytest.raises(VaultError, match="wrong token"):
                v.describe(receipt.subject_id, bad)
        with pytest.raises(VaultError, match="too many wrong tokens"):
            v.describe(receipt.subject_id, receipt.deletion_token)


def record_sizes(data_dir) -> list[int]:
    with sqlite3.connect(data_dir / "vault.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT length(record_ct) FROM subjects ORDER BY created")]


def test_sealed_record_size_does_not_reveal_the_names_length(vault, tmp_path):
    # The longest names in characters and in bytes: 4-byte characters, characters JSON escapes (a name needs a letter).
    names = ["A", "x" * 100, "李" * 100, "A" + "\U0001F600" * 99, "A" + '"\\' * 49 + '"', "Ada Lovelace"]
    for i, name in enumerate(names):
        vault.enroll(name, {MODEL: random_templates(i, k=3)}, "v1", True)
    sizes = record_sizes(tmp_path)
    assert len(set(sizes)) == 1 and sizes[0] % 1024 == 28  # padded plaintext + nonce and tag
    assert [s.name for s in vault.subjects(MODEL)] == names


def test_record_size_grows_only_with_the_number_of_templates(vault, tmp_path):
    vault.enroll("A", {MODEL: random_templates(1, k=1)}, "v1", True)
    vault.enroll("B" * 100, {MODEL: random_templates(2, k=1)}, "v1", True)
    vault.enroll("C", {MODEL: random_templates(3, k=40)}, "v1", True)
    small_a, small_b, large = record_sizes(tmp_path)
    assert small_a == small_b < large


def test_vault_written_without_record_padding_still_opens(tmp_path, monkeypatch):
    def unpadded(name: str, manifest: dict) -> bytes:
        return json.dumps({"name": name, "templates": manifest}, ensure_ascii=False).encode("utf-8")

    monkeypatch.setattr(records, "padded_record", unpadded)
    with Vault.open(tmp_path, master_key=KEY) as v:
        v.enroll("Old Record", {MODEL: random_templates(1)}, "v1", True)
    monkeypatch.undo()
    assert record_sizes(tmp_path)[0] % 1024 != 28
    with Vault.open(tmp_path, master_key=KEY) as v:
        v.enroll("New Record", {MODEL: random_templates(2)}, "v1", True)
        assert [s.name for s in v.subjects(MODEL)] == ["Old Record", "New Record"]


def test_describe_of_a_subject_erased_by_another_process_meanwhile_is_a_clear_refusal(tmp_path, monkeypatch):
    app = Vault.open(tmp_path, master_key=KEY)
    cli = Vault.open(tmp_path, master_key=KEY)  # another process's connection
    receipt = app.enroll("A", {MODEL: random_templates(1)}, "v1", True)
    access = app._ctx.access  # white box: the erasure lands between authorisation and the read
    authorise = access.authorise

    def authorise_then_erased_elsewhere(*args, **kwargs):
        by = authorise(*args, **kwargs)
        cli.forget(receipt.subject_id, receipt.deletion_token, no_probe)
        return by

    monkeypatch.setattr(access, "authorise", authorise_then_erased_elsewhere)
    with pytest.raises(VaultError, match="no subject with this id"):
        app.describe(receipt.subject_id, receipt.deletion_token)
    app.close()
    cli.close()
