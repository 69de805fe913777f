"""The running app attacked as an anonymous visitor would: gradio_client on the named API, raw HTTP on
every event (the page's private ones too). What it must never give away: who is enrolled, a subject id,
someone's data without their token, a copy of an export."""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from facedemo.app.config import Config
from models.registry import MODELS
from tests import raw_client
from tests.app_server import ADMIN_TOKEN

pytestmark = pytest.mark.e2e
# conftest's `app`, one per module: the wrong tokens sent here on purpose (8, all from 127.0.0.1) lock
# the client out for seconds after the fifth, which would refuse the right tokens of another module
# sharing the app; here `patiently` waits such a lock out.

CEILING = MODELS[Config.model].max_threshold


def portraits(faces_pd: Path) -> dict[str, Path]:
    """One studio portrait per person of the public-domain set (sorted: collins_nasa_portrait_a first)."""
    found = {}
    for folder in sorted(p for p in faces_pd.iterdir() if p.is_dir() and not p.name.startswith("_")):
        found[folder.name] = sorted(folder.glob("*portrait*"))[0]
    return found


@pytest.fixture(scope="module")
def eileen(client, faces_pd):
    """Eileen Collins enrolled from her first portrait: the receipt; erased at the end."""
    photo = faces_pd / "eileen_collins" / "collins_nasa_portrait_a.jpg"
    receipt = client.predict("Eileen Collins", [handle_file(str(photo))], True, api_name="/enroll")
    yield receipt
    try:
        forget(client, receipt)
    except AppError:
        pass  # a test erased her already


def patiently(call):
    """`call()`, which presents a right token. When the wrong tokens this module sends on purpose have
    locked the client out (5 are free, then 2 s, 4 s, ...), wait as long as the app says and call again."""
    try:
        return call()
    except (AppError, raw_client.EventFailed) as refused:
        locked = re.search(r"(?i)too many wrong tokens .* try again in (\d+) s", str(refused))
        if locked is None:
            raise
    time.sleep(int(locked.group(1)))
    return call()


def forget(client, receipt: dict) -> dict:
    return patiently(lambda: client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget"))


def recognize(client, photo: Path, threshold=None) -> dict:
    return client.predict(handle_file(str(photo)), threshold, api_name="/recognize")


@pytest.mark.parametrize("threshold", [CEILING + 0.01, 1.12, 1000.0, 1e6])
def test_recognize_refuses_a_threshold_above_the_models_ceiling(client, eileen, faces_pd, threshold):
    with pytest.raises(AppError, match=f"between 0 and {CEILING:.2f}"):
        recognize(client, faces_pd / "peggy_whitson" / "peggy_whitson_portrait.jpg", threshold)


@pytest.mark.parametrize("threshold", ["abc", math.nan, math.inf, -math.inf, [0.5], {"t": 0.5}, True])
def test_recognize_refuses_a_threshold_that_is_not_a_finite_number_with_a_message(app, faces_pd, threshold):
    photo = raw_client.upload(app.url, faces_pd / "peggy_whitson" / "peggy_whitson_portrait.jpg")
    with pytest.raises(raw_client.EventFailed, match="threshold must be"):
        raw_client.call(app.url, "recognize", [photo, threshold])


@pytest.mark.parametrize("threshold", [1000.0, "abc", math.nan])
def test_the_pages_private_analyse_event_refuses_the_same_thresholds(app, faces_pd, threshold):
    photo = raw_client.upload(app.url, faces_pd / "peggy_whitson" / "peggy_whitson_portrait.jpg")
    detection, recognition, rows, summary, _ = raw_client.call(app.url, "analyse", [photo, threshold, False, "mtcnn"])
    assert "threshold must be" in summary
    assert detection is None and recognition is None and not rows["data"]


def test_no_stranger_is_named_at_the_ceiling(client, eileen, faces_pd):
    strangers = {name: path for name, path in portraits(faces_pd).items() if name != "eileen_collins"}
    assert len(strangers) == 7
    for name, photo in strangers.items():
        faces = recognize(client, photo, CEILING)["faces"]
        assert [f["identity"] for f in faces] == [None] * len(faces), name


def test_the_enrolled_person_is_named_at_the_default_threshold(client, eileen, faces_pd):
    faces = recognize(client, faces_pd / "eileen_collins" / "collins_nasa_portrait_b.jpg")["faces"]
    assert [f["identity"] for f in faces] == ["Eileen Collins"]


def test_recognition_output_never_carries_a_subject_id(client, eileen, faces_pd):
    result = recognize(client, faces_pd / "eileen_collins" / "collins_nasa_portrait_b.jpg")
    assert result["faces"][0]["identity"] == "Eileen Collins"
    assert "subject_id" not in result["faces"][0]
    assert eileen["subject_id"] not in json.dumps(result)


def test_the_admin_token_cannot_export_someone_elses_data(client, eileen):
    with pytest.raises(AppError, match="wrong token"):
        client.predict(eileen["subject_id"], ADMIN_TOKEN, api_name="/export")


def test_the_admin_token_cannot_describe_someone_elses_data(app, eileen):
    stored, note = raw_client.call(app.url, "describe_mine", [eileen["subject_id"], ADMIN_TOKEN])
    assert stored is None and "wrong token" in note


@pytest.mark.parametrize("subject_id", ["\ud800", "a\x00b", "x" * 10_000])
def test_a_malformed_subject_id_is_refused_like_a_wrong_one(app, subject_id):
    with pytest.raises(raw_client.EventFailed, match="(?i)unknown subject id or wrong token"):
        raw_client.call(app.url, "forget", [subject_id, "\udfff"])


def test_an_export_from_the_page_leaves_no_file_in_the_apps_folders(app, client, faces_pd):
    photo = faces_pd / "peggy_whitson" / "peggy_whitson_portrait.jpg"
    receipt = client.predict("Peggy Whitson", [handle_file(str(photo))], True, api_name="/enroll")
    try:
        data, note = patiently(
            lambda: raw_client.call(app.url, "export_download", [receipt["subject_id"], receipt["deletion_token"]]))
        assert data["name"] == "Peggy Whitson" and "kept no copy" in note
    finally:
        forget(client, receipt)
    workdir = app.data_dir.parent
    holding = [
        path for path in workdir.rglob("*")
        if path.is_file() and path != app.log and b"Peggy Whitson" in path.read_bytes()
    ]
    assert holding == []


def test_after_forget_nothing_of_that_person_can_be_fetched(app, client, faces_pd):
    photo = faces_pd / "kenneth_ham" / "kenneth_ham_portrait.jpg"
    receipt = client.predict("Kenneth Ham", [handle_file(str(photo))], True, api_name="/enroll")
    forget(client, receipt)
    with pytest.raises(raw_client.EventFailed, match="wrong token"):
        raw_client.call(app.url, "export", [receipt["subject_id"], receipt["deletion_token"]])
    for event in ("describe_mine", "export_download"):  # the page's events answer with a message in the tab
        data, note = raw_client.call(app.url, event, [receipt["subject_id"], receipt["deletion_token"]])
        assert data is None and "wrong token" in note
    faces = recognize(client, faces_pd / "kenneth_ham" / "kenneth_ham_onboard.jpg", CEILING)["faces"]
    assert all(f["identity"] is None for f in faces)


def fetch_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_after_forget_no_rendered_picture_with_the_name_is_served(app, client, faces_pd):
    photo = faces_pd / "stephen_frick" / "stephen_frick_portrait.jpg"
    receipt = client.predict("Stephen Frick", [handle_file(str(photo))], True, api_name="/enroll")
    upload = raw_client.upload(app.url, faces_pd / "stephen_frick" / "stephen_frick_onboard.jpg")
    _, recognition, rows, *_ = raw_client.call(app.url, "analyse", [upload, None, False, "mtcnn"])
    assert "Stephen Frick" in [row[1] for row in rows["data"]]
    assert fetch_status(recognition["url"]) == 200
    forget(client, receipt)
    assert fetch_status(recognition["url"]) != 200
