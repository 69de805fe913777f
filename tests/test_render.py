"""Drawing detections and recognitions: what each image shows, where, in which colour, and blurring."""
from __future__ import annotations

import numpy as np
import pytest

from facedemo import render
from facedemo.matching import Decision
from facedemo.results import Face, FaceAnalysis

GREY = 128


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.99) -> Face:
    """A face whose landmarks sit where eyes, nose and mouth corners would be in its box."""
    w, h = x2 - x1, y2 - y1
    marks = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))
    return Face((x1, y1, x2, y2), score, tuple((x1 + fx * w, y1 + fy * h) for fx, fy in marks))


KNOWN = Decision("Eileen", "s1", 0.42, 0.3)
REJECTED = Decision(None, None, 0.81, 0.05)
NOBODY_ENROLLED = Decision(None, None, None, None)


@pytest.fixture
def flat() -> np.ndarray:
    return np.full((400, 600, 3), GREY, dtype=np.uint8)


@pytest.fixture
def textured() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(400, 600, 3), dtype=np.uint8)


def colour_count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == np.array(colour, dtype=np.uint8), axis=2).sum())


def test_drawing_leaves_the_input_photo_unchanged(textured):
    before = textured.copy()
    render.draw_detection(textured, [face(100, 100, 200, 220)])
    render.draw_recognition(textured, [FaceAnalysis(face(100, 100, 200, 220), REJECTED)], blur_unknown=True)
    assert np.array_equal(textured, before)


def test_detection_box_is_drawn_in_the_detection_colour_along_the_box_edges(flat):
    out = render.draw_detection(flat, [face(100, 100, 200, 220)], max_side=None)
    assert out.shape == flat.shape
    left_edge = out[150:200, 100]
    assert np.all(left_edge == render.DETECTION_COLOUR)
    assert np.all(out[300:, 300:] == GREY)  # far from the face nothing is drawn


def test_detection_marks_each_of_the_five_landmarks(flat):
    f = face(100, 100, 300, 340)
    out = render.draw_detection(flat, [f], max_side=None)
    for x, y in f.landmarks:
        assert tuple(out[round(y), round(x)]) == render.LANDMARK_COLOUR


def test_detection_label_gives_face_number_and_confidence():
    assert render.detection_label(2, face(0, 0, 10, 10, score=0.98765)) == "2 0.988"


def test_recognition_label_names_an_accepted_face_with_its_distance():
    assert render.recognition_label(1, KNOWN) == "1 Eileen 0.42"


def test_recognition_label_says_unknown_with_the_distance_to_the_nearest_person():
    assert render.recognition_label(3, REJECTED) == "3 Unknown 0.81"


def test_recognition_label_says_unknown_without_distance_when_nobody_is_enrolled():
    assert render.recognition_label(1, NOBODY_ENROLLED) == "1 Unknown"


def test_recognised_face_is_boxed_green_and_unknown_face_orange_red(flat):
    faces = [FaceAnalysis(face(50, 100, 200, 260), KNOWN), FaceAnalysis(face(350, 100, 500, 260), REJECTED)]
    out = render.draw_recognition(flat, faces, max_side=None)
    assert np.all(out[150:250, 50] == render.KNOWN_COLOUR)
    assert np.all(out[150:250, 350] == render.UNKNOWN_COLOUR)


def test_recognition_draws_no_landmarks(flat):
    f = face(100, 100, 300, 340)
    out = render.draw_recognition(flat, [FaceAnalysis(f, KNOWN)], max_side=None)
    assert colour_count(out, render.LANDMARK_COLOUR) == 0


def test_blur_unknown_hides_unknown_faces_and_keeps_recognised_ones(textured):
    known, unknown = face(60, 120, 200, 280), face(380, 120, 520, 280)
    out = render.draw_recognition(
        textured, [FaceAnalysis(known, KNOWN), FaceAnalysis(unknown, REJECTED)], blur_unknown=True, max_side=None
    )
    inside_unknown = (slice(170, 230), slice(420, 480))
    inside_known = (slice(170, 230), slice(100, 160))
    assert out[inside_unknown].std() < 0.25 * textured[inside_unknown].std()
    assert np.array_equal(out[inside_known], textured[inside_known])


def test_blur_leaves_pixels_away_from_the_faces_untouched(textured):
    out = render.draw_recognition(
        textured, [FaceAnalysis(face(380, 120, 520, 280), REJECTED)], blur_unknown=True, max_side=None
    )
    assert np.array_equal(out[:, :300], textured[:, :300])


def test_detection_image_blurs_only_the_faces_it_is_told_to(textured):
    first, second = face(60, 120, 200, 280), face(380, 120, 520, 280)
    out = render.draw_detection(textured, [first, second], blur=[False, True], max_side=None)
    forehead = (slice(130, 170), slice(420, 480))  # above the landmarks, which are drawn over the blur
    assert out[forehead].std() < 0.25 * textured[forehead].std()
    first_forehead = (slice(130, 170), slice(100, 160))
    assert np.array_equal(out[first_forehead], textured[first_forehead])


def test_without_faces_the_result_is_a_plain_copy(textured):
    assert np.array_equal(render.draw_detection(textured, []), textured)
    assert np.array_equal(render.draw_recognition(textured, [], blur_unknown=True), textured)


def test_a_large_photo_is_shrunk_for_display_and_the_boxes_with_it():
    big = np.full((2000, 3000, 3), GREY, dtype=np.uint8)
    out = render.draw_detection(big, [face(1000, 500, 1600, 1300)], max_side=1500)
    assert out.shape == (1000, 1500, 3)
    assert np.all(out[300:600, 500] == render.DETECTION_COLOUR)  # x 1000 in the photo, 500 on display


def test_fit_keeps_a_small_photo_as_it_is_and_shrinks_a_large_one(flat):
    assert np.array_equal(render.fit(flat, max_side=1000), flat)
    assert render.fit(flat, max_side=300).shape == (200, 300, 3)


def test_source_size_maps_full_size_coordinates_onto_a_smaller_copy(flat):
    # The copy is half the size of the 1200 x 800 photo the face was found in.
    out = render.draw_detection(flat, [face(200, 200, 400, 440)], max_side=None, source_size=(1200, 800))
    assert np.all(out[130:200, 100] == render.DETECTION_COLOUR)


def test_label_of_a_face_at_the_top_edge_stays_inside_the_picture(flat):
    out = render.draw_detection(flat, [face(580, 0, 640, 60)], max_side=None)
    assert out.shape == flat.shape
    assert colour_count(out[:40, :], render.DETECTION_COLOUR) > 0


def test_tag_text_grows_with_the_picture_so_a_phone_can_still_read_it():
    # A 1280-px picture shown 326 px wide on a 390-px phone: its tags keep at least 11 px of text.
    assert render.label_text_px((1280, 720)) * 326 / 1280 >= 11
    assert render.label_text_px((1280, 720)) == 2 * render.label_text_px((640, 360))


def crowd(columns: int, rows: int, side: float, gap: float) -> list[tuple[float, float, float, float]]:
    return [
        (gap + c * (side + gap), gap + r * (side + gap), gap + c * (side + gap) + side, gap + r * (side + gap) + side)
        for r in range(rows) for c in range(columns)
    ]


def test_tags_in_a_crowd_never_overlap_each_other():
    boxes = crowd(columns=10, rows=4, side=70, gap=40)
    labels = render.place_labels(boxes, [f"{n} Unknown 0.81" for n in range(1, len(boxes) + 1)], (1280, 720))
    for n, a in enumerate(labels):
        for b in labels[n + 1:]:
            assert not render._overlaps(a.rect, b.rect), (a, b)


def test_a_tag_without_room_for_its_name_shows_the_face_number_the_table_carries():
    labels = render.place_labels(crowd(columns=10, rows=4, side=70, gap=40),
                                 [f"{n} Unknown 0.81" for n in range(1, 41)], (1280, 720))
    assert {label.text for label in labels} >= {"1", "40"}
    assert all(label.text.split(" ")[0] == str(n) for n, label in enumerate(labels, 1))


def test_a_lone_face_gets_its_whole_tag_above_its_box():
    (label,) = render.place_labels([(500, 300, 700, 500)], ["1 Eileen 0.42"], (1280, 720))
    assert label.text == "1 Eileen 0.42"
    assert label.rect[3] <= 300 and label.rect[0] == 500


def test_a_tag_never_covers_another_face():
    boxes = [(100, 100, 300, 300), (100, 330, 300, 530)]
    labels = render.place_labels(boxes, ["1 Somebody with a long name 0.42", "2 Unknown 0.90"], (1280, 720))
    for n, label in enumerate(labels):
        assert not render._overlaps(label.rect, boxes[1 - n])


def test_face_rows_give_each_group_a_captioned_row_of_its_thumbnails():
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    out = render.face_rows([("person 1", [red, red]), ("person 2", [red])], width=400)
    assert out.shape == (2 * (26 + 64 + 8), 400, 3)
    row = 26 + 64 + 8
    assert colour_count(out[26:90], (255, 0, 0)) == 2 * 64 * 64
    assert colour_count(out[row + 26:row + 90], (255, 0, 0)) == 64 * 64
    assert colour_count(out[:26], (0, 0, 0)) > 0  # the caption
