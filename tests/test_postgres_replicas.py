"""Two replicas of the app (`python app.py` twice, on two ports) sharing one vault on PostgreSQL: what one does,
the other sees within a second; a replica killed mid-enrolment leaves no partial subject.

Both replicas get the same FACEDEMO_MASTER_KEY and FACEDEMO_DATABASE_URL, each its own data and upload
folders, as two containers would. Skips when PostgreSQL is not installed.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from gradio_client import Client, handle_file

from facedemo.tools.launch import running_app
from privacy.keys import generate_master_key
from privacy.vault import Vault
from tests import postgres_server
from tests.app_server import ADMIN_TOKEN

pytestmark = pytest.mark.e2e
SYNC_LIMIT_S = 1.0  # the promise: a change on one replica shows on the other within a second


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """(replica A, replica B, database URL, master key), started one after the other."""
    server = postgres_server.server()
    url = server.new_database()
    key = generate_master_key()
    env = {"FACEDEMO_DATABASE_URL": url}
    with running_app(tmp_path_factory.mktemp("replica-a"), key, ADMIN_TOKEN, env_extra=env) as a:
        with running_app(tmp_path_factory.mktemp("replica-b"), key, ADMIN_TOKEN, env_extra=env) as b:
            yield a, b, url, key
    server.drop_database(url)


@pytest.fixture(scope="module")
def clients(replicas):
    a, b = (Client(r.url, verbose=False, download_files=False) for r in replicas[:2])
    yield a, b
    a.close()
    b.close()


def identities(client: Client, photo) -> list[str | None]:
    return [f["identity"] for f in client.predict(handle_file(str(photo)), None, api_name="/recognize")["faces"]]


def test_enrolled_on_one_replica_named_on_the_other_and_forgotten_there_unknown_on_the_first(clients, faces_pd):
    a, b = clients
    folder = faces_pd / "eileen_collins"
    assert identities(b, folder / "collins_nasa_portrait_b.jpg") == [None]  # B has its gallery stacked already
    receipt = a.predict("Eileen Collins", [handle_file(str(folder / "collins_nasa_portrait_a.jpg"))], True,
                        api_name="/enroll")
    enrolled = time.perf_counter()
    assert identities(b, folder / "collins_nasa_portrait_b.jpg") == ["Eileen Collins"]
    named_after_s = time.perf_counter() - enrolled
    b.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")
    forgotten = time.perf_counter()
    assert identities(a, folder / "collins_nasa_portrait_b.jpg") == [None]
    unknown_after_s = time.perf_counter() - forgotten
    # The first request after the change already sees it; these bound the whole round trip.
    assert named_after_s < SYNC_LIMIT_S and unknown_after_s < SYNC_LIMIT_S, (named_after_s, unknown_after_s)


def test_app_refuses_to_start_when_the_database_is_down_and_says_where(tmp_path):
    down = f"postgresql://facedemo@/vault?host={tmp_path}"  # no server listens on this socket folder
    with pytest.raises(RuntimeError) as error:
        with running_app(tmp_path, generate_master_key(), ADMIN_TOKEN, env_extra={"FACEDEMO_DATABASE_URL": down}):
            pass
    log = str(error.value)
    assert "exited with code 1" in log and "facedemo cannot start: cannot connect to the vault's PostgreSQL" in log
    assert f"database vault on {tmp_path}" in log and "No such file or directory" in log and "Traceback" not in log


def test_replica_killed_mid_enrolment_leaves_only_whole_subjects(replicas, clients, faces_pd):
    """Runs last: it kills replica A."""
    a_app, _, url, key = replicas
    a, b = clients
    photo = faces_pd / "peggy_whitson" / "peggy_whitson_portrait.jpg"
    first_done = threading.Event()
    stop = threading.Event()

    def enrol_until_killed() -> None:
        client = Client(a_app.url, verbose=False, download_files=False)
        try:
            while not stop.is_set():
                client.predict("Peggy Whitson", [handle_file(str(photo))], True, api_name="/enroll")
                first_done.set()
        except Exception:
            pass  # the replica died under it
        finally:
            first_done.set()

    workers = [threading.Thread(target=enrol_until_killed, daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    assert first_done.wait(120)
    time.sleep(0.3)  # more enrolments in flight
    os.kill(a_app.pid, signal.SIGKILL)
    stop.set()
    for w in workers:
        w.join(30)
    # Opening decrypts every subject and checks each one's rows against its sealed record: a partial
    # subject would be refused as tampering.
    with Vault.open(a_app.data_dir, master_key=key, admin_token=ADMIN_TOKEN, database_url=url) as vault:
        names = [row["name"] for row in vault.list_subjects(ADMIN_TOKEN)]
        assert names and set(names) == {"Peggy Whitson"}
        assert vault.audit_verify(full=True).ok
    assert identities(b, photo) == ["Peggy Whitson"]  # the other replica carries on
