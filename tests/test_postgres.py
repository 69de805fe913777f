"""Tests of the vault on PostgreSQL that have no SQLite counterpart: a database that is down or goes away, a wrong
key against an existing vault, schema versions and migrations, the change log replicas sync from, VACUUM after an
erasure, what pg_dump shows, and copying an SQLite vault over (migrate-vault).

The behaviours both backends share run on both in tests/test_privacy_*.py. Every test here talks to a real
server (tests/postgres_server.py) and skips when PostgreSQL is not installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from privacy import pg_store
from privacy.keys import MasterKeyError, generate_master_key
from privacy.transfer import migrate_sqlite_vault
from privacy.vault import Vault, VaultError
from tests import command_line, postgres_server
from tests.privacy_helpers import PgRaw, nearest_subject_probe, no_probe, random_templates

MODEL = "test_model"
KEY = generate_master_key()
ADMIN = "khasTnqz8H5W7u9Ro7mbRrDJOaAox5SP2FZUnkKfudc"  # secrets.token_urlsafe(32), generated once
REPO = Path(__file__).resolve().parents[1]
ALL_TABLES = ("meta", "subjects", "subject_keys", "templates", "audit", "schema_version", "change_counter", "changes")


def open_vault(data_dir: Path, url: str, **options) -> Vault:
    return Vault.open(data_dir, master_key=options.pop("master_key", KEY), admin_token=ADMIN, database_url=url, **options)


def dump_tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the vault, in a stable order."""
    with PgRaw(url) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in ALL_TABLES}


@pytest.fixture
def pg_url():
    """A fresh database on the test server (dropped afterwards)."""
    yield from postgres_server.fresh_database()


@pytest.fixture
def own_server():
    """A PostgreSQL server of this test's own, which it may stop and start again."""
    postgres_server.server()  # skips when PostgreSQL cannot run here
    srv = postgres_server.PostgresServer(postgres_server.binaries())
    srv.init()
    srv.start()
    yield srv
    srv.close()


# ---------------------------------------------------------------------------------- bad conditions


@pytest.mark.slow  # starts and stops a PostgreSQL server of its own
def test_database_down_at_start_up_is_refused_with_where_and_what_to_do(tmp_path, own_server):
    url = own_server.new_database()
    own_server.stop()
    with pytest.raises(VaultError) as error:
        open_vault(tmp_path, url)
    message = str(error.value)
    assert "cannot connect to the vault's PostgreSQL server" in message and "is it running" in message
    assert f"database {postgres_server.database_name(url)} on" in message  # says where
    assert error.value.__cause__ is None


def test_url_that_is_not_postgresql_is_refused_before_anything_happens(tmp_path):
    with pytest.raises(VaultError, match="postgresql://"):
        Vault.open(tmp_path / "data", master_key=KEY, database_url="mysql://localhost/vault")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_connection_lost_mid_enrolment_fails_with_a_message_writes_nothing_and_the_vault_recovers(
    tmp_path, own_server
):
    url = own_server.new_database()
    vault = open_vault(tmp_path, url)
    vault.enroll("Before", {MODEL: random_templates(1)}, "v1", True)
    # Hold the writers' lock from outside, so the next enrolment waits inside its own transaction...
    blocker = PgRaw(url)
    blocker.execute("BEGIN")
    blocker.execute("SELECT pg_advisory_xact_lock(%s)", (pg_store.VAULT_LOCK,))
    failure: list[BaseException] = []

    def enrol() -> None:
        try:
            vault.enroll("Cut off", {MODEL: random_templates(2)}, "v1", True)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=enrol)
    worker.start()
    waiting = []
    for _ in range(200):
        waiting = blocker.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchall()
        if waiting:
            break
        time.sleep(0.02)
    assert waiting, "the enrolment never reached the lock"
    # ...and there its connection is cut, as a network failure or a server restart would.
    blocker.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
    worker.join(30)
    blocker.execute("ROLLBACK")
    blocker.__exit__()
    assert len(failure) == 1 and isinstance(failure[0], VaultError)
    assert "lost the connection" in str(failure[0]) and "try again" in str(failure[0])
    assert own_server.execute(postgres_server.database_name(url), "SELECT count(*) FROM subjects") == [(1,)]
    # The whole server goes away: requests fail with a message, the vault object stays usable.
    own_server.stop("immediate")
    with pytest.raises(VaultError, match="lost the connection|cannot reach"):
        vault.enroll("While down", {MODEL: random_templates(3)}, "v1", True)
    with pytest.raises(VaultError, match="cannot reach the vault's PostgreSQL server"):
        vault.subjects(MODEL)
    own_server.start()
    # No restart of the app needed. The pool reconnects with a growing backoff, so on a loaded machine
    # the first request after the server is back may still find no connection: it is refused whole
    # ("cannot reach", nothing carried out) and a later one succeeds.
    deadline = time.monotonic() + 60
    while True:
        try:
            vault.enroll("After", {MODEL: random_templates(4)}, "v1", True)
            break
        except VaultError as exc:
            assert "cannot reach" in str(exc)
            assert time.monotonic() < deadline, "the vault did not recover within 60 s of the server's return"
            time.sleep(0.5)
    assert sorted(s.name for s in vault.subjects(MODEL)) == ["After", "Before"]
    # A restart while the vault is idle costs no failed request: the dead connection is replaced at once.
    own_server.stop("fast")
    own_server.start()
    assert sorted(s.name for s in vault.subjects(MODEL)) == ["After", "Before"]
    assert vault.audit_verify(full=True).ok
    vault.close()
    with open_vault(tmp_path, url) as reopened:  # every subject decrypts whole
        assert len(reopened.subjects(MODEL)) == 2


def test_wrong_master_key_against_an_existing_vault_is_refused_and_writes_nothing(tmp_path, pg_url):
    with open_vault(tmp_path, pg_url) as v:
        v.enroll("Ada", {MODEL: random_templates(1)}, "v1", True)
    before = dump_tables(pg_url)
    with pytest.raises(MasterKeyError, match="does not match this vault"):
        open_vault(tmp_path, pg_url, master_key=generate_master_key())
    assert dump_tables(pg_url) == before
    with open_vault(tmp_path, pg_url) as v:
        assert [s.name for s in v.subjects(MODEL)] == ["Ada"]


def test_database_of_another_program_is_refused_and_left_alone(tmp_path, pg_url):
    with PgRaw(pg_url) as db:
        db.execute("CREATE TABLE photos (id integer PRIMARY KEY)")
    with pytest.raises(VaultError, match="not a facedemo vault"):
        open_vault(tmp_path, pg_url)
    with PgRaw(pg_url) as db:
        tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"photos"}


def test_database_created_with_sql_ascii_encoding_works_too(tmp_path):
    srv = postgres_server.server()
    url = srv.new_database().replace("/vault_", "/ascii_vault_")
    srv.execute("postgres", f'CREATE DATABASE "{postgres_server.database_name(url)}" ENCODING \'SQL_ASCII\' '
                "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        with open_vault(tmp_path, url) as v:
            v.enroll("Zoë Ødegård", {MODEL: random_templates(1)}, "v1", True)
        with open_vault(tmp_path, url) as v:
            assert [s.name for s in v.subjects(MODEL)] == ["Zoë Ødegård"]
    finally:
        srv.drop_database(url)


# ------------------------------------------------------------------------------ schema versions


def test_new_vault_records_every_migration_in_the_schema_version_table(tmp_path, pg_url):
    open_vault(tmp_path, pg_url).close()
    with PgRaw(pg_url) as db:
        versions = [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m.version for m in pg_store.MIGRATIONS] and versions[-1] == pg_store.SCHEMA_VERSION


def test_vault_at_schema_version_1_is_migrated_forward_at_open_and_keeps_its_subjects(tmp_path, pg_url):
    with open_vault(tmp_path, pg_url) as v:
        kept = v.enroll("Kept", {MODEL: random_templates(1)}, "v1", True)
    with PgRaw(pg_url) as db:  # what a vault written before migration 2 looks like
        db.execute("DROP TABLE changes")
        db.execute("DROP TABLE change_counter")
        db.execute("DELETE FROM schema_version WHERE version > 1")
    with open_vault(tmp_path, pg_url) as app, open_vault(tmp_path, pg_url) as other:
        assert [s.subject_id for s in app.subjects(MODEL)] == [kept.subject_id]
        added = other.enroll("Added", {MODEL: random_templates(2)}, "v1", True)
        assert {s.subject_id for s in app.subjects(MODEL)} == {kept.subject_id, added.subject_id}
        other.forget(kept.subject_id, kept.deletion_token, no_probe)
        assert [s.subject_id for s in app.subjects(MODEL)] == [added.subject_id]
        assert app.audit_verify(full=True).ok
    with PgRaw(pg_url) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == pg_store.SCHEMA_VERSION


def test_vault_of_a_newer_schema_is_refused_and_left_alone(tmp_path, pg_url):
    open_vault(tmp_path, pg_url).close()
    with PgRaw(pg_url) as db:
        db.execute("INSERT INTO schema_version (version, description) VALUES (%s, 'from the future')",
                   (pg_store.SCHEMA_VERSION + 1,))
    before = dump_tables(pg_url)
    with pytest.raises(VaultError, match=f"schema version {pg_store.SCHEMA_VERSION + 1}.*newer facedemo"):
        open_vault(tmp_path, pg_url)
    assert dump_tables(pg_url) == before


@pytest.mark.slow  # three Python processes
def test_several_processes_creating_the_vault_at_once_make_one_vault(tmp_path, pg_url):
    script = (
        "import sys\nfrom privacy.vault import Vault\n"
        "v = Vault.open(sys.argv[1], master_key=sys.argv[2], database_url=sys.argv[3])\n"
        "v.enroll('p', {'test_model': __import__('numpy').ones((1, 8), 'float32')}, 'v1', True)\nv.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), KEY, pg_url], env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [c.communicate(timeout=120)[1] for c in children]
    assert [c.returncode for c in children] == [0, 0, 0], errors
    with open_vault(tmp_path, pg_url) as v:
        assert len(v.subjects(MODEL)) == 3
        assert [e["event"] for e in v.audit_entries()].count("create") == 1
        assert v.audit_verify(full=True).ok


# --------------------------------------------------------------------------------- replica sync


def test_another_replica_reads_only_the_subjects_that_changed(tmp_path, pg_url, monkeypatch):
    a, b = open_vault(tmp_path, pg_url), open_vault(tmp_path, pg_url)
    for i in range(5):
        a.enroll(f"P{i}", {MODEL: random_templates(i)}, "v1", True)
    assert len(b.subjects(MODEL)) == 5
    version = b.changes_since(MODEL, None).version
    # From here on b may neither list every subject id nor decrypt more than the one new subject.
    opened: list[str] = []
    real_open = pg_store.PgStore.read_subject
    monkeypatch.setattr(pg_store.PgStore, "subject_ids", lambda self: pytest.fail("full id list read"))
    monkeypatch.setattr(pg_store.PgStore, "read_subject", lambda self, sid: opened.append(sid) or real_open(self, sid))
    new = a.enroll("New", {MODEL: random_templates(9)}, "v1", True)
    changes = b.changes_since(MODEL, version)
    assert [s.subject_id for s in changes.added] == [new.subject_id] and not changes.complete
    assert opened == [new.subject_id]
    a.forget(new.subject_id, new.deletion_token, no_probe)
    changes = b.changes_since(MODEL, changes.version)
    assert changes.added == [] and changes.removed == {new.subject_id}
    assert len(b.subjects(MODEL)) == 5
    a.close()
    b.close()


def test_replica_behind_the_change_logs_window_compares_ids_and_still_converges(tmp_path, pg_url, monkeypatch):
    monkeypatch.setattr(pg_store, "CHANGE_LOG_WINDOW", 3)
    a, b = open_vault(tmp_path, pg_url), open_vault(tmp_path, pg_url)
    receipts = [a.enroll(f"P{i}", {MODEL: random_templates(i)}, "v1", True) for i in range(6)]
    assert len(b.subjects(MODEL)) == 6
    for r in receipts[:4]:  # more erasures than the window while b does not look
        a.forget(r.subject_id, r.deletion_token, no_probe)
    with PgRaw(pg_url) as db:
        tombstones = db.execute("SELECT count(*) FROM changes WHERE subject_id NOT IN (SELECT subject_id FROM subjects)")
        assert tombstones.fetchone()[0] < 4  # the oldest erased ids have left the change log
    assert {s.subject_id for s in b.subjects(MODEL)} == {r.subject_id for r in receipts[4:]}
    a.close()
    b.close()


# ----------------------------------------------------------------------------------- erasure


def test_forget_vacuums_the_subject_tables_and_leaves_no_row_of_the_subject(tmp_path, pg_url):
    with open_vault(tmp_path, pg_url) as v:
        keep = v.enroll("Keep", {MODEL: random_templates(1)}, "v1", True)
        gone = v.enroll("Gone", {MODEL: random_templates(2)}, "v1", True)
        with PgRaw(pg_url) as db:
            db.execute("SELECT pg_stat_reset()")
        receipt = v.forget(gone.subject_id, gone.deletion_token, nearest_subject_probe(v))
        assert receipt.live_key_deleted and receipt.live_rows_deleted and receipt.wal_checkpointed is None
        assert "the tables were vacuumed after this erasure" in receipt.copies_before_erasure
        with PgRaw(pg_url) as db:
            vacuumed = dict(db.execute(
                "SELECT relname, vacuum_count FROM pg_stat_user_tables WHERE relname IN "
                "('subjects', 'subject_keys', 'templates')").fetchall())
            for table in ("subjects", "subject_keys", "templates"):
                rows = db.execute(f"SELECT subject_id FROM {table}").fetchall()
                assert {r[0] for r in rows} == {keep.subject_id}, table
        assert vacuumed == {"subjects": 1, "subject_keys": 1, "templates": 1}


def test_pg_dump_of_the_vault_holds_no_name_no_token_and_no_template_bytes(tmp_path, pg_url):
    name = "Grace Brewster Murray Hopper"
    templates = random_templates(7)
    with open_vault(tmp_path, pg_url) as v:
        receipt = v.enroll(name, {MODEL: templates}, "v1", True)
        v.export(receipt.subject_id, receipt.deletion_token)
    srv = postgres_server.server()
    dumped = subprocess.run(
        [srv.tool("pg_dump"), "--format=plain", "--no-owner", pg_url], capture_output=True, timeout=120, check=True,
    ).stdout
    assert receipt.subject_id.encode() in dumped  # the dump does hold the vault
    assert name.encode() not in dumped and b"Hopper" not in dumped
    assert receipt.deletion_token.encode() not in dumped
    # Templates would appear as raw float32 bytes or as bytea hex text: no 8-byte run in either form.
    raw = templates.astype("<f4").tobytes()
    hex_text = raw.hex().encode()
    assert not [i for i in range(len(raw) - 7) if raw[i:i + 8] in dumped]
    assert not [i for i in range(0, len(hex_text) - 15, 2) if hex_text[i:i + 16] in dumped]
    assert repr(float(templates[0, 0]))[:8].encode() not in dumped


# ------------------------------------------------------------------------- moving a SQLite vault


def test_sqlite_vault_copied_to_postgresql_opens_decrypts_verifies_and_its_receipts_verify(tmp_path, pg_url):
    with Vault.open(tmp_path, master_key=KEY, admin_token=ADMIN) as old:
        receipts = [old.enroll(f"Person {i}", {MODEL: random_templates(i, k=1 + i % 3)}, "v1", True) for i in range(6)]
        erased = old.forget(receipts[0].subject_id, receipts[0].deletion_token, no_probe).to_dict()
        subjects = {s.subject_id: s.templates.copy() for s in old.subjects(MODEL)}
        entries = len(old.audit_entries())
    sqlite_bytes = (tmp_path / "vault.sqlite3").read_bytes()
    report = migrate_sqlite_vault(tmp_path, pg_url)
    assert report.source == report.target == {"meta": report.source["meta"], "subjects": 5, "subject_keys": 5,
                                              "templates": sum(len(t) for t in subjects.values()), "audit": entries}
    assert (tmp_path / "vault.sqlite3").read_bytes() == sqlite_bytes  # the source is left as it was
    with open_vault(tmp_path, pg_url) as new:
        moved = {s.subject_id: s.templates for s in new.subjects(MODEL)}
        assert moved.keys() == subjects.keys()
        for sid, t in subjects.items():
            np.testing.assert_array_equal(moved[sid], t)
        assert new.audit_verify(full=True).ok
        assert new.verify_receipt(erased)
        r = receipts[1]
        assert new.forget(r.subject_id, r.deletion_token, no_probe).live_key_deleted
    with pytest.raises(VaultError, match="already holds a vault"):
        migrate_sqlite_vault(tmp_path, pg_url)


def test_migrating_a_data_directory_without_a_vault_is_refused(tmp_path, pg_url):
    with pytest.raises(VaultError, match="no vault to migrate"):
        migrate_sqlite_vault(tmp_path, pg_url)
    with PgRaw(pg_url) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_migrate_vault_command_copies_and_prints_the_counts(tmp_path, pg_url):
    with Vault.open(tmp_path, master_key=KEY) as old:
        for i in range(3):
            old.enroll(f"Person {i}", {MODEL: random_templates(i)}, "v1", True)
    env = {"FACEDEMO_MASTER_KEY": KEY, "FACEDEMO_DATABASE_URL": None}

    def migrate() -> command_line.Ran:  # `python -m facedemo migrate-vault`, in this process
        return command_line.run(["migrate-vault", "--to", pg_url, "--data-dir", tmp_path], env=env)

    done = migrate()
    assert done.code == 0, done.err
    assert json.loads(done.out)["copied"]["subjects"] == 3
    assert "delete" in done.err and "vault.sqlite3" in done.err
    again = migrate()
    assert again.code == 1 and again.err.count("\n") == 1 and "already holds a vault" in again.err
    with open_vault(tmp_path, pg_url) as new:
        assert len(new.subjects(MODEL)) == 3
