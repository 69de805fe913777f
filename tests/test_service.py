"""Enrolment, recognition and erasure through the service, with the real models and a real vault."""
from datetime import UTC

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facedemo.app.config import Config
from facedemo.app.service import MIN_ENROL_FACE_PX, MIN_ENROL_SCORE, EnrolmentError, FaceDemo, sharpness
from privacy import VaultError
from privacy.keys import generate_master_key
from tests.engine import augment, compose


@pytest.fixture()
def demo(tmp_path, pipeline):
    service = FaceDemo(Config(data_dir=tmp_path, master_key=generate_master_key()), pipeline=pipeline)
    yield service
    service.close()


def test_enrolment_without_consent_is_refused_and_stores_nothing(demo, astronaut):
    with pytest.raises(EnrolmentError, match="consent"):
        demo.enroll("Eileen Collins", [astronaut], consent=False)
    assert len(demo.gallery()) == 0


def test_enrolled_person_is_recognised_in_another_photo(demo, astronaut):
    outcome = demo.enroll("Eileen Collins", [astronaut], consent=True)
    assert outcome.receipt.subject_id and outcome.receipt.deletion_token
    face = demo.analyse(augment(astronaut)).faces[0]
    assert face.decision.identity == "Eileen Collins"


def test_templates_are_stored_for_every_installed_model(demo, astronaut):
    outcome = demo.enroll("Eileen Collins", [astronaut], consent=True)
    assert set(outcome.receipt.templates_stored) == set(demo.installed_models())


def test_each_photo_gets_a_reason_and_only_usable_ones_are_kept(demo, grace_hopper):
    blank = np.full((200, 200, 3), 255, np.uint8)
    two_alike = compose(grace_hopper, grace_hopper[:, ::-1])  # two faces of one size: whose photo is it?
    outcome = demo.enroll("Grace Hopper", [grace_hopper, blank, two_alike, b"junk"], consent=True)
    reasons = [v.reason for v in outcome.verdicts]
    assert [v.accepted for v in outcome.verdicts] == [True, False, False, False]
    assert reasons[:2] == ["accepted", "no face found"]
    assert reasons[2].startswith("2 faces of similar size found; use a photo of you alone, or pick your face")
    assert reasons[3].startswith("not an image")
    assert outcome.receipt.templates_stored[demo.model_id] == 1


def refusal(demo, photo) -> str:
    """The reason enrolling from `photo` alone is refused."""
    with pytest.raises(EnrolmentError) as refused:
        demo.enroll("Grace Hopper", [photo], consent=True)
    [verdict] = refused.value.verdicts
    assert not verdict.accepted and f"photo 1: {verdict.reason}" in str(refused.value)
    return verdict.reason


def test_small_face_is_rejected_as_too_small(demo, grace_hopper):
    tiny = np.asarray(Image.fromarray(grace_hopper).resize((60, 70)))
    [face] = demo.pipeline.detect(tiny)  # found, and confidently: only its size refuses it
    assert face.score >= MIN_ENROL_SCORE
    side = min(face.width, face.height)
    assert refusal(demo, tiny) == f"face too small ({side:.0f} px; at least {MIN_ENROL_FACE_PX} px needed)"


def test_blurred_face_is_rejected_as_too_blurred(demo, grace_hopper):
    blurred = np.asarray(Image.fromarray(grace_hopper).filter(ImageFilter.GaussianBlur(6)))
    [face] = demo.pipeline.detect(blurred)  # found, confident and large: only its sharpness refuses it
    assert face.score >= MIN_ENROL_SCORE and min(face.width, face.height) >= MIN_ENROL_FACE_PX
    assert refusal(demo, blurred) == "face too blurred"


def test_sharpness_separates_sharp_from_blurred_chips(grace_hopper):
    chip = grace_hopper[150:300, 200:350]
    soft = np.asarray(Image.fromarray(chip).filter(ImageFilter.GaussianBlur(4)))
    assert sharpness(chip) > 3 * sharpness(soft)


def test_forgotten_person_is_no_longer_recognised_and_the_probe_says_so(demo, astronaut):
    receipt = demo.enroll("Eileen Collins", [astronaut], consent=True).receipt
    erasure = demo.forget(receipt.subject_id, receipt.deletion_token)
    assert erasure["live_key_deleted"] and erasure["probe"]["matched_subject"] is False
    assert demo.analyse(astronaut).faces[0].decision.identity is None
    with pytest.raises(VaultError):
        demo.export(receipt.subject_id, receipt.deletion_token)


def test_forget_with_a_wrong_token_keeps_the_person(demo, astronaut):
    receipt = demo.enroll("Eileen Collins", [astronaut], consent=True).receipt
    with pytest.raises(VaultError):
        demo.forget(receipt.subject_id, "not-the-token")
    assert demo.analyse(astronaut).faces[0].decision.identity == "Eileen Collins"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bell\x07", "1234"])
def test_enrolment_with_an_unusable_name_is_refused_before_any_photo_is_read(tmp_path, pipeline, name):
    demo = FaceDemo(Config(data_dir=tmp_path, master_key=generate_master_key()), pipeline=pipeline)
    try:
        with pytest.raises(VaultError):  # the vault's one set of name rules (tests/test_privacy_names.py)
            demo.enroll(name, ["no such photo.jpg"], consent=True)
    finally:
        demo.close()


def test_retention_timer_purges_expired_subjects(tmp_path, pipeline, astronaut):
    import time
    from datetime import datetime, timedelta

    now = [datetime.now(UTC)]
    config = Config(data_dir=tmp_path, master_key=generate_master_key(), retention_days=1)
    demo = FaceDemo(config, pipeline=pipeline, clock=lambda: now[0])
    demo.enroll("Eileen Collins", [astronaut], consent=True)
    demo.start_retention_timer(every_s=0.05)
    now[0] += timedelta(days=2)
    deadline = time.monotonic() + 5
    while len(demo.gallery()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(demo.gallery()) == 0
    demo.close()


# ------------------------------------------------------------------ enrolment from a group photo


@pytest.fixture(scope="module")
def pair(astronaut, grace_hopper) -> np.ndarray:
    """Eileen Collins on the left, Grace Hopper on the right."""
    return compose(astronaut, grace_hopper)


def embedded_faces(demo, monkeypatch) -> list[int]:
    """How many faces each call of the embedding networks was given, from now on."""
    calls: list[int] = []
    embed = demo.pipeline.embed

    def counting(image, faces, model_id=None):
        calls.append(len(faces))
        return embed(image, faces, model_id)

    monkeypatch.setattr(demo.pipeline, "embed", counting)
    return calls


def test_a_face_picked_by_its_number_in_a_group_photo_is_the_one_enrolled(demo, pair, astronaut):
    outcome = demo.enroll_face("Eileen Collins", pair, True, 1)
    assert outcome.verdicts[0].reason == "accepted (face 1 of 2; the other faces were not used)"
    assert demo.analyse(augment(astronaut)).faces[0].decision.identity == "Eileen Collins"


def test_a_face_picked_by_a_click_inside_its_box_is_the_one_enrolled(demo, pair, grace_hopper):
    right = demo.detect(pair).faces[1].face
    centre = ((right.box[0] + right.box[2]) / 2, (right.box[1] + right.box[3]) / 2)
    demo.enroll_face("Grace Hopper", pair, True, centre)
    assert demo.analyse(augment(grace_hopper)).faces[0].decision.identity == "Grace Hopper"


def test_only_the_picked_face_of_a_group_photo_is_embedded(demo, pair, monkeypatch):
    calls = embedded_faces(demo, monkeypatch)
    outcome = demo.enroll_face("Eileen Collins", pair, True, 1)
    assert calls == [1] * len(demo.installed_models())
    assert all(n == 1 for n in outcome.receipt.templates_stored.values())


def test_a_click_beside_every_face_is_refused_and_stores_nothing(demo, pair):
    with pytest.raises(EnrolmentError, match=r"no face where you clicked \(1, 1\); click inside your face \(2 found\)"):
        demo.enroll_face("Eileen Collins", pair, True, (1.0, 1.0))
    assert len(demo.gallery()) == 0


@pytest.mark.parametrize("number", [0, 3, -1, True])
def test_a_face_number_the_photo_does_not_have_is_refused(demo, pair, number):
    with pytest.raises(EnrolmentError, match="choose a face from 1 to 2"):
        demo.enroll_face("Eileen Collins", pair, True, number)


def test_enrolment_from_a_group_photo_needs_consent_before_the_photo_is_read(demo, monkeypatch):
    monkeypatch.setattr(demo, "load_image", lambda photo: pytest.fail("the photo was read"))
    with pytest.raises(EnrolmentError, match="consent"):
        demo.enroll_face("Eileen Collins", b"a photo", False, 1)


def test_a_picked_face_too_small_for_a_template_is_refused(demo, grace_hopper):
    crowd = np.full((400, 700, 3), 200, np.uint8)
    big = np.asarray(Image.fromarray(grace_hopper).resize((300, 400)))
    crowd[:, :300] = big
    crowd[150:230, 500:560] = np.asarray(Image.fromarray(grace_hopper).resize((60, 80)))
    faces = [f.face for f in demo.detect(crowd).faces]
    assert len(faces) == 2 and min(faces[1].width, faces[1].height) < MIN_ENROL_FACE_PX
    with pytest.raises(EnrolmentError, match="the chosen face cannot be used: face too small"):
        demo.enroll_face("Grace Hopper", crowd, True, 2)
