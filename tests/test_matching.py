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
    d = decide([[Candidate("a", "Ann", 0.3), Candidate("b", "Bob", 0.5)]], 0.6)[0]
    assert (d.identity, d.subject_id, d.accepted) == ("Ann", "a", True)
    assert d.margin == pytest.approx(0.2)


def test_face_at_or_over_threshold_is_unknown_but_keeps_its_distance():
    d = decide([[Candidate("a", "Ann", 0.6)]], 0.6)[0]
    assert d.identity is None and not d.accepted and d.distance == pytest.approx(0.6)


def test_two_faces_never_get_the_same_identity_and_the_better_match_wins():
    decisions = decide([
        [Candidate("a", "Ann", 0.40)],
        [Candidate("a", "Ann", 0.20)],
    ], 0.6)
    assert decisions[1].identity == "Ann"
    assert decisions[0].identity is None


def test_a_face_left_unknown_by_the_one_name_per_photo_rule_says_which_face_took_the_name():
    decisions = decide([
        [Candidate("a", "Ann", 0.40), Candidate("b", "Bob", 0.90)],
        [Candidate("a", "Ann", 0.20)],
    ], 0.6)
    assert decisions[0].identity is None and decisions[0].distance == pytest.approx(0.40)
    assert decisions[0].reason == "the name went to face 2, which is closer"
    assert decisions[0].margin == pytest.approx(0.50)  # to its next candidate: never negative
    assert decisions[1].reason == "below the threshold"


def test_loser_of_a_contest_falls_back_to_its_next_candidate_under_threshold():
    decisions = decide([
        [Candidate("a", "Ann", 0.30), Candidate("b", "Bob", 0.45)],
        [Candidate("a", "Ann", 0.10)],
    ], 0.6)
    assert [d.identity for d in decisions] == ["Bob", "Ann"]
    assert decisions[0].reason == "below the threshold; its nearest name went to face 2, which is closer"
    assert decisions[0].margin is None  # Bob is its last candidate: no runner-up behind him


def test_margin_is_measured_from_the_decided_candidate_to_the_next_one():
    decisions = decide([
        [Candidate("a", "Ann", 0.30), Candidate("b", "Bob", 0.45), Candidate("c", "Cy", 0.70)],
        [Candidate("a", "Ann", 0.10)],
    ], 0.6)
    assert decisions[0].identity == "Bob" and decisions[0].margin == pytest.approx(0.25)


def test_empty_gallery_gives_unknown_without_distance():
    d = decide([[]], 0.6)[0]
    assert d.identity is None and d.distance is None and d.margin is None
    assert d.reason == "nobody is enrolled"


def test_mean_templates_compare_a_probe_with_each_persons_renormalised_mean():
    ann = np.array([unit([1, 0.2]), unit([1, -0.6])])
    gallery = Gallery.from_subjects([Subject("a", "Ann", ann), Subject("b", "Bob", unit([0, 1])[None])],
                                    SFACE.model_id)
    probe = unit([1, 0.3])[None]
    mean = unit(ann.mean(0))
    np.testing.assert_allclose(gallery.subject_distances(probe, "cosine", "mean")[0, 0], 1 - probe[0] @ mean, atol=1e-6)
    np.testing.assert_allclose(gallery.subject_distances(probe, "cosine")[0, 0], 1 - (ann @ probe[0]).max(), atol=1e-6)
    assert SFACE.templates == "mean" and nearest(probe, gallery, SFACE)[0][0].distance == pytest.approx(1 - probe[0] @ mean)


def test_mean_templates_of_a_grown_gallery_cover_the_subjects_added_later():
    first = Gallery.from_subjects([Subject("a", "Ann", np.array([unit([1, 0]), unit([1, 1])]))], SFACE.model_id)
    grown = first.with_subjects([Subject("b", "Bob", np.array([unit([0, 1]), unit([-1, 1])]))])
    table = grown.subject_distances(np.array([unit([0, 1])]), "cosine", "mean")
    assert table.shape == (1, 2)
    np.testing.assert_allclose(table[0, 1], 1 - unit([0, 1]) @ unit(unit([0, 1]) + unit([-1, 1])), atol=1e-6)


@pytest.mark.parametrize("subjects", [1, 4, 5, 6, 9, 12])
def test_each_candidate_carries_the_median_distance_to_every_other_subject(subjects):
    rng = np.random.default_rng(subjects)
    templates, probes = rng.normal(size=(subjects, 8)), rng.normal(size=(3, 8))
    gallery = Gallery.from_subjects([Subject(str(i), str(i), t[None]) for i, t in enumerate(templates)],
                                    DLIB_RESNET.model_id)
    table = distances(probes, templates, "euclidean")
    for row, options in zip(table, nearest(probes, gallery, DLIB_RESNET, k=5)):
        for c in options:
            if subjects - 1 < 4:  # too few others for a median worth the name
                assert c.others_median is None
            else:
                assert c.others_median == pytest.approx(np.median(np.delete(row, int(c.subject_id))), abs=1e-5)


def test_in_a_large_gallery_the_median_of_the_others_is_estimated_closely():
    rng = np.random.default_rng(7)
    templates = rng.normal(size=(5000, 16)).astype(np.float32)
    gallery = Gallery(DLIB_RESNET.model_id, tuple(map(str, range(5000))), tuple(map(str, range(5000))), templates,
                      np.arange(5000))
    probe = rng.normal(size=(1, 16)).astype(np.float32)
    (options,) = nearest(probe, gallery, DLIB_RESNET)
    exact = np.median(np.delete(distances(probe, templates, "euclidean")[0], int(options[0].subject_id)))
    assert options[0].others_median == pytest.approx(exact, rel=0.01)
