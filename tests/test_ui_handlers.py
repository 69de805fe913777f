"""The page's handlers, called as plain functions against a real FaceDemo (models and an encrypted vault); no browser."""
from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from facedemo.app import ui
from facedemo.app.config import Config
from facedemo.app.examples import write as write_examples
from facedemo.app.handlers import Handlers, Shown
from facedemo.app.service import FaceDemo
from facedemo.app.uploads import UploadFolder
from privacy.keys import generate_master_key
from tests.app_server import ADMIN_TOKEN


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def face_demo(workdir, pipeline) -> FaceDemo:
    config = Config(data_dir=workdir / "data", master_key=generate_master_key(), admin_token=ADMIN_TOKEN)
    demo = FaceDemo(config, pipeline=pipeline)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def handlers(face_demo, workdir) -> Handlers:
    h = Handlers(face_demo)
    yield h


@pytest.fixture(scope="module")
def examples(workdir) -> dict[str, Path]:
    return {p.stem: p for p in write_examples(workdir / "examples")}


@pytest.fixture(scope="module")
def photo_files(workdir, astronaut, grace_hopper) -> dict[str, Path]:
    folder = workdir / "photos"
    folder.mkdir()
    files = {}
    for name, pixels in {"astronaut": astronaut, "grace_hopper": grace_hopper,
                         "blank": np.full((300, 300, 3), 90, np.uint8)}.items():
        files[name] = folder / f"{name}.png"
        Image.fromarray(pixels).save(files[name])
    return files


@pytest.fixture
def enrolled(handlers, photo_files):
    """Eileen Collins enrolled from the astronaut photo: (subject id, deletion token); erased afterwards."""
    result = handlers.api_enroll("Eileen Collins", [str(photo_files["astronaut"])], True)
    yield result["subject_id"], result["deletion_token"]
    try:
        handlers.forget(result["subject_id"], ADMIN_TOKEN)
    except gr.Error:
        pass  # the test erased it already


def roughness(pixels: np.ndarray) -> float:
    """Mean step between horizontal neighbours: fine detail, which blurring removes."""
    return float(np.abs(np.diff(pixels.astype(np.float32), axis=1)).mean())


def enrolled_ids(handlers) -> set[str]:
    return {row[0] for row in handlers.list_subjects(ADMIN_TOKEN)}


# --------------------------------------------------------------------- Detect vs Recognize


def refusal(result: tuple) -> str:
    """The page's message for a refused analysis; nothing else is shown and no state is kept."""
    detection, recognition, rows, summary, shown = result
    assert (detection, recognition, rows, shown) == (None, None, [], None)
    assert summary.startswith("⚠️ ")
    return summary


def test_analyse_returns_both_images_a_row_per_face_a_summary_and_the_state(handlers, photo_files, astronaut):
    detection, recognition, rows, summary, shown = handlers.analyse(str(photo_files["astronaut"]), None, False)
    assert detection.shape == recognition.shape == astronaut.shape
    assert not np.array_equal(detection, recognition)  # landmarks and colours differ
    assert len(rows) == 1
    number, identity, distance, margin, reason, confidence, quality, box = rows[0]
    assert (number, identity, reason) == (1, "Unknown", "nobody is enrolled")
    assert quality.startswith("good: ")
    x1, y1, x2, y2 = (int(v) for v in box.split(", "))
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200
    assert float(confidence) > 0.99
    assert "1 face found" in summary and "nobody is enrolled" in summary
    assert isinstance(shown, Shown) and len(shown.analysis.faces) == 1


def test_the_examples_are_astronaut_grace_hopper_and_a_group_of_both(examples):
    assert sorted(examples) == ["astronaut", "grace_hopper", "group"]
    group = np.asarray(Image.open(examples["group"]))
    assert group.shape[1] > 1.5 * group.shape[0]  # two portraits side by side


def test_the_group_example_shows_both_faces_left_to_right(handlers, examples):
    _, _, rows, summary, _ = handlers.analyse(str(examples["group"]), None, False)
    assert [row[0] for row in rows] == [1, 2]
    left_x = [int(row[-1].split(", ")[0]) for row in rows]
    assert left_x == sorted(left_x)
    assert "2 faces found" in summary


def test_an_enrolled_person_is_named_with_distance_and_others_stay_unknown(handlers, face_demo, examples, enrolled):
    _, _, rows, summary, _ = handlers.analyse(str(examples["group"]), None, False)
    assert [row[1] for row in rows] == ["Eileen Collins", "Unknown"]
    assert float(rows[0][2]) < face_demo.threshold < float(rows[1][2])
    assert "1 identified, 1 unknown" in summary


def test_a_new_threshold_re_decides_without_running_any_model(handlers, face_demo, examples, enrolled, monkeypatch):
    *_, shown = handlers.analyse(str(examples["astronaut"]), None, False)

    def no_models(*args, **kwargs):
        raise AssertionError("a model ran")

    monkeypatch.setattr(face_demo, "analyse", no_models)
    monkeypatch.setattr(face_demo.pipeline, "detect", no_models)
    monkeypatch.setattr(face_demo.pipeline, "embed", no_models)
    _, _, strict_rows, _, strict = handlers.redecide(shown, 0.0, False)
    _, _, default_rows, _, _ = handlers.redecide(strict, face_demo.threshold, False)
    assert strict_rows[0][1] == "Unknown"
    assert default_rows[0][1] == "Eileen Collins"
    assert strict.analysis.threshold == 0.0


def test_a_deleted_person_is_not_named_when_an_earlier_result_is_re_decided(handlers, examples, photo_files):
    result = handlers.api_enroll("Eileen Collins", [str(photo_files["astronaut"])], True)
    *_, shown = handlers.analyse(str(examples["group"]), None, False)
    assert [fa.decision.identity for fa in shown.analysis.faces] == ["Eileen Collins", None]
    handlers.forget(result["subject_id"], result["deletion_token"])
    _, _, rows, summary, _ = handlers.redecide(shown, 0.3, True)
    assert [row[1] for row in rows] == ["Unknown", "Unknown"]
    assert "Eileen" not in summary


@pytest.mark.parametrize("threshold", [1.12, 1000.0, float("nan"), "abc", [0.5]])
def test_re_deciding_refuses_a_threshold_that_is_not_a_number_up_to_the_ceiling(handlers, photo_files, threshold):
    *_, shown = handlers.analyse(str(photo_files["astronaut"]), None, False)
    with pytest.raises(gr.Error, match="threshold must be"):
        handlers.redecide(shown, threshold, False)


def test_re_deciding_before_any_photo_gives_empty_results(handlers):
    assert handlers.redecide(None, 0.5, True) == (None, None, [], "", None)


def test_blur_option_blurs_unrecognised_faces_in_both_images(handlers, photo_files):
    plain = handlers.analyse(str(photo_files["astronaut"]), None, False)
    blurred = handlers.analyse(str(photo_files["astronaut"]), None, True)
    forehead = (slice(70, 95), slice(195, 255))  # inside the face box, above the landmarks
    for index in (0, 1):
        assert roughness(blurred[index][forehead]) < 0.25 * roughness(plain[index][forehead])
        assert np.array_equal(blurred[index][400:, :100], plain[index][400:, :100])


def test_a_file_that_is_not_an_image_gets_a_clear_message(handlers, workdir):
    fake = workdir / "notes.jpg"
    fake.write_text("these are not pixels")
    assert "Not an image format we can read" in refusal(handlers.analyse(str(fake), None, False))


def test_a_truncated_image_gets_a_clear_message(handlers, workdir, photo_files):
    data = photo_files["astronaut"].read_bytes()
    cut = workdir / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    assert "damaged or incomplete" in refusal(handlers.analyse(str(cut), None, False))


def test_a_file_over_the_size_limit_gets_a_clear_message(handlers, face_demo, workdir):
    big = workdir / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(face_demo.config.max_image_bytes))
    assert re.search(r"The file is .+; the limit is ", refusal(handlers.analyse(str(big), None, False)))


def test_a_photo_without_faces_says_so_in_the_summary(handlers, photo_files):
    detection, recognition, rows, summary, _ = handlers.analyse(str(photo_files["blank"]), None, False)
    assert rows == []
    assert summary.startswith("**No face found.**")
    assert detection.shape == (300, 300, 3)


def test_analyse_without_a_photo_asks_for_one(handlers):
    assert "add a photo" in refusal(handlers.analyse(None, None, False))


def test_detection_reads_no_biometric_data(handlers, face_demo, photo_files, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("detection touched the gallery or an embedding network")

    monkeypatch.setattr(face_demo, "gallery", forbidden)
    monkeypatch.setattr(face_demo.pipeline, "embed", forbidden)
    result = handlers.api_detect(str(photo_files["astronaut"]))
    assert len(result["faces"]) == 1 and set(result["faces"][0]) == {"face", "box", "score", "landmarks"}


def test_bad_uploads_leave_stored_data_untouched(handlers, workdir, enrolled):
    subject_id, token = enrolled
    before = handlers.describe(subject_id, token)
    fake = workdir / "bad.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert "damaged or incomplete" in refusal(handlers.analyse(str(fake), None, False))
    with pytest.raises(gr.Error):
        handlers.api_recognize(str(fake))
    assert handlers.describe(subject_id, token) == before


# ---------------------------------------------------------------------------------- Enrol


def test_enrol_returns_verdicts_receipt_subject_id_and_token_and_clears_the_form(handlers, photo_files):
    rows, receipt, subject_id, token, name, photos, consent = handlers.enroll(
        "Grace Hopper", [str(photo_files["grace_hopper"])], True
    )
    try:
        assert rows == [[1, "grace_hopper.png", "yes", "accepted"]]
        assert subject_id in receipt and "shown only this once" in receipt
        assert len(token) >= 20
        assert (name, photos, consent) == ("", None, False)
        assert subject_id in enrolled_ids(handlers)
    finally:
        handlers.forget(subject_id, token)


class Click:
    """What gradio hands a select handler: where on the image the person clicked (photo pixels)."""

    def __init__(self, x: float, y: float) -> None:
        self.index = [x, y]


def test_clicking_a_group_photo_keeps_the_point_and_says_which_face_was_chosen(handlers):
    point, line = handlers.pick_face(Click(120, 88))
    assert point == [120.0, 88.0] and line.startswith("Chosen: the face at (120, 88)")


def test_enrolling_the_clicked_face_of_the_group_example_stores_only_it(handlers, examples, face_demo):
    left = face_demo.detect(str(examples["group"])).faces[0].face
    point = [(left.box[0] + left.box[2]) / 2, (left.box[1] + left.box[3]) / 2]
    rows, receipt, subject_id, token, name, photo, consent, chosen, line, note = handlers.enroll_face(
        "Eileen Collins", str(examples["group"]), point, True
    )
    try:
        assert rows == [[1, "group.jpg", "yes", "accepted (face 1 of 2; the other faces were not used)"]]
        assert subject_id in receipt and (name, photo, consent, chosen) == ("", None, False, None)
        assert line.startswith("No face chosen yet") and note.startswith("**Enrolled.**")
        _, _, faces, _, _ = handlers.analyse(str(examples["group"]), None, False)
        assert [row[1] for row in faces] == ["Eileen Collins", "Unknown"]
    finally:
        handlers.forget(subject_id, token)


def test_enrolling_from_a_group_photo_without_a_click_asks_for_one_by_the_button(handlers, examples):
    _, message, subject_id, *_, note = handlers.enroll_face("Eileen Collins", str(examples["group"]), None, True)
    assert message.startswith("**Not enrolled.** Please click your face") and subject_id == ""
    assert note == f"⚠️ {message}"


def test_a_click_that_carries_no_point_chooses_no_face(handlers):
    assert handlers.pick_face(None) == (None, "No face chosen yet: click your face in the photo.")


@pytest.mark.parametrize("face", ["abc", 1.5, None, True, float("inf")])
def test_the_group_enrolment_endpoint_refuses_a_face_that_is_not_a_whole_number(handlers, examples, face):
    with pytest.raises(gr.Error, match="number of your face"):
        handlers.api_enroll_face("Eileen Collins", str(examples["group"]), face, True)


def test_enrol_gives_a_reason_for_each_rejected_photo(handlers, photo_files):
    photos = [str(photo_files["blank"]), str(photo_files["grace_hopper"])]
    rows, _, subject_id, token, *_ = handlers.enroll("Grace Hopper", photos, True)
    handlers.forget(subject_id, token)
    assert [row[:3] for row in rows] == [[1, "blank.png", "no"], [2, "grace_hopper.png", "yes"]]
    assert rows[0][3] == "no face found"


def test_enrol_without_consent_is_refused_and_stores_nothing(handlers, photo_files):
    before = enrolled_ids(handlers)
    _, message, subject_id, token, *_ = handlers.enroll("Grace Hopper", [str(photo_files["grace_hopper"])], False)
    assert message.startswith("**Not enrolled.**") and "consent" in message
    assert (subject_id, token) == ("", "")
    assert enrolled_ids(handlers) == before


def test_enrol_with_no_usable_photo_is_refused_with_the_reasons(handlers, photo_files):
    before = enrolled_ids(handlers)
    rows, message, *_ = handlers.enroll("Nobody", [str(photo_files["blank"])], True)
    assert "photo 1: no face found" in message
    assert rows == [[1, "blank.png", "no", "no face found"]]
    assert enrolled_ids(handlers) == before


def test_a_refused_enrolment_empties_the_photo_list_and_keeps_name_and_consent(handlers, photo_files):
    *_, name, photos, consent = handlers.enroll("Nobody", [str(photo_files["blank"])], True)
    assert photos is None  # never sent again with the next enrolment, under another name
    assert name == gr.update() and consent == gr.update()


def test_enrol_refuses_by_number_a_photo_of_someone_else(handlers, faces_pd, photo_files):
    collins = faces_pd / "eileen_collins"
    photos = [str(collins / "collins_nasa_portrait_a.jpg"), str(collins / "collins_nasa_portrait_b.jpg"),
              str(photo_files["grace_hopper"])]
    rows, receipt, subject_id, token, *_ = handlers.enroll("Eileen Collins", photos, True)
    try:
        assert [row[2] for row in rows] == ["yes", "yes", "no"]
        assert rows[2][3].startswith("not the same person as photo 1")
        assert handlers.describe(subject_id, token)["templates"][handlers.demo.model_id]["count"] == 2
    finally:
        handlers.forget(subject_id, token)


def test_enrol_of_two_photos_of_two_people_stores_nothing(handlers, photo_files):
    before = enrolled_ids(handlers)
    photos = [str(photo_files["astronaut"]), str(photo_files["grace_hopper"])]
    rows, message, subject_id, *_ = handlers.enroll("Eileen Collins", photos, True)
    assert "do not show one person" in message and subject_id == ""
    assert [row[2] for row in rows] == ["no", "no"]
    assert enrolled_ids(handlers) == before


def test_enrol_reports_progress_photo_by_photo(handlers, photo_files):
    calls = []

    def progress(value, desc=None, unit=None):
        calls.append(value)

    photos = [str(photo_files["grace_hopper"]), str(photo_files["grace_hopper"])]
    _, _, subject_id, token, *_ = handlers.enroll("Two Photos", photos, True, progress=progress)
    handlers.forget(subject_id, token)
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)


@pytest.fixture
def upload_folder(workdir):
    folder = UploadFolder.create(workdir / "gradio")
    yield folder
    folder.close()


def uploaded(folder: UploadFolder, source: Path) -> str:
    """A copy of `source` where gradio would have stored an upload of it."""
    target = folder.path / f"up-{source.stem}" / source.name
    target.parent.mkdir()
    target.write_bytes(source.read_bytes())
    return str(target)


@pytest.mark.parametrize("consent", [True, False])
def test_enrolment_deletes_its_uploads_when_the_request_ends_enrolled_or_refused(
    face_demo, upload_folder, photo_files, consent
):
    handlers = Handlers(face_demo, upload_folder)
    photos = [uploaded(upload_folder, photo_files["grace_hopper"]), str(photo_files["grace_hopper"])]
    _, _, subject_id, token, *_ = handlers.enroll("Grace Hopper", photos, consent)
    if consent:
        handlers.forget(subject_id, token)
    assert not Path(photos[0]).exists()
    assert photo_files["grace_hopper"].exists()  # never a file outside the upload folder


def test_analysis_deletes_its_upload_and_a_second_use_asks_for_it_again(face_demo, upload_folder, photo_files):
    handlers = Handlers(face_demo, upload_folder)
    photo = uploaded(upload_folder, photo_files["astronaut"])
    handlers.analyse(photo, None, False)
    assert not Path(photo).exists()
    with pytest.raises(gr.Error, match="no longer on the server"):
        handlers.api_recognize(photo, None)


# -------------------------------------------------------------------------------- My data


def test_describe_shows_counts_dates_key_id_and_sizes_without_the_name(handlers, enrolled):
    subject_id, token = enrolled
    stored = handlers.describe(subject_id, token)
    assert stored["subject_id"] == subject_id
    assert stored["key_id"] and stored["created"] and stored["expires"]
    assert all(t["count"] == 1 and t["ciphertext_bytes"] > 0 for t in stored["templates"].values())
    assert "Eileen" not in json.dumps(stored)


def test_describe_with_a_wrong_token_is_refused(handlers, enrolled):
    subject_id, _ = enrolled
    with pytest.raises(gr.Error, match="wrong token"):
        handlers.describe(subject_id, "not-the-token")


def test_an_empty_subject_id_or_token_is_asked_for(handlers):
    with pytest.raises(gr.Error, match="subject id"):
        handlers.describe("  ", "token")
    with pytest.raises(gr.Error, match="deletion token"):
        handlers.forget("someone", "")


def test_ids_and_tokens_pasted_with_spaces_are_accepted(handlers, enrolled):
    subject_id, token = enrolled
    assert handlers.describe(f" {subject_id}\n", f"{token} ")["subject_id"] == subject_id


def test_export_for_the_page_is_the_subjects_json_and_writes_no_file(handlers, enrolled, workdir):
    subject_id, token = enrolled
    before = {p for p in workdir.rglob("*")}
    data, note = handlers.export_download(subject_id, token)
    assert data["subject_id"] == subject_id and data["name"] == "Eileen Collins"
    assert set(data) == {"subject_id", "name", "created", "expires", "consent", "templates"}  # no photos
    assert "kept no copy" in note
    assert {p for p in workdir.rglob("*")} - before == set()


def test_only_the_subjects_own_token_exports_or_describes(handlers, enrolled):
    subject_id, _ = enrolled
    for call in (handlers.export, handlers.describe):
        with pytest.raises(gr.Error, match="wrong token"):
            call(subject_id, ADMIN_TOKEN)
    for page_call in (handlers.describe_mine, handlers.export_download):
        data, note = page_call(subject_id, ADMIN_TOKEN)
        assert data is None and "wrong token" in note


def test_a_refused_deletion_in_the_page_says_why_where_the_receipt_would_be(handlers, enrolled):
    subject_id, token = enrolled
    text, receipt, *_ = handlers.forget_mine(subject_id, "not-the-token")
    assert receipt is None and "wrong token" in text
    assert handlers.describe(subject_id, token)["subject_id"] == subject_id  # still there


def test_deleting_from_the_page_clears_what_it_showed_and_explains_the_receipt(handlers, photo_files):
    result = handlers.api_enroll("Grace Hopper", [str(photo_files["grace_hopper"])], True)
    text, receipt, stored, export, note, token, confirm = handlers.forget_mine(
        result["subject_id"], result["deletion_token"]
    )
    assert text.startswith("**Your data was deleted**")
    assert "none of them matches you any more" in text
    assert receipt["master_key_id"] in text  # what deletion does not reach yet, named
    assert (stored, export, note, token) == (None, None, "", "")
    assert confirm == gr.update(visible=False)


def test_the_receipt_text_explains_a_match_with_another_enrolled_person():
    receipt = {
        "erased_at": "2026-11-29T20:00:00.000000+00:00", "templates_deleted": 2,
        "probe": {"templates_probed": 2, "matched_subject": False, "matched_other": 1},
        "copies_before_erasure": "Copies made before this erasure still hold the wrapped key.",
    }
    text = Handlers.erasure_text(receipt)
    assert "none of them matches you any more" in text
    assert "1 of 2 came closer than the threshold to another enrolled person" in text


def test_forget_returns_the_receipt_and_the_person_is_unknown_afterwards(handlers, photo_files, enrolled):
    subject_id, token = enrolled
    receipt = handlers.forget(subject_id, token)
    assert receipt["subject_id"] == subject_id
    assert receipt["live_key_deleted"] is True and receipt["live_rows_deleted"] is True
    assert receipt["probe"]["matched_subject"] is False
    _, _, rows, _, _ = handlers.analyse(str(photo_files["astronaut"]), None, False)
    assert rows[0][1] == "Unknown"
    with pytest.raises(gr.Error, match="Unknown subject id"):
        handlers.describe(subject_id, token)


def test_operator_lists_everyone_and_deletes_anyone(handlers, enrolled):
    subject_id, _ = enrolled
    listing = handlers.list_subjects(ADMIN_TOKEN)
    assert [subject_id, "Eileen Collins"] in [row[:2] for row in listing]
    receipt = handlers.forget(subject_id, ADMIN_TOKEN)
    assert receipt["authorised_by"] == "operator"
    assert subject_id not in enrolled_ids(handlers)


def test_listing_without_the_admin_token_is_refused(handlers):
    with pytest.raises(gr.Error, match="admin token"):
        handlers.list_subjects("guess-guess-guess-guess")


# --------------------------------------------------------------------------- How it works


def test_audit_status_says_the_log_verifies(handlers):
    assert handlers.audit_status().startswith("**Audit log verifies: yes.**")


def test_the_page_builds_with_every_tab(handlers, examples):
    page = ui.build(handlers, list(examples.values()))
    tabs = [block.label for block in page.blocks.values() if isinstance(block, gr.Tab)]
    assert tabs == ["Photo", "Album", "Enrol", "My data", "How it works"]


def markdown_texts(page: gr.Blocks) -> list[str]:
    return [block.value or "" for block in page.blocks.values() if isinstance(block, gr.Markdown)]


def test_development_mode_is_announced_on_the_page(face_demo, tmp_path):
    dev_demo = FaceDemo(Config(data_dir=tmp_path / "dev"), pipeline=face_demo.pipeline)  # no master key
    dev_handlers = Handlers(dev_demo)
    try:
        assert dev_demo.dev_mode
        assert any("Development mode" in text for text in markdown_texts(ui.build(dev_handlers)))
    finally:
        dev_demo.close()


def test_a_page_with_a_master_key_does_not_claim_development_mode(handlers):
    assert not any("Development mode" in text for text in markdown_texts(ui.build(handlers)))


# ------------------------------------------------------------------------------------ API


def test_api_results_are_json_ready(handlers, photo_files, enrolled):
    subject_id, token = enrolled
    for result in (
        handlers.api_detect(str(photo_files["astronaut"])),
        handlers.api_recognize(str(photo_files["astronaut"]), None),
        handlers.export(subject_id, token),
    ):
        assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_api_recognize_labels_each_face_with_a_name_or_unknown(handlers, examples, enrolled):
    faces = handlers.api_recognize(str(examples["group"]), None)["faces"]
    assert [(f["face"], f["label"], f["identity"]) for f in faces] == [
        (1, "Eileen Collins", "Eileen Collins"), (2, "Unknown", None)
    ]


def test_a_face_cut_by_the_photos_edge_has_its_box_clipped_and_marked(handlers, photo_files, workdir):
    photo = np.asarray(Image.open(photo_files["astronaut"]))
    cut = workdir / "cut_face.png"
    Image.fromarray(np.ascontiguousarray(photo[:, 210:])).save(cut)  # through the middle of the face
    _, _, rows, _, _ = handlers.analyse(str(cut), None, False)
    box = rows[0][-1]
    assert box.endswith(" (cut by the edge)")
    assert int(box.split(", ")[0]) == 0


def test_a_session_keeps_a_display_sized_compressed_copy_of_a_large_photo(handlers, workdir, astronaut):
    large = workdir / "large.png"
    Image.fromarray(astronaut).resize((3000, 3000)).save(large)
    *_, shown = handlers.analyse(str(large), None, False)
    assert max(shown.image.shape[:2]) == 1280
    assert len(shown.photo) < 0.1 * 1280 * 1280 * 3  # a tenth of the raw display-sized pixels, at most
    assert (shown.analysis.width, shown.analysis.height) == (3000, 3000)
