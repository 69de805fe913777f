"""Tests of the vault's on-disk format: a vault written by hand from the format's description opens, and the
vault writes exactly that format.

The format is written out here with `sqlite3`, `hmac` and `cryptography` directly, without `privacy`,
so a change to the associated data, the key derivations, the record layout or the audit chain that
would leave existing vaults unreadable fails these tests.
"""
from __future__ import annotations

import hmac
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy import keys
from privacy.keys import MasterKey, generate_master_key, parse_master_key
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import Clock, no_probe, random_templates

MODEL = "test_model"
SUBJECT_ID = "AbCdEfGhIjKlMnOpQrStUv"  # 22 urlsafe characters, as keys.random_id(16) makes
RECORD_IDS = ["rec0AAAAAAAAAAAA", "rec1BBBBBBBBBBBB"]
TOKEN = "T" * 43
CREATED = "2030-01-01T12:00:00.000000+00:00"
EXPIRES = "2031-01-01T12:00:00.000000+00:00"

# The tables as version 1 of the schema has them (columns the vault reads by name).
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE subjects (subject_id TEXT PRIMARY KEY, record_ct BLOB NOT NULL, created TEXT NOT NULL,
    expires TEXT NOT NULL, consent_version TEXT NOT NULL, consent_at TEXT NOT NULL, token_digest BLOB NOT NULL);
CREATE TABLE subject_keys (subject_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, wrapped_key BLOB NOT NULL);
CREATE TABLE templates (record_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL, model_id TEXT NOT NULL,
    row_index INTEGER NOT NULL, dim INTEGER NOT NULL, ct BLOB NOT NULL);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL, fields TEXT NOT NULL,
    mac BLOB NOT NULL);
"""


def derive(secret: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"facedemo {purpose}".encode()).derive(secret)


def aad(*parts: str) -> bytes:
    """Associated data: compact JSON of ["facedemo-vault-v1", what, where...]."""
    return json.dumps(["facedemo-vault-v1", *parts], separators=(",", ":")).encode()


def seal(key: bytes, plaintext: bytes, associated: bytes, nonce: bytes) -> bytes:
    """nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, associated: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:12], blob[12:], associated)


def write_version_1_vault(data_dir: Path, master: bytes, name: str, templates: np.ndarray) -> None:
    """A vault with one subject and an audit chain of two entries, written from the format's description."""
    vault_secret, data_key = bytes(range(32)), bytes(range(32, 64))
    audit_key, token_key = derive(vault_secret, "audit"), derive(vault_secret, "deletion token")
    key_id = derive(master, "key id")[:8].hex()
    manifest = {MODEL: RECORD_IDS}
    record = json.dumps({"name": name, "templates": manifest}, ensure_ascii=False).encode()
    with sqlite3.connect(data_dir / "vault.sqlite3", isolation_level=None) as db:
        db.executescript(SCHEMA_V1)
        previous = bytes(32)
        for seq, (event, fields) in enumerate(
            [("create", {"key_id": key_id}), ("enrol", {"subject_id": SUBJECT_ID, "templates": {MODEL: 2}})], start=1
        ):
            fields_json = json.dumps(fields, sort_keys=True, separators=(",", ":"))
            payload = json.dumps([seq, CREATED, event, fields_json], separators=(",", ":")).encode()
            previous = hmac.new(audit_key, previous + payload, "sha256").digest()
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?)", (seq, CREATED, event, fields_json, previous))
        meta = {
            "schema_version": b"1",
            "key_check": derive(master, "key check"),
            "key_id": key_id.encode(),
            "vault_secret": seal(master, vault_secret, aad("vault secret"), b"\x01" * 12),
            "key_created": CREATED.encode(),
            "audit_head": hmac.new(audit_key, b"head" + (2).to_bytes(8, "big") + previous, "sha256").digest(),
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        token_digest = hmac.new(token_key, SUBJECT_ID.encode() + b"\x00" + TOKEN.encode(), "sha256").digest()
        db.execute(
            "INSERT INTO subjects VALUES (?, ?, ?, ?, ?, ?, ?)",
            (SUBJECT_ID, seal(data_key, record, aad("subject record", SUBJECT_ID), b"\x02" * 12), CREATED, EXPIRES,
             "v1", CREATED, token_digest),
        )
        wrapped = seal(master, data_key, aad("subject key", SUBJECT_ID), b"\x03" * 12)
        db.execute("INSERT INTO subject_keys VALUES (?, ?, ?)", (SUBJECT_ID, key_id, wrapped))
        for index, (record_id, vector) in enumerate(zip(RECORD_IDS, templates)):
            ct = seal(data_key, vector.astype("<f4").tobytes(), aad("template", SUBJECT_ID, record_id, MODEL), bytes(12))
            db.execute("INSERT INTO templates VALUES (?, ?, ?, ?, ?, ?)", (record_id, SUBJECT_ID, MODEL, index, 128, ct))


def test_vault_written_in_the_version_1_format_opens_decrypts_verifies_and_forgets(tmp_path):
    key = generate_master_key()
    templates = random_templates(1, k=2)
    write_version_1_vault(tmp_path, parse_master_key(key), "Ada Lovelace", templates)
    clock = Clock()  # 2030-01-01, before the subject expires
    with Vault.open(tmp_path, master_key=key, clock=clock) as vault:
        assert vault.audit_verify(full=True).ok
        [subject] = vault.subjects(MODEL)
        assert (subject.subject_id, subject.name) == (SUBJECT_ID, "Ada Lovelace")
        np.testing.assert_array_equal(subject.templates, templates)
        exported = vault.export(SUBJECT_ID, TOKEN)
        assert exported["name"] == "Ada Lovelace" and exported["created"] == CREATED
        receipt = vault.forget(SUBJECT_ID, TOKEN, no_probe)
        assert receipt.live_key_deleted and vault.verify_receipt(receipt.to_dict())
        assert vault.subjects(MODEL) == [] and vault.audit_verify(full=True).ok


def test_blobs_the_vault_writes_open_with_the_documented_keys_and_associated_data(tmp_path):
    key = generate_master_key()
    master = parse_master_key(key)
    templates = random_templates(2, k=2)
    with Vault.open(tmp_path, master_key=key) as vault:
        receipt = vault.enroll("Grace Hopper", {MODEL: templates}, "v1", True)
    sid = receipt.subject_id
    with sqlite3.connect(tmp_path / "vault.sqlite3") as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        record_ct, token_digest = db.execute("SELECT record_ct, token_digest FROM subjects").fetchone()
        key_id, wrapped = db.execute("SELECT key_id, wrapped_key FROM subject_keys").fetchone()
        rows = db.execute("SELECT record_id, model_id, row_index, dim, ct FROM templates ORDER BY row_index").fetchall()
    assert meta["schema_version"] == b"1" and meta["key_check"] == derive(master, "key check")
    assert key_id == meta["key_id"].decode() == derive(master, "key id")[:8].hex()
    vault_secret = unseal(master, meta["vault_secret"], aad("vault secret"))
    token_key = derive(vault_secret, "deletion token")
    expected_digest = hmac.new(token_key, sid.encode() + b"\x00" + receipt.deletion_token.encode(), "sha256").digest()
    assert hmac.compare_digest(token_digest, expected_digest)
    data_key = unseal(master, wrapped, aad("subject key", sid))
    record = json.loads(unseal(data_key, record_ct, aad("subject record", sid)))
    assert record["name"] == "Grace Hopper" and record["templates"] == {MODEL: [r[0] for r in rows]}
    for index, ((record_id, model_id, row_index, dim, ct), vector) in enumerate(zip(rows, templates)):
        assert (model_id, row_index, dim) == (MODEL, index, 128)
        plain = unseal(data_key, ct, aad("template", sid, record_id, MODEL))
        assert plain == vector.astype("<f4").tobytes()
    audit_key = derive(vault_secret, "audit")
    with sqlite3.connect(tmp_path / "vault.sqlite3") as db:
        chain = db.execute("SELECT seq, at, event, fields, mac FROM audit ORDER BY seq").fetchall()
    previous = bytes(32)
    for seq, at, event, fields_json, mac in chain:
        payload = json.dumps([seq, at, event, fields_json], separators=(",", ":")).encode()
        previous = hmac.new(audit_key, previous + payload, "sha256").digest()
        assert mac == previous
    head = hmac.new(audit_key, b"head" + len(chain).to_bytes(8, "big") + previous, "sha256").digest()
    assert meta["audit_head"] == head



def test_sealing_recipes_bind_each_blob_to_the_documented_associated_data():
    master, data_key = MasterKey(parse_master_key(generate_master_key())), keys.new_data_key()
    sealed = {
        aad("subject key", SUBJECT_ID): (master.raw, keys.seal_subject_key(master, SUBJECT_ID, data_key), data_key),
        aad("subject record", SUBJECT_ID): (data_key, keys.seal_record(data_key, SUBJECT_ID, b"{}"), b"{}"),
        aad("template", SUBJECT_ID, "r1", MODEL): (data_key, keys.seal_template(data_key, SUBJECT_ID, "r1", MODEL, b"v"), b"v"),
        aad("vault secret"): (master.raw, keys.seal_vault_secret(master, b"s" * 32), b"s" * 32),
    }
    for associated, (key, blob, plaintext) in sealed.items():
        assert unseal(key, blob, associated) == plaintext
    # And the twins open what the format describes, and nothing moved elsewhere.
    template = seal(data_key, b"v", aad("template", SUBJECT_ID, "r1", MODEL), bytes(12))
    assert keys.open_template(data_key, SUBJECT_ID, "r1", MODEL, template) == b"v"
    with pytest.raises(VaultError, match="template r2 of subject .* failed authentication"):
        keys.open_template(data_key, SUBJECT_ID, "r2", MODEL, template)
    wrapped = seal(master.raw, data_key, aad("subject key", SUBJECT_ID), bytes(12))
    assert keys.open_subject_key(master, SUBJECT_ID, wrapped) == data_key
    with pytest.raises(VaultError, match="data key of subject other"):
        keys.open_subject_key(master, "other", wrapped)
    record = seal(data_key, b"{}", aad("subject record", SUBJECT_ID), bytes(12))
    assert keys.open_record(data_key, SUBJECT_ID, record) == b"{}"
    secret = seal(master.raw, b"s" * 32, aad("vault secret"), bytes(12))
    assert keys.open_vault_secret(master, secret) == b"s" * 32
