"""Tests of the vault under concurrent use: threads sharing one vault, several processes on one file, a killed writer."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from privacy.keys import generate_master_key
from privacy.vault import Vault
from tests.privacy_helpers import nearest_subject_probe, random_templates

MODEL = "test_model"
DIM = 128
KEY = generate_master_key()
REPO = Path(__file__).resolve().parents[1]

# Runs in a child process: enrol subjects named "person <i>" with 1 + i % 4 templates each, printing
# each committed subject id, until stopped (argv: data dir, master key, first i, count or -1 for ever).
ENROL_LOOP = """
import sys
import numpy as np
from privacy.vault import Vault

vault = Vault.open(sys.argv[1], master_key=sys.argv[2])
rng = np.random.default_rng(int(sys.argv[3]))
i, stop = int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[4])
while int(sys.argv[4]) < 0 or i < stop:
    templates = rng.standard_normal((1 + i % 4, 128)).astype(np.float32)
    receipt = vault.enroll(f"person {i}", {"test_model": templates}, "v1", True)
    print(receipt.subject_id, flush=True)
    i += 1
vault.close()
"""


def enrol_loop(data_dir: Path, first: int, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", ENROL_LOOP, str(data_dir), KEY, str(first), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def assert_whole_subjects(vault: Vault) -> dict[str, str]:
    """Every subject decrypted with the template count its name implies; subject id -> name."""
    subjects = vault.subjects(MODEL)
    for s in subjects:
        i = int(s.name.split()[1])
        assert s.templates.shape == (1 + i % 4, DIM), s.name
    return {s.subject_id: s.name for s in subjects}


def test_four_threads_enrolling_and_forgetting_leave_exactly_the_kept_subjects(tmp_path):
    vault = Vault.open(tmp_path, master_key=KEY)
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
    with Vault.open(tmp_path, master_key=KEY) as reopened:
        assert {s.subject_id for s in reopened.subjects(MODEL)} == expected


def test_process_killed_during_an_enrolment_loop_leaves_only_whole_subjects(tmp_path):
    Vault.open(tmp_path, master_key=KEY).close()
    child = enrol_loop(tmp_path, first=0, count=-1)
    printed = [child.stdout.readline().strip() for _ in range(25)]
    assert all(printed), child.stderr.read()
    child.send_signal(signal.SIGKILL)
    printed += child.stdout.read().split()  # ids committed and printed before the kill landed
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with Vault.open(tmp_path, master_key=KEY) as vault:
        stored = assert_whole_subjects(vault)
        assert set(printed) <= stored.keys()
        assert len(stored) <= len(printed) + 1  # at most the one committed before its id was printed
        assert vault.audit_verify().ok


def test_two_processes_enrolling_into_one_vault_lose_nothing(tmp_path):
    Vault.open(tmp_path, master_key=KEY).close()
    children = [enrol_loop(tmp_path, first=1000 * n, count=20) for n in (1, 2)]
    outputs = [c.communicate(timeout=60) for c in children]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
    printed = {sid for out, _ in outputs for sid in out.split()}
    with Vault.open(tmp_path, master_key=KEY) as vault:
        assert assert_whole_subjects(vault).keys() == printed
        assert len(printed) == 40
        assert vault.audit_verify().ok


def test_changes_by_another_connection_appear_in_an_open_vault(tmp_path):
    app = Vault.open(tmp_path, master_key=KEY)
    cli = Vault.open(tmp_path, master_key=KEY)  # a second connection, as a CLI process would have
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
