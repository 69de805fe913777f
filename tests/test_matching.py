"""Matching: nearest subject under the threshold, runner-up margin, and no identity given twice."""
import numpy as np
import pytest

from facedemo.matching import Candidate, Gallery, GalleryMismatch, Subject, decide, distances, nearest
from models.registry import DLIB_RESNET, SFACE


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_euclidean_distances_match_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(4, 8))
    expected = np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(distances(a, b, "euclidean"), expected, atol=1e-5)


def test_cosine_distance_is_one_minus_cosine_similarity():
    a, b = unit([1, 0]), unit([1, 1])
    assert distances(a[None], b[None], "cosine")[0, 0] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)


def test_subject_distance_is_that_of_its_nearest_template():
    gallery = Gallery.from_subjects([
        Subject("a", "Ann", np.array([[0, 0], [5, 0]], np.float32)),
        Subject("b", "Bob", np.array([[0, 3]], np.float32)),
    ], DLIB_RESNET.model_id)
    table = gallery.subject_distances(np.array([[4, 0]], np.float32), "euclidean")
    np.testing.assert_allclose(table, [[1.0, 5.0]], atol=1e-6)


def test_nearest_lists_subjects_closest_first():
    gallery = Gallery.from_subjects([Subject(s, s, np.array([[x, 0]], np.float32)) for s, x in
                                     [("a", 3), ("b", 1), ("c", 2)]], DLIB_RESNET.model_id)
    result = nearest(np.array([[0, 0]], np.float32), gallery, DLIB_RESNET, k=2)
    assert [c.subject_id for c in result[0]] == ["b", "c"]


def test_matching_refuses_a_gallery_of_another_model():
    gallery = Gallery.from_subjects([Subject("a", "Ann", np.array([[1, 0]], np.float32))], DLIB_RESNET.model_id)
    with pytest.raises(GalleryMismatch, match="dlib_resnet_v1 templates"):
        nearest(np.array([[1, 0]], np.float32), gallery, SFACE)


def test_face_under_threshold_gets_the_nearest_identity_and_margin():
    d = decide([[Candidate("a", "Ann", 0.3), Candidate("b", "Bob", 0.5)]], threshold=0.6)[0]
    assert (d.identity, d.subject_id, d.accepted) == ("Ann", "a", True)
    assert d.margin == pytest.approx(0.2)


def test_face_at_or_over_threshold_is_unknown_but_keeps_its_distance():
    d = decide([[Candidate("a", "Ann", 0.6)]], threshold=0.6)[0]
    assert d.identity is None and not d.accepted and d.distance == pytest.approx(0.6)


def test_two_faces_never_get_the_same_identity_and_the_better_match_wins():
    decisions = decide([
        [Candidate("a", "Ann", 0.40)],
        [Candidate("a", "Ann", 0.20)],
    ], threshold=0.6)
    assert decisions[1].identity == "Ann"
    assert decisions[0].identity is None


def test_loser_of_a_contest_falls_back_to_its_next_candidate_under_threshold():
    decisions = decide([
        [Candidate("a", "Ann", 0.30), Candidate("b", "Bob", 0.45)],
        [Candidate("a", "Ann", 0.10)],
    ], threshold=0.6)
    assert [d.identity for d in decisions] == ["Bob", "Ann"]


def test_empty_gallery_gives_unknown_without_distance():
    d = decide([[]], threshold=0.6)[0]
    assert d.identity is None and d.distance is None and d.margin is None
