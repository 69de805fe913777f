"""Tests of the vault under concurrent use, on each backend: threads sharing one vault, several processes (replicas)
on one database, a killed writer."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from privacy.keys import generate_master_key
from privacy.vault import Vault
from tests.privacy_helpers import BACKENDS, Place, nearest_subject_probe, random_templates, vault_place

MODEL = "test_model"
DIM = 128
KEY = generate_master_key()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)


# Runs in a child process: enrol subjects named "person <i>" with 1 + i % 4 templates each, printing
# each committed subject id, until stopped (argv: data dir, master key, first i, count or -1 for ever,
# database URL or "" for SQLite).
ENROL_LOOP = """
import sys
import numpy as np
from privacy.vault import Vault

vault = Vault.open(sys.argv[1], master_key=sys.argv[2], database_url=sys.argv[5] or None)
rng = np.random.default_rng(int(sys.argv[3]))
i, stop = int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[4])
while int(sys.argv[4]) < 0 or i < stop:
    templates = rng.standard_normal((1 + i % 4, 128)).astype(np.float32)
    receipt = vault.enroll(f"person {i}", {"test_model": templates}, "v1", True)
    print(receipt.subject_id, flush=True)
    i += 1
vault.close()
"""


# A replica in a child process: 2 threads, each enrolling 50 subjects and forgetting every second one
# at once; prints "kept <id>" per subject left enrolled (argv: data dir, master key, worker offset,
# database URL or "").
REPLICA_WORKERS = """
import sys
import threading
import numpy as np
from privacy.vault import Vault

vault = Vault.open(sys.argv[1], master_key=sys.argv[2], database_url=sys.argv[4] or None)
offset = int(sys.argv[3])
kept, errors = [], []

def work(worker):
    rng = np.random.default_rng(worker)
    try:
        for i in range(50):
            receipt = vault.enroll(f"w{worker} s{i}", {"test_model": rng.standard_normal((2, 128)).astype(np.float32)},
                                   "v1", True)
            if i % 2:
                erased = vault.forget(receipt.subject_id, receipt.deletion_token, lambda m, t: [None] * len(t))
                assert erased.live_key_deleted and erased.live_rows_deleted
            else:
                kept.append(receipt.subject_id)
            vault.subjects("test_model")
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(offset + n,)) for n in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
vault.close()
print("\\n".join(f"kept {sid}" for sid in kept))
print("\\n".join(f"error {e}" for e in errors), file=sys.stderr)
sys.exit(1 if errors else 0)
"""


def child(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def enrol_loop(place: Place, first: int, count: int) -> subprocess.Popen:
    return child(ENROL_LOOP, str(place.data_dir), KEY, str(first), str(count), place.database_url or "")


def assert_whole_subjects(vault: Vault) -> dict[str, str]:
    """Every subject decrypted with the template count its name implies; subject id -> name."""
    subjects = vault.subjects(MODEL)
    for s in subjects:
        i = int(s.name.split()[1])
        assert s.templates.shape == (1 + i % 4, DIM), s.name
    return {s.subject_id: s.name for s in subjects}


def test_four_threads_enrolling_and_forgetting_leave_exactly_the_kept_subjects(place):
    vault = place.open(master_key=KEY)
    kept: list[set[str]] = [set() for _ in range(4)]
    errors: list[BaseException] = []
    probe = nearest_subject_probe(vault, max_distance=1e-3)  # identical templates only

    def work(worker: int) -> None:
        try:
            for i in range(50):
                templates = random_templates(1000 * worker + i, k=2)
                receipt = vault.enroll(f"w{worker} s{i}", {MODEL: templates}, "v1", True)
                if i % 2:
                    erased = vault.forget(receipt.subject_id, receipt.deletion_token, probe)
                    assert erased.live_key_deleted and erased.live_rows_deleted and not erased.probe["matched_subject"]
                else:
                    kept[worker].add(receipt.subject_id)
                vault.subjects(MODEL)  # readers interleave with writers
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = set().union(*kept)
    assert len(expected) == 100
    assert {s.subject_id for s in vault.subjects(MODEL)} == expected
    assert vault.audit_verify().ok
    vault.close()
    with place.open(master_key=KEY) as reopened:
        assert {s.subject_id for s in reopened.subjects(MODEL)} == expected


def test_process_killed_during_an_enrolment_loop_leaves_only_whole_subjects(place):
    place.open(master_key=KEY).close()
    child = enrol_loop(place, first=0, count=-1)
    printed = [child.stdout.readline().strip() for _ in range(25)]
    assert all(printed), child.stderr.read()
    child.send_signal(signal.SIGKILL)
    printed += child.stdout.read().split()  # ids committed and printed before the kill landed
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with place.open(master_key=KEY) as vault:
        stored = assert_whole_subjects(vault)
        assert set(printed) <= stored.keys()
        assert len(stored) <= len(printed) + 1  # at most the one committed before its id was printed
        assert vault.audit_verify().ok


def test_two_processes_enrolling_into_one_vault_lose_nothing(place):
    place.open(master_key=KEY).close()
    children = [enrol_loop(place, first=1000 * n, count=20) for n in (1, 2)]
    outputs = [c.communicate(timeout=60) for c in children]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
    printed = {sid for out, _ in outputs for sid in out.split()}
    with place.open(master_key=KEY) as vault:
        assert assert_whole_subjects(vault).keys() == printed
        assert len(printed) == 40
        assert vault.audit_verify().ok


def test_two_replicas_with_two_threads_each_enrolling_and_forgetting_keep_one_audit_chain(place):
    """4 workers x 50 enrolments, every second one forgotten at once, split over two processes on one database."""
    place.open(master_key=KEY).close()
    children = [child(REPLICA_WORKERS, str(place.data_dir), KEY, str(offset), place.database_url or "")
                for offset in (0, 2)]
    outputs = [c.communicate(timeout=240) for c in children]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
    kept = {line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("kept ")}
    assert len(kept) == 100
    with place.open(master_key=KEY) as vault:
        assert {s.subject_id for s in vault.subjects(MODEL)} == kept
        report = vault.audit_verify(full=True)
        assert report.ok, report
        events = [e["event"] for e in vault.audit_entries()]
    assert events.count("enrol") == 200 and events.count("forget") == 100


def test_changes_by_another_connection_appear_in_an_open_vault(place):
    app = place.open(master_key=KEY)
    cli = place.open(master_key=KEY)  # a second connection, as a CLI process (or another replica) would have
    version = app.version
    receipt = cli.enroll("person 1", {MODEL: random_templates(0, k=2)}, "v1", True)
    assert [s.subject_id for s in app.subjects(MODEL)] == [receipt.subject_id]
    assert app.version > version
    version = app.version
    cli.forget(receipt.subject_id, receipt.deletion_token, nearest_subject_probe(cli, max_distance=1e-3))
    assert app.subjects(MODEL) == []
    assert app.version > version
    app.close()
    cli.close()


def test_another_process_reading_the_vault_never_deletes_this_ones_write_ahead_log(tmp_path):
    # Closing any descriptor of the database file drops every POSIX lock this process holds on it:
    # the other process would then think it was the last user and delete the WAL we still write to.
    from privacy.store import DB_FILE_NAME

    vault = Vault.open(tmp_path, master_key=generate_master_key())
    try:
        vault.enroll("First", {"test_model": random_templates(1)}, "v1", True)
        assert vault.audit_verify(full=True).ok  # reads through a second, read-only connection
        peek = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM subjects'); c.close()"
        subprocess.run([sys.executable, "-c", peek, str(tmp_path / DB_FILE_NAME)], check=True)
        vault.enroll("Second", {"test_model": random_templates(2)}, "v1", True)
        assert (tmp_path / f"{DB_FILE_NAME}-wal").exists()
        count = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM subjects').fetchone()[0])"
        seen = subprocess.run([sys.executable, "-c", count, str(tmp_path / DB_FILE_NAME)], check=True,
                              capture_output=True, text=True).stdout.strip()
        assert seen == "2"
    finally:
        vault.close()
