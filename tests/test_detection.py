"""Detection: faces in original-image pixels, left to right; nothing for a photo without faces."""
import numpy as np
import pytest

from facedemo.detection import Face, primary_face
from tests.engine import compose


def test_astronaut_has_one_confident_face(pipeline, astronaut):
    faces = pipeline.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200  # her face, not the suit or the flag


def test_grace_hopper_has_one_face(pipeline, grace_hopper):
    assert len(pipeline.detect(grace_hopper)) == 1


def test_landmarks_are_inside_the_box_in_photo_order(pipeline, grace_hopper):
    face = pipeline.detect(grace_hopper)[0]
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    assert lx < nx < rx and mlx < mrx  # left eye is on the photo's left
    assert max(ly, ry) < ny < min(mly, mry)


def test_photo_without_a_face_gives_an_empty_list(pipeline):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    assert pipeline.detect(smooth) == []


def test_blank_photo_gives_an_empty_list(pipeline):
    assert pipeline.detect(np.full((300, 400, 3), 255, np.uint8)) == []


def test_faces_are_sorted_left_to_right(pipeline, astronaut, grace_hopper):
    faces = pipeline.detect(compose(grace_hopper, astronaut, grace_hopper))
    assert len(faces) == 3
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces)


def test_large_photo_is_detected_and_mapped_back_to_original_pixels(pipeline, astronaut):
    small = pipeline.detect(astronaut)[0]
    big_photo = np.kron(astronaut, np.ones((4, 4, 1), np.uint8))  # 2048 x 2048
    big = primary_face(pipeline.detect(big_photo))
    np.testing.assert_allclose(np.array(big.box) / 4, small.box, atol=4)
    np.testing.assert_allclose(np.array(big.landmarks) / 4, small.landmarks, atol=3)


def test_face_filling_the_frame_gets_landmarks_like_the_uncropped_photo(pipeline, grace_hopper):
    full = pipeline.detect(grace_hopper)[0]
    x1, y1, x2, y2 = (int(v) for v in full.box)
    pad = int(0.05 * (x2 - x1))
    tight = grace_hopper[y1 + pad : y2 - pad, x1 + pad : x2 - pad]
    faces = pipeline.detect(tight)
    assert len(faces) == 1
    shifted = np.array(faces[0].landmarks) + [x1 + pad, y1 + pad]
    eye_distance = full.landmarks[1][0] - full.landmarks[0][0]
    assert np.abs(shifted - np.array(full.landmarks)).max() < 0.1 * eye_distance


def test_lfw_subset_faces_are_found_when_upscaled(pipeline):
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, 25 x 25 grey in 0..1
    found = sum(
        bool(pipeline.detect(np.repeat((face * 255).astype(np.uint8)[:, :, None], 3, axis=2)))
        for face in faces
    )
    assert found >= 95


def face(box, score):
    return Face(box=box, score=score, landmarks=((0, 0),) * 5)


def test_primary_face_prefers_a_confident_face_over_a_larger_doubtful_one():
    helmet = face((0, 0, 300, 300), 0.95)
    person = face((10, 10, 110, 110), 0.999)
    assert primary_face([helmet, person]) is person


def test_primary_face_takes_the_largest_when_none_is_confident():
    small, large = face((0, 0, 10, 10), 0.9), face((0, 0, 50, 50), 0.8)
    assert primary_face([small, large]) is large


def test_primary_face_of_nothing_is_none():
    assert primary_face([]) is None
