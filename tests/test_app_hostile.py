"""The hostile corpus (tests/hostile.py) sent to the running app through gradio_client.

Each upload gets faces or a message that says what is wrong (never a stack trace), and the app
keeps answering afterwards. Every refused input is sent; of the readable ones, a sample of each
kind, since the pipeline tests already run all of them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from gradio_client import handle_file

from tests import hostile
from tests.hostile import MAX_FACES

pytestmark = pytest.mark.e2e

READABLE_SAMPLE = [
    "jpeg_photo", "jpeg_exif_orientation_6", "jpeg_cmyk", "png_16bit_rgb", "gif_animated", "tiny_tight_face_crop_48px",
    "no_face_blank", "crowd_of_42_faces", "photo_at_the_pixel_limit", "strip_1x3000", "thin_rule_400x12",
]
SENT = [n for n in hostile.NAMES if n in READABLE_SAMPLE or n in hostile.REFUSED]
# Gradio refuses an upload over max_file_size itself, before our loader sees it, in its own words.
APP_MESSAGES = {"file_over_the_byte_limit": "(?i)size|large|limit"}


@pytest.fixture(scope="module")
def app(shared_app):
    """The session's app (test_app_api and README's example use it too): this module sends no token
    and erases the one subject it enrols."""
    return shared_app


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name in SENT:
        case = hostile.case(name)
        paths[name] = directory / f"{name}{case.suffix}"
        paths[name].write_bytes(case.data)
    return {name: str(path) for name, path in paths.items()}


def test_every_refused_input_of_the_corpus_is_sent():
    assert set(hostile.REFUSED) <= set(SENT) and len(hostile.REFUSED) >= 30


@pytest.mark.parametrize("name", SENT)
def test_detect_answers_each_upload_with_faces_or_a_clear_message(name, client, uploads):
    case = hostile.case(name)
    if not case.decodes:
        with pytest.raises(Exception) as refused:
            client.predict(handle_file(uploads[name]), api_name="/detect")
        message = str(refused.value)
        assert re.search(APP_MESSAGES.get(name, case.error), message, re.IGNORECASE), message
        assert "Traceback" not in message
        return
    result = client.predict(handle_file(uploads[name]), api_name="/detect")
    assert (result["width"], result["height"]) == case.size
    assert len(result["faces"]) <= MAX_FACES
    if case.faces is not None:
        least, most = case.faces
        assert least <= len(result["faces"]) + result["faces_skipped"] <= most


def test_enrolment_with_hostile_photos_names_each_refusal_and_keeps_the_good_one(client, uploads):
    photos = [uploads["text_file"], uploads["heic_renamed_jpg"], uploads["jpeg_photo"]]
    receipt = client.predict("Eileen Collins", [handle_file(p) for p in photos], True, api_name="/enroll")
    try:
        verdicts = {v["photo"]: v for v in receipt["photos"]}
        assert re.search(hostile.NOT_A_FORMAT, verdicts[1]["reason"]) and not verdicts[1]["accepted"]
        assert re.search(hostile.HEIF, verdicts[2]["reason"]) and not verdicts[2]["accepted"]
        assert verdicts[3]["accepted"]
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")


def test_the_app_still_answers_after_the_corpus(client, uploads):
    result = client.predict(handle_file(uploads["jpeg_photo"]), api_name="/detect")
    assert len(result["faces"]) == 1


def test_the_app_logged_no_traceback_for_the_corpus(app):
    assert "Traceback" not in Path(app.log).read_text()
