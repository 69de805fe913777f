"""The named API of `python app.py`, used through gradio_client as a program would use the running app."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from facedemo.app.examples import write as write_examples

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def app(shared_app):
    """The session's app (test_app_hostile and README's example use it too): this module erases every
    subject it enrols and sends one wrong token, within the 5 a client may send before it is slowed
    down (test_app_privacy sends more, so it has an app of its own)."""
    return shared_app


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, str]:
    return {p.stem: str(p) for p in write_examples(tmp_path_factory.mktemp("examples"))}


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("blank") / "blank.png"
    Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(path)
    return str(path)


def detect(client: Client, photo: str) -> dict:
    return client.predict(handle_file(photo), api_name="/detect")


def recognize(client: Client, photo: str, threshold: float | None = None) -> dict:
    return client.predict(handle_file(photo), threshold, api_name="/recognize")


def test_the_named_endpoints_are_the_documented_ones(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/album", "/anonymize", "/detect", "/enroll", "/enroll_face", "/export", "/forget",
                                 "/recognize"]


@pytest.mark.parametrize("example", ["astronaut", "grace_hopper"])
def test_detect_finds_the_one_face_of_each_portrait(client, examples, example):
    result = detect(client, examples[example])
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    assert face["score"] > 0.99
    assert len(face["landmarks"]) == 5
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= result["width"] and 0 <= y1 < y2 <= result["height"]


def test_detect_finds_both_faces_of_the_group_photo_left_to_right(client, examples):
    faces = detect(client, examples["group"])["faces"]
    assert [f["face"] for f in faces] == [1, 2]
    assert faces[0]["box"][2] < faces[1]["box"][0]


def test_detect_returns_an_empty_list_for_a_photo_without_faces(client, blank):
    assert detect(client, blank)["faces"] == []


def test_recognize_says_unknown_when_nobody_is_enrolled(client, examples):
    faces = recognize(client, examples["group"])["faces"]
    assert [(f["label"], f["identity"], f["distance"]) for f in faces] == [("Unknown", None, None)] * 2


def test_enroll_then_recognize_then_forget_then_recognize_again_says_unknown(client, examples):
    receipt = client.predict("Eileen Collins", [handle_file(examples["astronaut"])], True, api_name="/enroll")
    assert receipt["photos"] == [{"photo": 1, "accepted": True, "reason": "accepted"}]

    result = recognize(client, examples["group"])
    faces = result["faces"]
    assert [f["label"] for f in faces] == ["Eileen Collins", "Unknown"]
    assert "subject_id" not in faces[0]  # the key to her data is no recognition result
    assert faces[0]["distance"] < result["threshold"] < faces[1]["distance"]

    erasure = client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")
    assert erasure["subject_id"] == receipt["subject_id"] and erasure["live_key_deleted"] is True
    assert erasure["probe"]["matched_subject"] is False

    faces = recognize(client, examples["group"])["faces"]
    assert [f["label"] for f in faces] == ["Unknown", "Unknown"]


def test_recognize_takes_a_threshold_in_the_models_unit(client, examples):
    receipt = client.predict("Grace Hopper", [handle_file(examples["grace_hopper"])], True, api_name="/enroll")
    try:
        loose = recognize(client, examples["grace_hopper"])
        strict = recognize(client, examples["grace_hopper"], threshold=0.0)
        assert loose["faces"][0]["label"] == "Grace Hopper"
        assert strict["threshold"] == 0.0 and strict["faces"][0]["label"] == "Unknown"
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_export_returns_the_subjects_own_data_and_no_photos(client, examples):
    receipt = client.predict("Grace Hopper", [handle_file(examples["grace_hopper"])], True, api_name="/enroll")
    try:
        data = client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/export")
        assert data["name"] == "Grace Hopper" and data["subject_id"] == receipt["subject_id"]
        assert set(data) == {"subject_id", "name", "created", "expires", "consent", "templates"}
        assert all(len(vectors) == 1 and len(vectors[0]) == 128 for vectors in data["templates"].values())
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_enroll_without_consent_is_refused_with_a_clear_message(client, examples):
    with pytest.raises(AppError, match="consent"):
        client.predict("Grace Hopper", [handle_file(examples["grace_hopper"])], False, api_name="/enroll")


def test_forget_with_a_wrong_token_is_refused_and_deletes_nothing(client, examples):
    receipt = client.predict("Grace Hopper", [handle_file(examples["grace_hopper"])], True, api_name="/enroll")
    try:
        with pytest.raises(AppError, match="wrong token; nothing was changed"):
            client.predict(receipt["subject_id"], "not-the-token", api_name="/forget")
        assert recognize(client, examples["grace_hopper"])["faces"][0]["label"] == "Grace Hopper"
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"these are not pixels", "Not an image format we can read"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "damaged or incomplete"),
    ],
    ids=["not an image", "truncated"],
)
def test_a_bad_upload_gets_a_clear_message_and_stored_data_is_untouched(client, examples, tmp_path, content, message):
    receipt = client.predict("Grace Hopper", [handle_file(examples["grace_hopper"])], True, api_name="/enroll")
    try:
        bad = tmp_path / "photo.png"
        bad.write_bytes(content)
        for endpoint in ("/detect", "/recognize"):
            with pytest.raises(AppError, match=message) as caught:
                client.predict(handle_file(str(bad)), api_name=endpoint)
            assert "Traceback" not in str(caught.value)
        data = client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/export")
        assert data["name"] == "Grace Hopper"
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_an_upload_over_the_size_limit_is_refused(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024))
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        client.predict(handle_file(str(big)), api_name="/detect")


def test_the_app_logged_no_traceback(app):
    assert "Traceback" not in Path(app.log).read_text()


def test_enroll_face_enrols_only_the_numbered_face_of_a_group_photo(client, examples):
    receipt = client.predict("Grace Hopper", handle_file(examples["group"]), 2, True, api_name="/enroll_face")
    try:
        assert receipt["photos"] == [{"photo": 1, "accepted": True,
                                      "reason": "accepted (face 2 of 2; the other faces were not used)"}]
        assert [f["label"] for f in recognize(client, examples["group"])["faces"]] == ["Unknown", "Grace Hopper"]
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_anonymize_returns_a_zip_where_only_the_enrolled_person_stays_sharp(client, examples):
    import io
    import json
    import urllib.request
    import zipfile

    receipt = client.predict("Eileen Collins", [handle_file(examples["astronaut"])], True, api_name="/enroll")
    try:
        zipped = client.predict([handle_file(examples["group"]), handle_file(examples["grace_hopper"])],
                                api_name="/anonymize")
        # The module's client leaves files on the server (download_files=False): fetched as a program would.
        with urllib.request.urlopen(zipped["url"], timeout=30) as response:
            data = response.read()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = sorted(archive.namelist())
            manifest = json.loads(archive.read("manifest.json"))
        assert names == ["grace_hopper.jpg", "group.jpg", "manifest.json"]
        assert (manifest["faces"], manifest["kept_enrolled"], manifest["hidden"]) == (3, 1, 2)
        assert "Eileen" not in json.dumps(manifest)  # the zip may be passed on: no names of people
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_album_lists_faces_and_unknown_people_without_subject_ids_or_embeddings(client, examples):
    album = client.predict([handle_file(examples["group"]), handle_file(examples["astronaut"])], api_name="/album")
    assert [p["file"] for p in album["photos"]] == ["group.jpg", "astronaut.jpg"]
    assert [len(p["faces"]) for p in album["photos"]] == [2, 1]
    eileen = {album["photos"][0]["faces"][0]["cluster"], album["photos"][1]["faces"][0]["cluster"]}
    assert len(eileen) == 1 and None not in eileen  # her two faces are one unknown person
    text = str(album)
    assert "subject_id" not in text and "embedding" not in text


def test_album_without_photos_is_refused_with_a_clear_message(client):
    with pytest.raises(AppError, match="Add photos, or one zip file of photos, first"):
        client.predict([], api_name="/album")


def test_anonymize_keeps_the_unknown_person_the_uploader_names(client, examples):
    import io
    import json
    import urllib.request
    import zipfile

    photos = [handle_file(examples["group"]), handle_file(examples["astronaut"])]
    album = client.predict(photos, api_name="/album")
    eileen = album["photos"][1]["faces"][0]["cluster"]
    zipped = client.predict(photos, eileen, api_name="/anonymize")
    with urllib.request.urlopen(zipped["url"], timeout=30) as response:
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(response.read())).read("manifest.json"))
    assert (manifest["kept_marked"], manifest["hidden"], manifest["marked_cluster"]) == (2, 1, eileen)


def test_anonymize_refuses_an_unknown_person_the_album_does_not_have(client, examples):
    with pytest.raises(AppError, match="no unknown person 9"):
        client.predict([handle_file(examples["astronaut"])], 9, api_name="/anonymize")
