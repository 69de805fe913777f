"""The hand-written YuNet module finds what OpenCV's FaceDetectorYN finds (OpenCV and onnxruntime as oracles)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from facedemo.images import load  # noqa: E402
from models import weights, yunet  # noqa: E402
from models.weights import WeightsError  # noqa: E402

TOLERANCE = 1e-4  # pixels for boxes and landmarks (float32 rounding at ~1000 px is 6e-5), and score units


@pytest.fixture(scope="module")
def model() -> yunet.YuNet:
    return yunet.load_yunet()


def shipped_photos(faces_pd) -> dict[str, np.ndarray]:
    from facedemo.app import examples

    photos = {p.name: load(p) for p in sorted(faces_pd.glob("*/*.jpg"))}
    photos.update(examples.photos())
    return photos


def opencv_faces(image: np.ndarray, score_threshold: float) -> np.ndarray:
    """cv2.FaceDetectorYN's rows (x, y, w, h, 5 landmarks, score) with OpenCV Zoo's settings."""
    height, width = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(
        str(weights.YUNET.path()), "", (width, height), score_threshold, yunet.NMS_THRESHOLD, yunet.TOP_K
    )
    _, faces = detector.detect(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV takes BGR
    return np.zeros((0, 15), np.float32) if faces is None else faces


def ours(model: yunet.YuNet, image: np.ndarray, score_threshold: float) -> yunet.Detections:
    with torch.inference_mode():
        return yunet.decode(model(yunet.net_input(image)), score_threshold)


@pytest.mark.parametrize("score_threshold", [yunet.SCORE_THRESHOLD, 0.5])
def test_every_shipped_photo_gives_opencvs_faces(model, faces_pd, score_threshold):
    """Same faces in the same order, boxes and landmarks within 1e-4 px, scores within 1e-4; at
    OpenCV Zoo's threshold and at 0.5, where doubtful boxes (upside-down faces) also pass."""
    compared = 0
    for name, image in shipped_photos(faces_pd).items():
        want = opencv_faces(image, score_threshold)
        got = ours(model, image, score_threshold)
        assert len(got.scores) == len(want), name
        boxes = np.concatenate([want[:, :2], want[:, :2] + want[:, 2:4]], axis=1)
        np.testing.assert_allclose(got.boxes, boxes, rtol=0, atol=TOLERANCE, err_msg=name)
        np.testing.assert_allclose(got.landmarks, want[:, 4:14].reshape(-1, 5, 2), rtol=0, atol=TOLERANCE, err_msg=name)
        np.testing.assert_allclose(got.scores, want[:, 14], rtol=0, atol=TOLERANCE, err_msg=name)
        compared += len(want)
    assert compared >= 25


def test_raw_outputs_match_onnxruntime(model, astronaut):
    """The network itself, before any decoding, on the graph's own 640 x 640 input."""
    ort = pytest.importorskip("onnxruntime")
    from PIL import Image

    image = np.asarray(Image.fromarray(astronaut).resize((640, 640)))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(weights.YUNET.path()), options, providers=["CPUExecutionProvider"])
    bgr = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": bgr})))
    with torch.inference_mode():
        outputs = model(yunet.net_input(image))
    for stride, out in zip(yunet.STRIDES, outputs):
        cells = out[0].flatten(1).T.numpy()  # (h w) x 16, row-major cells as the graph lists them
        got = {
            f"cls_{stride}": 1 / (1 + np.exp(-cells[:, 0:1])),
            f"obj_{stride}": 1 / (1 + np.exp(-cells[:, 1:2])),
            f"bbox_{stride}": cells[:, 2:6],
            f"kps_{stride}": cells[:, 6:16],
        }
        for name, value in got.items():
            np.testing.assert_allclose(value, want[name][0], rtol=0, atol=2e-5, err_msg=name)


def test_photo_sizes_are_padded_to_multiples_of_32(model):
    assert yunet.padded_size(1920, 1080) == (1920, 1088)
    assert yunet.padded_size(33, 32) == (64, 32)
    pixels = yunet.net_input(np.full((50, 70, 3), 255, np.uint8))
    assert pixels.shape == (1, 3, 64, 96)
    assert pixels[0, :, :50, :70].min() == 255 and pixels[0, :, 50:].max() == 0 and pixels[0, :, :, 70:].max() == 0


def test_input_not_padded_to_multiples_of_32_is_refused(model):
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 50, 64))


def test_yunet_weights_are_checked_against_their_pinned_hash(monkeypatch):
    monkeypatch.setattr(weights, "YUNET", replace(weights.YUNET, sha256="0" * 64))
    with pytest.raises(WeightsError, match="face_detection_yunet_2023mar.onnx is corrupt or modified"):
        yunet.load_yunet()


def test_yunet_weight_file_is_the_pinned_one():
    path = weights.YUNET.path()
    assert path.stat().st_size == weights.YUNET.size == 232_589
    assert weights.file_sha256(path) == weights.YUNET.sha256


def test_yunets_opinion_of_a_box_is_its_score_for_a_face_there(astronaut):
    runner = yunet.Runner()
    face = [[178.0, 63.0, 268.0, 176.0]]  # her face, as both detectors frame it
    suit, outside = [[300.0, 350.0, 360.0, 410.0]], [[-200.0, -200.0, -150.0, -150.0]]
    scores = runner.opinion(astronaut, torch.tensor(face + suit + outside))
    assert scores[0] > 0.9 and scores[1] < 0.3 and scores[2] == 0.0
    assert runner.opinion(astronaut, torch.zeros((0, 4))).shape == (0,)
