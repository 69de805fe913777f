"""Detection: faces in original-image pixels, left to right; nothing for a photo without faces."""
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from facedemo.detection import primary_face
from facedemo.results import Face
from models import mtcnn
from tests.engine import compose


@pytest.fixture(scope="module")
def facenet_defaults():
    """facenet-pytorch's MTCNN with its default settings: the detector we must not fall behind."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def facenet_faces(detector, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """(box, score) of each face facenet-pytorch finds (numpy 2 may give object arrays: cast)."""
    boxes, scores = detector.detect(Image.fromarray(image))
    if boxes is None:
        return []
    return list(zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64)))


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def best_iou(box, faces: list[Face]) -> float:
    return max((iou(box, f.box) for f in faces), default=0.0)


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    height = round(width * image.shape[0] / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


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


@pytest.mark.parametrize("shape", [(12, 400, 3), (3000, 1, 3), (1, 1, 3)])
def test_photo_too_thin_for_any_face_gives_an_empty_list(pipeline, shape):
    assert pipeline.detect(np.full(shape, 128, np.uint8)) == []


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


@pytest.mark.slow  # a whole photo set through the detector
def test_lfw_subset_faces_are_found_when_upscaled(pipeline):
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, 25 x 25 grey in 0..1
    found = sum(
        bool(pipeline.detect(np.repeat((face * 255).astype(np.uint8)[:, :, None], 3, axis=2)))
        for face in faces
    )
    assert found >= 95


def test_every_face_facenet_pytorch_finds_on_the_test_photos_is_found_in_the_same_place(
    pipeline, facenet_defaults, astronaut, grace_hopper
):
    from facedemo.tools.bench import sample_photos

    photos = {"astronaut": astronaut, "grace_hopper": grace_hopper, "1080p_8_faces": sample_photos()["1080p"]}
    for name, photo in photos.items():
        theirs = facenet_faces(facenet_defaults, photo)
        ours = pipeline.detect(photo)
        assert theirs, name
        assert len(ours) == len(theirs), name
        # MTCNN's boxes vary by a few pixels with resampling details: IoU 0.74-0.95 here.
        assert all(best_iou(box, ours) > 0.7 for box, _ in theirs), name


@pytest.mark.slow  # a whole photo set through the detector
def test_group_photos_keep_every_labelled_face_facenet_pytorch_finds(pipeline, facenet_defaults, faces_pd):
    """Full size (1280 px wide) and shrunk to 500 px wide, like the 500 x 375 group photo in which
    facenet-pytorch's defaults missed a clear 37-pixel face. Only faces the labels say are faces:
    facenet-pytorch also reports a bundle of cables at 0.93, which we must not.
    """
    from facedemo.tools.detection_eval import labelled_photos

    for width in (None, 500):
        for photo in labelled_photos(faces_pd, width):
            if not photo.name.startswith("_groups/"):
                continue
            theirs = [box for box, _ in facenet_faces(facenet_defaults, photo.image)]
            ours = pipeline.detect(photo.image)
            for label in photo.faces:
                if max((iou(label, box) for box in theirs), default=0.0) >= 0.4:
                    assert best_iou(label, ours) >= 0.4, (photo.name, label)


def test_small_face_in_a_group_sized_photo_is_found(pipeline, astronaut):
    tile = shrink(astronaut, 130)  # her face: ~22 px wide, near the 20 px the search stops at
    canvas = np.full((853, 1280, 3), 128, np.uint8)
    canvas[400 : 400 + tile.shape[0], 600 : 600 + tile.shape[1]] = tile
    faces = pipeline.detect(canvas)
    assert len(faces) == 1
    assert 17 < faces[0].width < 28 and faces[0].score > 0.99


def test_results_are_plain_python_numbers(pipeline, grace_hopper):
    face = pipeline.detect(grace_hopper)[0]
    values = [*face.box, face.score, *(v for point in face.landmarks for v in point)]
    assert all(type(v) is float for v in values)  # not numpy scalars or object arrays
    json.dumps(face.to_dict())


def test_one_cascade_serves_many_threads_at_once(astronaut, grace_hopper):
    # The cascade itself, without the detector's lock: all per-call state lives in the call.
    cascade = mtcnn.Cascade()
    photos = [astronaut, grace_hopper, compose(grace_hopper, astronaut)] * 2
    expected = [cascade(p) for p in photos]
    results: dict[int, mtcnn.Detections] = {}

    def work(i: int) -> None:
        results[i] = cascade(photos[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(photos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert len(want.boxes) == len(results[i].boxes) > 0
        np.testing.assert_allclose(results[i].boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(results[i].landmarks, want.landmarks, atol=1e-3)


@pytest.mark.parametrize("height", [12, 13, 14, 25, 138, 139, 301])
@pytest.mark.parametrize("width", [12, 13, 97])
def test_pnet_runner_in_strips_gives_facenet_pytorchs_pnet_maps(height, width):
    cascade = mtcnn.Cascade()
    pixels = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.inference_mode():
        offsets, probs = cascade.pnet(pixels)  # facenet-pytorch's own forward, in one pass
        face, cells, cell_offsets = mtcnn._pnet_in_strips(mtcnn.PNetRunner(cascade.pnet), pixels, 0.3)
    torch.testing.assert_close(face, probs[0, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cells, torch.nonzero(face.flatten() >= 0.3).flatten())
    torch.testing.assert_close(cell_offsets, offsets[0].flatten(1).T[cells], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("count", [1, 7, 130])
def test_r_and_o_net_runners_give_facenet_pytorchs_outputs(count):
    cascade = mtcnn.Cascade()
    generator = torch.Generator().manual_seed(count)
    small, large = torch.randn(count, 3, 24, 24, generator=generator), torch.randn(count, 3, 48, 48, generator=generator)
    with torch.inference_mode():
        r_offsets, r_probs = cascade.rnet(small)
        o_offsets, o_points, o_probs = cascade.onet(large)
        ours_r = mtcnn._batched(cascade._rnet, small, mtcnn.RNET_BATCH)
        ours_o = mtcnn._batched(cascade._onet, large, mtcnn.ONET_BATCH)
    for got, want in zip((*ours_r, *ours_o), (r_offsets, r_probs[:, 1], o_offsets, o_points, o_probs[:, 1])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("size", [4, 9, 10, 21, 22, 23, 46])
def test_max_pool_as_maxima_is_torchs_ceil_mode_max_pool(kernel, size):
    x = torch.randn(2, 5, size, size + 1).contiguous(memory_format=torch.channels_last)
    want = torch.nn.functional.max_pool2d(x, kernel, 2, ceil_mode=True)
    assert torch.equal(mtcnn._max_pool(x, kernel), want)


def test_crops_read_the_photo_in_net_units_and_grey_outside_it():
    image = np.full((400, 600, 3), 200, np.uint8)
    cascade = mtcnn.Cascade()
    pyramid = mtcnn.Pyramid(image, cascade.pyramid(600, 400, 20.0))
    boxes = torch.tensor([[100.0, 100.0, 140.0, 140.0], [10.0, 10.0, 300.0, 300.0], [-500.0, -500.0, -400.0, -400.0]])
    crops = pyramid.crops(boxes, mtcnn.RNET_INPUT)
    assert crops.shape == (3, 3, 24, 24)
    torch.testing.assert_close(crops[:2], torch.full((2, 3, 24, 24), (200 - 127.5) / 128))
    assert torch.all(crops[2] == 0)


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


def test_mtcnn_weights_are_checked_against_their_pinned_hash(monkeypatch):
    from dataclasses import replace

    from models import weights
    from models.weights import WeightsError

    monkeypatch.setattr(weights, "MTCNN_RNET", replace(weights.MTCNN_RNET, sha256="0" * 64))
    with pytest.raises(WeightsError, match="rnet.pt is corrupt or modified"):
        mtcnn.Cascade()


# ---------------------------------------------------------------- precision and recall, both detectors

# Measured with facedemo.tools.detection_eval on the labelled photos (39 faces), the same 500 px
# wide (faces of 22-58 px in the group photos), the generated ones (54) and the small hard ones
# (240 faces of 28-48 px): (found, false) per set. Before (the mirror rule, P-net at 0.6, 2% of the
# short side) they were (38, 3), (35, 0), (54, 1), (240, 10).
# MTCNN misses the face lying sideways and the blurred girl half hidden behind a raised arm (found
# at 0.67 only when the pyramid starts at 19.5-20 px faces), and at 500 px three upside-down or
# half-hidden faces of 22-25 px; YuNet misses more of those (models/MODEL_CARD.md).
EXPECTED = {
    "mtcnn": {"labelled": (37, 0), "shrunk": (35, 0), "generated": (54, 0), "small": (240, 2)},
    "yunet": {"labelled": (35, 0), "shrunk": (31, 0), "generated": (52, 0), "small": (234, 0)},
}


@pytest.fixture(scope="module")
def evaluation_sets(faces_pd):
    from facedemo.tools.detection_eval import evaluation_sets

    return evaluation_sets(faces_pd)


@pytest.mark.slow  # a whole photo set through the detector
@pytest.mark.parametrize("detector", ["mtcnn", "yunet"])
def test_labelled_faces_are_found_without_false_faces(pipeline, evaluation_sets, detector):
    from facedemo.tools.detection_eval import measure

    for name, (found, false) in EXPECTED[detector].items():
        result = measure(lambda image: pipeline.detect(image, detector), evaluation_sets[name])
        assert result["found"] >= found and result["false"] <= false, (name, result["missed_faces"], result["false_detections"])


def test_known_false_faces_of_the_iss_photos_are_not_reported(pipeline, faces_pd):
    """Cables (21 px, O-net 0.98), a mission patch (17 px) and a connector (18 px) that MTCNN
    alone, facenet-pytorch's or ours with the mirror rule, reports as faces (LABELS.json notes)."""
    from facedemo.images import load

    for relative, box in [
        ("_groups/expedition_1_crew.jpg", (505, 294, 526, 317)),
        ("catherine_coleman/catherine_coleman_onboard.jpg", (222, 374, 239, 396)),
        ("peggy_whitson/peggy_whitson_onboard.jpg", (361, 546, 378, 567)),
    ]:
        photo = load(faces_pd / relative)
        assert best_iou(box, pipeline.detect(photo)) < 0.3, relative


def frontal_faces_pasted(faces_pd, width: int, faces_px: list[float], seed: int = 5):
    """A group photo `width` px wide with clear frontal faces of `faces_px` widths pasted in (a soft
    oval, no rectangle edge), where no labelled face is: (photo, pasted boxes, labelled boxes)."""
    from facedemo.tools import detection_eval as de

    photo = next(p for p in de.labelled_photos(faces_pd, width) if p.name.startswith("_groups/obama"))
    donors = [(p.image, p.faces[0]) for p in de.labelled_photos(faces_pd) if "portrait" in p.name]
    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(photo.image)
    taken, pasted = list(photo.faces), []
    for k, size in enumerate(faces_px):
        patch, face = de._face_patch(*donors[k % len(donors)], size)
        for _attempt in range(20000):
            x, y = rng.uniform(0, canvas.width - patch.width), rng.uniform(0, canvas.height - patch.height)
            outer = np.array([x, y, x + patch.width, y + patch.height])
            if all(iou(outer, t) == 0 for t in taken):
                break
        else:
            raise AssertionError(f"no room left for face {k + 1} of {len(faces_px)}")
        canvas.paste(patch, (round(x), round(y)), de._oval_mask(patch.size))
        pasted.append(np.array([round(x), round(y), round(x), round(y)]) + face)
        taken.append(outer)
    return np.asarray(canvas), pasted, photo.faces


@pytest.mark.parametrize("seed", [5, 6])
def test_37_px_frontal_faces_in_a_500_px_group_photo_are_found_without_false_faces(pipeline, faces_pd, seed):
    """The held-out miss: one frontal face of 37 px in a 500 x 375 group photo. Faces of 30-40 px
    pasted into a group photo 500 px wide are all found, and nothing that is not a face."""
    photo, pasted, labelled = frontal_faces_pasted(faces_pd, 500, [37, 37, 30, 33, 35, 40, 37, 38], seed)
    faces = pipeline.detect(photo)
    assert all(best_iou(box, faces) >= 0.4 for box in pasted)
    others = [f for f in faces if max(iou(f.box, b) for b in [*pasted, *labelled]) < 0.4]
    assert others == []


def test_yunet_finds_a_face_filling_the_frame_through_its_smaller_scale(pipeline, faces_pd):
    """YuNet's confidence falls above ~320 px (0.64-0.72 at 600 px): a portrait whose face is 400+ px
    wide is also looked at a third of its size."""
    from facedemo.images import load

    portrait = load(faces_pd / "eileen_collins" / "collins_nasa_portrait_b.jpg")  # the face fills 385 x 385
    big = np.asarray(Image.fromarray(portrait).resize((900, 900)))
    faces = pipeline.detect(big, "yunet")
    assert len(faces) == 1 and faces[0].width > 700


def test_both_detectors_give_faces_in_the_same_places(pipeline, astronaut, grace_hopper):
    photo = compose(grace_hopper, astronaut, grace_hopper)
    mtcnn_faces, yunet_faces = pipeline.detect(photo, "mtcnn"), pipeline.detect(photo, "yunet")
    assert len(mtcnn_faces) == len(yunet_faces) == 3
    for a, b in zip(mtcnn_faces, yunet_faces):
        assert iou(a.box, b.box) > 0.6
        eye_distance = a.landmarks[1][0] - a.landmarks[0][0]
        assert np.abs(np.array(a.landmarks) - np.array(b.landmarks)).max() < 0.25 * eye_distance


def test_unknown_detector_is_refused_with_the_choices(pipeline):
    from facedemo.detection import DetectorError
    from facedemo.pipeline import Pipeline

    with pytest.raises(DetectorError, match="choose one of mtcnn, yunet"):
        pipeline.detect(np.zeros((100, 100, 3), np.uint8), "haar")
    with pytest.raises(DetectorError):
        Pipeline(detector="haar")


def test_doubtful_boxes_are_decided_by_the_second_opinion(faces_pd):
    """O-net scores the cables of expedition_1_crew 0.98, under SURE: whoever gives the second
    opinion decides; the three faces (O-net >= 0.99) need none."""
    from facedemo.images import load

    photo = load(faces_pd / "_groups" / "expedition_1_crew.jpg")
    cables = (505, 294, 526, 317)
    asked = []

    def never(image, boxes):
        asked.append(len(boxes))
        return torch.zeros(len(boxes))

    def always(image, boxes):
        return torch.ones(len(boxes))

    sceptic, believer = mtcnn.Cascade((0.6, 0.7, 0.65), second_opinion=never), mtcnn.Cascade((0.6, 0.7, 0.65), second_opinion=always)
    min_face = 20.0
    doubted, trusted = ([face(tuple(b), float(s)) for b, s in zip(found.boxes, found.scores)]
                        for found in (sceptic(photo, min_face), believer(photo, min_face)))
    assert len(doubted) == 3 and all(f.score >= mtcnn.SURE for f in doubted)
    assert best_iou(cables, doubted) < 0.3 <= best_iou(cables, trusted)
    assert asked and sum(asked) < 20  # boxes inside a sure face are not asked about


# ---------------------------------------------------------------- the detector choice in the app


def test_the_detect_tab_runs_the_chosen_detector_and_names_it(pipeline, tmp_path, astronaut, grace_hopper):
    from facedemo.app.config import Config
    from facedemo.app.handlers import Handlers
    from facedemo.app.service import FaceDemo
    from privacy.keys import generate_master_key

    photo = tmp_path / "group.png"
    Image.fromarray(compose(grace_hopper, astronaut)).save(photo)
    demo = FaceDemo(Config(data_dir=tmp_path / "data", master_key=generate_master_key()), pipeline=pipeline)
    try:
        handlers = Handlers(demo)
        *_, rows, summary, shown = handlers.analyse(str(photo), None, False, "yunet")
        assert len(rows) == 2 and "**Detection (YuNet):** 2 faces found" in summary
        # YuNet's scores (0.9-0.95 on clear faces) are not MTCNN's (~1.0 on the same faces).
        assert all(fa.face.score < 0.99 for fa in shown.analysis.faces)
        *_, summary, _ = handlers.redecide(shown, 0.3, False)
        assert "**Detection (YuNet):**" in summary
        *_, summary, shown = handlers.analyse(str(photo), None, False, None)
        assert "**Detection (MTCNN):** 2 faces found" in summary and demo.detector_id == "mtcnn"
        *_, summary, shown = handlers.analyse(str(photo), None, False, "haar")
        assert "Unknown detector 'haar': choose one of mtcnn, yunet" in summary and shown is None
    finally:
        demo.close()


def test_facedemo_detector_setting_chooses_the_default_detector():
    from facedemo.app.config import Config, ConfigError

    assert Config.from_env({}).pipeline().detector_id == "mtcnn"
    assert Config.from_env({"FACEDEMO_DETECTOR": "yunet"}).pipeline().detector_id == "yunet"
    with pytest.raises(ConfigError, match="FACEDEMO_DETECTOR: unknown detector 'haar': choose one of mtcnn, yunet"):
        Config.from_env({"FACEDEMO_DETECTOR": "haar"}).pipeline()


def test_pyramid_levels_are_the_same_resampled_on_one_thread_or_several():
    from facedemo.tools.bench import sample_photos

    photo = sample_photos()["1080p"]
    cascade = mtcnn.Cascade()
    sizes = cascade.pyramid(1920, 1080, 21.6)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = mtcnn.Pyramid(photo, sizes)
        torch.set_num_threads(2)
        shared = mtcnn.Pyramid(photo, sizes)
    finally:
        torch.set_num_threads(before)
    assert len(alone.levels) == len(shared.levels) == len(sizes)
    for a, b in zip(alone.levels, shared.levels):
        assert torch.equal(a.pixels, b.pixels) and a.scale == b.scale


def test_bench_counts_pnets_multiply_adds_as_its_layers_compute_them():
    """pnet_analysis's count (2.28 GMAC at 1080p) against hooks on facenet-pytorch's P-net itself."""
    from facedemo.tools.bench import pnet_analysis

    cascade = mtcnn.Cascade()
    counted = {"n": 0}

    def count(layer, inputs, output):
        counted["n"] += output.numel() // output.shape[0] * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups

    net = cascade.pnet
    hooks = [m.register_forward_hook(count) for m in (net.conv1, net.conv2, net.conv3, net.conv4_1, net.conv4_2)]
    with torch.inference_mode():
        for width, height in cascade.pyramid(1920, 1080, 21.6):
            net(torch.zeros(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    figures = pnet_analysis(repeat=1)
    assert figures["gmac"] == round(counted["n"] / 1e9, 3) == pytest.approx(2.276, abs=0.001)
    assert figures["levels"] == 12 and figures["first_level"] == [1067, 600]


def test_detectors_report_compares_both_detectors_with_labels_or_without(pipeline, faces_pd, tmp_path):
    """What `evaluate` adds to its report: recall and precision where the folder is labelled,
    faces found and agreement where it is not."""
    import shutil

    from facedemo.tools.detection_eval import detectors_report

    labelled = detectors_report(pipeline, faces_pd)
    assert set(labelled) == {"labelled", "shrunk"} and set(labelled["labelled"]) == {"mtcnn", "yunet"}
    assert labelled["labelled"]["mtcnn"]["faces"] == 39 and labelled["labelled"]["mtcnn"]["false"] == 0
    for person in ("peggy_whitson", "kenneth_ham"):
        shutil.copytree(faces_pd / person, tmp_path / person)
    plain = detectors_report(pipeline, tmp_path)
    assert plain["mtcnn"]["faces_found"] == plain["yunet"]["faces_found"] == plain["found_by_mtcnn_and_yunet"] == 4
