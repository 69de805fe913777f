"""The service's limits: faces per photo, photos per enrolment, name length and the characters a name may hold."""
from __future__ import annotations

import pytest

from facedemo.app.config import Config
from facedemo.app.service import EnrolmentError, FaceDemo
from privacy import VaultError
from privacy.keys import generate_master_key
from privacy.vault import NAME_MAX_CHARS
from tests import hostile
from tests.app_server import ADMIN_TOKEN as ADMIN


@pytest.fixture()
def demo(tmp_path, pipeline):
    config = Config(data_dir=tmp_path, master_key=generate_master_key(), admin_token=ADMIN)
    service = FaceDemo(config, pipeline=pipeline)
    yield service
    service.close()


def stored_names(demo: FaceDemo) -> list[str]:
    return sorted(s["name"] for s in demo.list_subjects(ADMIN))


def test_faces_beyond_the_per_photo_limit_are_reported_as_skipped(demo):
    analysis = demo.analyse(hostile.case("crowd_of_42_faces").data)
    assert len(analysis.faces) == demo.pipeline.max_faces == 40
    assert analysis.faces_skipped == 2


def test_the_faces_analysed_over_the_limit_are_the_largest(demo):
    photo = demo.load_image(hostile.case("crowd_of_42_faces").data)
    every_area = sorted(f.area for f in demo.pipeline.detect(photo))
    kept_area = sorted(fa.face.area for fa in demo.analyse(photo).faces)
    assert kept_area == every_area[-len(kept_area):]


def test_more_photos_than_the_enrolment_limit_are_refused_and_nothing_is_stored(demo):
    photos = [hostile.astronaut()] * (demo.config.max_enrol_photos + 1)
    with pytest.raises(EnrolmentError, match=f"the limit is {demo.config.max_enrol_photos}"):
        demo.enroll("Eileen Collins", photos, consent=True)
    assert stored_names(demo) == []


def test_photos_up_to_the_enrolment_limit_are_accepted(tmp_path, pipeline):
    demo = FaceDemo(Config(data_dir=tmp_path, master_key=generate_master_key(), max_enrol_photos=2), pipeline)
    try:
        outcome = demo.enroll("Eileen Collins", [hostile.astronaut()] * 2, consent=True)
    finally:
        demo.close()
    assert [v.accepted for v in outcome.verdicts] == [True, True]


def test_name_longer_than_the_limit_is_refused_and_nothing_is_stored(demo):
    with pytest.raises(VaultError, match=f"the limit is {NAME_MAX_CHARS}"):
        demo.enroll("A" * (NAME_MAX_CHARS + 1), [hostile.astronaut()], consent=True)
    assert stored_names(demo) == []


def test_name_of_exactly_the_limit_is_stored_whole(demo):
    demo.enroll("É" * NAME_MAX_CHARS, [hostile.astronaut()], consent=True)
    assert stored_names(demo) == ["É" * NAME_MAX_CHARS]


@pytest.mark.parametrize(
    "name",
    [
        "Ada\x00Lovelace",  # NUL
        "\x1b[31mAda",  # terminal escape
        "Ada\u202eecalevoL",  # right-to-left override: shows a different name than is stored
        "Ada\u200bLovelace",  # zero-width space
        "Ada\ue000",  # private use
        "Ada\ud800",  # lone surrogate
        "😀😀",  # no letter at all
        "   ",  # nothing but spaces
        "",
    ],
)
def test_names_with_control_or_invisible_characters_or_no_letter_are_refused(demo, name):
    with pytest.raises(VaultError):
        demo.enroll(name, [hostile.astronaut()], consent=True)
    assert stored_names(demo) == []


@pytest.mark.parametrize("name", ["Грейс Хоппер", "葛麗絲·霍普", "غريس هوبر", "ग्रेस हॉपर", "Zoë O'Brien-Ñúñez"])
def test_names_in_any_script_are_stored_and_exported_unchanged(demo, name):
    receipt = demo.enroll(name, [hostile.grace_hopper()], consent=True).receipt
    assert demo.export(receipt.subject_id, receipt.deletion_token)["name"] == name


def test_line_breaks_and_tabs_in_a_name_become_single_spaces(demo):
    receipt = demo.enroll("Grace\tBrewster\n Hopper", [hostile.grace_hopper()], consent=True).receipt
    assert demo.export(receipt.subject_id, receipt.deletion_token)["name"] == "Grace Brewster Hopper"

