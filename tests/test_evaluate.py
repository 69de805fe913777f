"""Evaluation maths, and the figures on the public-domain faces set."""
import numpy as np
import pytest

from facedemo.tools.dataset import DatasetError
from facedemo.tools.evaluate import auc, evaluate, threshold_at_far


def test_auc_is_one_when_every_genuine_pair_is_closer():
    assert auc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0


def test_auc_is_half_for_identical_distributions():
    assert auc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5


def test_threshold_at_far_accepts_at_most_that_share_of_impostors():
    impostor = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    t = threshold_at_far(impostor, 0.05)
    assert (impostor < t).mean() <= 0.05
    assert (impostor <= t).mean() > 0.05  # and no larger threshold would do


@pytest.fixture(scope="module")
def faces_pd_evaluation(pipeline, faces_pd) -> tuple[dict, dict]:
    """evaluate() on the public-domain faces set, once for the module: (report, curves)."""
    return evaluate(pipeline, faces_pd)


def test_faces_pd_cross_domain_probes_are_all_identified(faces_pd_evaluation):
    report, _ = faces_pd_evaluation
    assert report["identities"] == 8 and report["faces_found"] == report["images"]
    ident = report["identification"]
    assert ident["probes"] == 7 and ident["top1"] == 7 and ident["top1_open_set"] == 7


def test_a_dataset_without_any_face_is_a_dataset_error(pipeline, tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((200, 200, 3), 255, np.uint8)).save(tmp_path / name / "0.png")
    with pytest.raises(DatasetError, match=r"^no face found in any photo under .* \(2 photos\); nothing to evaluate$"):
        evaluate(pipeline, tmp_path)


def test_open_set_counts_strangers_accepted_and_enrolled_people_found(pipeline, tmp_path, astronaut, grace_hopper):
    from PIL import Image

    from tests.engine import augment

    known, strangers = tmp_path / "known", tmp_path / "strangers"
    for name, photos in (("collins", [astronaut, augment(astronaut)]),):
        (known / name).mkdir(parents=True)
        for i, photo in enumerate(photos):
            Image.fromarray(photo).save(known / name / f"{i}.png")
    (known / "other").mkdir()
    Image.fromarray(np.full((200, 200, 3), 255, np.uint8)).save(known / "other" / "0.png")  # no face
    (strangers / "hopper").mkdir(parents=True)
    Image.fromarray(grace_hopper).save(strangers / "hopper" / "0.png")
    report, _ = evaluate(pipeline, known, unknowns=strangers)
    open_set = report["models"][pipeline.model_id]["open_set"]
    assert {k: open_set[k] for k in ("unknown_probes", "unknown_faces_found", "unknown_accepted", "known_probes",
                                     "known_correct_accepted", "strangers")} == {
        "unknown_probes": 1, "unknown_faces_found": 1, "unknown_accepted": 0, "known_probes": 1,
        "known_correct_accepted": 1, "strangers": "unknowns"}
    for rule in ("threshold", "two_level"):
        figures = open_set["rules"][rule]
        assert (figures["known_nearest_right"], figures["known_accepted"], figures["known_wrong"]) == (1, 1, 0)
        assert figures["unknown_accepted"] == 0 and set(figures["dir_at_far"]) == {"0.01", "0.001"}
    assert open_set["dir_at_far"]["0.01"]["dir"] == 1.0


def test_without_unknowns_each_identity_is_a_stranger_to_the_others(faces_pd_evaluation, tmp_path):
    from facedemo.tools.evaluate import plot

    report, curves = faces_pd_evaluation
    open_set = report["open_set"]
    assert open_set["strangers"] == "leave-one-identity-out" and open_set["enrolled"] == 8
    assert open_set["unknown_probes"] == report["faces_found"] == 15  # every photo, against the 7 others
    assert open_set["rules"]["threshold"]["unknown_accepted"] == open_set["rules"]["two_level"]["unknown_accepted"] == 0
    plot(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_dir_at_far_counts_right_and_accepted_probes_at_the_strangers_threshold():
    from facedemo.tools.evaluate import dir_at_far

    strangers = np.linspace(0.5, 1.5, 1000)  # FAR 1e-2 admits the 10 closest: threshold 0.51
    known = np.array([0.2, 0.4, 0.505, 0.52, 0.9])
    right = np.array([True, False, True, True, True])
    figures = dir_at_far(right, known, strangers)
    assert figures["0.01"]["threshold"] == pytest.approx(strangers[10])
    assert figures["0.01"]["dir"] == pytest.approx(2 / 5)  # 0.2 and 0.505; 0.4 is the wrong person
    assert figures["0.001"]["dir"] == pytest.approx(1 / 5)  # threshold 0.501: only 0.2


def test_the_two_level_rules_curve_accepts_what_the_rule_accepts_at_each_threshold():
    from facedemo.matching import Candidate, Rule, decide
    from facedemo.tools.evaluate import _open_set_scores, _Probe

    rng = np.random.default_rng(11)
    medians = [None if i % 5 == 0 else m for i, m in enumerate(rng.uniform(0.6, 1.2, 300))]  # some small galleries
    probes = [_Probe([Candidate("a", "A", d, m), Candidate("b", "B", d + g, m)], "a")
              for d, g, m in zip(rng.uniform(0.3, 0.8, 300), rng.uniform(0, 0.4, 300), medians)]
    rule = Rule(0.56, 0.53, 0.60, 0.40, 0.1)
    right, scores, _ = _open_set_scores(probes, [], rule)
    for t in (0.3, 0.5, 0.56, 0.6):
        scaled = Rule(t, t * 0.53 / 0.56, t * 0.60 / 0.56, 0.40, 0.1)
        accepted = np.array([decide([p.candidates], scaled)[0].accepted for p in probes])
        np.testing.assert_array_equal(accepted, scores < t)


def test_auc_equals_the_share_of_closer_genuine_pairs_counting_ties_half():
    rng = np.random.default_rng(5)
    genuine = rng.integers(0, 6, 40).astype(float)  # many ties on purpose
    impostor = rng.integers(2, 9, 60).astype(float)
    wins = (genuine[:, None] < impostor[None, :]).sum() + 0.5 * (genuine[:, None] == impostor[None, :]).sum()
    assert auc(genuine, impostor) == pytest.approx(wins / (40 * 60))


def test_netpbm_grey_and_colour_photos_load_as_rgb():
    import io

    from PIL import Image

    from facedemo.images import load

    grey = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9)
    colour = np.random.default_rng(3).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    for array in (grey, colour):
        encoded = io.BytesIO()
        Image.fromarray(array).save(encoded, format="PPM")  # P5 (.pgm) for grey, P6 (.ppm) for colour
        rgb = load(encoded.getvalue())
        expected = np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array
        np.testing.assert_array_equal(rgb, expected)


def test_a_truncated_pgm_is_called_damaged():
    from facedemo.images import ImageError, load

    with pytest.raises(ImageError, match="PGM file is damaged"):
        load(b"P5\n92 112\n255\n" + bytes(10))


def test_person_per_folder_sets_of_pgm_photos_are_read(tmp_path):
    from PIL import Image

    from facedemo.tools.dataset import read_dataset

    for person in ("s1", "s2"):
        (tmp_path / person).mkdir()
        for n in (1, 2):
            Image.fromarray(np.full((112, 92), 40 * n, np.uint8)).save(tmp_path / person / f"{n}.pgm")
    identities = read_dataset(tmp_path)
    assert [i.name for i in identities] == ["s1", "s2"]
    assert [p.name for p in identities[0].photos] == ["1.pgm", "2.pgm"]


def test_a_probe_too_poor_to_decide_is_counted_and_never_named():
    from facedemo.matching import Candidate, Rule
    from facedemo.tools.evaluate import _Probe, _rule_figures

    close = [Candidate("a", "A", 0.1, 0.9), Candidate("b", "B", 0.8, 0.9)]
    known = [_Probe(close, "a"), _Probe(close, "a", "the face is blurred or too small to show detail")]
    strangers = [_Probe(close, None, "the face is turned too far from the camera")]
    figures = _rule_figures(known, strangers, Rule.single(0.56))
    assert (figures["known_accepted"], figures["unknown_accepted"], figures["too_poor"]) == (1, 0, 2)
    assert figures["dir_at_far"]["0.01"]["dir"] == 0.5
