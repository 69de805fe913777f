"""Guessing tokens against the running app: wrong deletion and admin tokens are slowed down, and the
right token waits out the lock like any other (privacy.throttle: 5 free failures, then 2 s, 4 s, ...).

Its own app (module scope): the limit counts per client, and every test here is the same client.
"""
from __future__ import annotations

import re
import time

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests import raw_client
from tests.app_server import ADMIN_TOKEN

pytestmark = pytest.mark.e2e

FREE_FAILURES = 5


def retry_after(message: str) -> int:
    return int(re.search(r"try again in (\d+) s", message).group(1))


def test_wrong_deletion_tokens_lock_the_subject_and_the_right_token_waits_too(client, examples_photo):
    receipt = client.predict("Grace Hopper", [handle_file(examples_photo)], True, api_name="/enroll")
    subject_id, token = receipt["subject_id"], receipt["deletion_token"]
    for _ in range(FREE_FAILURES + 1):
        with pytest.raises(AppError, match="wrong token"):
            client.predict(subject_id, "wrong-" + token[6:], api_name="/export")
    with pytest.raises(AppError, match="Too many wrong tokens") as locked:
        client.predict(subject_id, token, api_name="/export")
    first = retry_after(str(locked.value))
    time.sleep(first + 0.5)
    assert client.predict(subject_id, token, api_name="/export")["name"] == "Grace Hopper"
    with pytest.raises(AppError, match="wrong token"):
        client.predict(subject_id, "wrong-" + token[6:], api_name="/export")
    with pytest.raises(AppError, match="Too many wrong tokens") as again:
        client.predict(subject_id, token, api_name="/forget")
    assert retry_after(str(again.value)) > first  # the delay grows
    time.sleep(retry_after(str(again.value)) + 0.5)
    assert client.predict(subject_id, token, api_name="/forget")["live_key_deleted"] is True


def test_wrong_admin_tokens_on_the_pages_operator_listing_are_slowed_down(app):
    messages = []
    for attempt in range(FREE_FAILURES + 3):
        with pytest.raises(raw_client.EventFailed) as refused:
            raw_client.call(app.url, "list_subjects", [f"guess-{attempt}-" + ADMIN_TOKEN[8:]])
        messages.append(str(refused.value))
    assert any("Too many wrong tokens" in m for m in messages)
    with pytest.raises(raw_client.EventFailed, match="Too many wrong tokens"):
        raw_client.call(app.url, "list_subjects", [ADMIN_TOKEN])


@pytest.fixture(scope="module")
def examples_photo(tmp_path_factory) -> str:
    from facedemo.app import examples

    return str(next(p for p in examples.write(tmp_path_factory.mktemp("examples")) if p.stem == "grace_hopper"))


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "password12345678"])
def test_the_app_refuses_to_start_with_a_weak_admin_token_and_says_how_to_make_one(tmp_path, weak):
    from facedemo.tools.launch import running_app
    from privacy.keys import generate_master_key

    with pytest.raises(RuntimeError) as refused:
        with running_app(tmp_path, generate_master_key(), weak, timeout_s=120):
            pass
    log = str(refused.value)
    assert "exited with code 1" in log and "the admin token is too weak" in log and "128 are needed" in log
    assert "secrets.token_urlsafe" in log
    assert "Traceback" not in log
