"""The hand-written SFace module computes what OpenCV Zoo's ONNX graph computes (onnxruntime as oracle)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
skimage_transform = pytest.importorskip("skimage.transform")
Image = pytest.importorskip("PIL.Image")

from facedemo.app import examples  # noqa: E402
from models import sface, weights  # noqa: E402
from models.registry import SFACE, TEMPLATE_112  # noqa: E402
from models.weights import WeightsError  # noqa: E402

# Five landmarks (x, y in image pixels: left eye, right eye, nose, mouth left, mouth right)
# found once with facenet-pytorch's MTCNN on the two sample photos; both faces at p >= 0.9998.
ASTRONAUT_LANDMARKS = [(205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9)]
HOPPER_LANDMARKS = [(221.7, 192.2), (309.8, 186.1), (269.4, 239.2), (232.7, 279.6), (306.6, 275.9)]

TOLERANCE = 1e-4  # per embedding component, raw (unnormalised) output


def _similarity_chip_to_image(landmarks) -> np.ndarray:
    """3x3 matrix taking chip (x, y) to image (x, y): least-squares rotation + scale + shift."""
    dst = np.asarray(landmarks, dtype=np.float64)
    src = TEMPLATE_112.astype(np.float64)
    # x' = a x - b y + tx, y' = b x + a y + ty; two equations per point, unknowns (a, b, tx, ty).
    rows = []
    for (x, y) in src:
        rows.append((x, -y, 1.0, 0.0))
        rows.append((y, x, 0.0, 1.0))
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def _aligned_chip(image: np.ndarray, landmarks) -> np.ndarray:
    """112 x 112 x 3 float32 RGB chip, 0..255, aligned to the ArcFace template."""
    chip = skimage_transform.warp(
        image.astype(np.float64),
        _similarity_chip_to_image(landmarks),
        output_shape=(sface.INPUT_SIZE, sface.INPUT_SIZE),
        order=1,
        preserve_range=True,
    )
    return chip.astype(np.float32)


@pytest.fixture(scope="module")
def chips() -> dict[str, np.ndarray]:
    """Named real face chips, each 3 x 112 x 112 float32 RGB 0..255 (CHW, as the networks take)."""
    astronaut, hopper = examples.astronaut(), examples.grace_hopper()
    a = _aligned_chip(astronaut, ASTRONAUT_LANDMARKS)
    h = _aligned_chip(hopper, HOPPER_LANDMARKS)
    # An unaligned square crop around the astronaut's face, resized: still a face, framed differently.
    crop = skimage_transform.resize(
        astronaut[40:200, 145:305].astype(np.float64), (112, 112), order=1, preserve_range=True, anti_aliasing=True
    ).astype(np.float32)
    hwc = {
        "astronaut": a,
        "hopper": h,
        "astronaut_flipped": a[:, ::-1],
        "hopper_flipped": h[:, ::-1],
        "astronaut_shifted": np.roll(a, (4, -3), axis=(0, 1)),
        "hopper_darker": h * 0.6,
        "astronaut_brighter": np.clip(a + 40.0, 0.0, 255.0),
        "astronaut_crop": crop,
    }
    return {name: np.ascontiguousarray(c.transpose(2, 0, 1), dtype=np.float32) for name, c in hwc.items()}


@pytest.fixture(scope="module")
def oracle(chips) -> dict[str, np.ndarray]:
    """onnxruntime's raw 128-D output per chip (its graph takes batch 1 only)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # it warns once per initializer listed as a graph input
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(weights.SFACE.path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return {name: session.run(["fc1"], {"data": chip[None]})[0][0] for name, chip in chips.items()}


@pytest.fixture(scope="module")
def models() -> dict[str, sface.SFace]:
    return {"unfolded": sface.load_sface(fold_batchnorm=False), "folded": sface.load_sface()}


def _run(model: sface.SFace, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("variant", ["unfolded", "folded"])
def test_port_matches_onnxruntime_on_real_faces(models, chips, oracle, variant):
    model = models[variant]
    for name, chip in chips.items():
        ours = _run(model, chip[None])
        assert ours.shape == (1, sface.EMBEDDING_DIM)
        diff = float(np.abs(ours[0] - oracle[name]).max())
        assert diff <= TOLERANCE, f"{variant} {name}: max abs diff {diff:.2e}"


def test_batch_gives_the_same_as_one_at_a_time(models, chips):
    model = models["folded"]
    batch = np.stack(list(chips.values()))
    together = _run(model, batch)
    apart = np.concatenate([_run(model, chip[None]) for chip in batch])
    assert together.shape == (len(chips), sface.EMBEDDING_DIM)
    np.testing.assert_allclose(together, apart, rtol=0, atol=TOLERANCE)


def test_folding_changes_only_rounding(models, chips):
    batch = np.stack(list(chips.values()))
    np.testing.assert_allclose(_run(models["folded"], batch), _run(models["unfolded"], batch), rtol=0, atol=TOLERANCE)


def test_embed_returns_unit_length_raw_embedding_directions(models, chips):
    model = models["folded"]
    x = torch.from_numpy(np.stack(list(chips.values())))
    with torch.inference_mode():
        raw = model(x)
        unit = model.embed(x)
    np.testing.assert_allclose(torch.linalg.vector_norm(unit, dim=1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit.numpy(), sface.l2_normalise(raw).numpy(), atol=1e-7)
    np.testing.assert_allclose(unit.numpy() * torch.linalg.vector_norm(raw, dim=1, keepdim=True).numpy(), raw.numpy(), atol=1e-5)


def test_same_person_is_closer_than_another_person(models, chips):
    # Guards the input convention (RGB, 0..255, CHW): a swapped channel order or scale still
    # runs, but stops telling people apart.
    x = torch.from_numpy(np.stack([chips["astronaut"], chips["astronaut_flipped"], chips["hopper"], chips["hopper_darker"]]))
    with torch.inference_mode():
        e = models["folded"].embed(x)
    cos = (e @ e.T).numpy()
    assert cos[0, 1] > 0.5 and cos[2, 3] > 0.5
    assert max(cos[0, 2], cos[1, 3]) < 0.3


def test_any_batch_size_and_uint8_input(models, chips):
    chip = chips["hopper"]
    with torch.inference_mode():
        single = models["folded"](torch.from_numpy(chip[None]))
        as_bytes = models["folded"](torch.from_numpy(np.round(chip).astype(np.uint8)[None].repeat(3, axis=0)))
        rounded = models["folded"](torch.from_numpy(np.round(chip)[None]))
    assert single.shape == (1, 128) and as_bytes.shape == (3, 128)
    np.testing.assert_allclose(as_bytes.numpy(), rounded.numpy().repeat(3, axis=0), atol=TOLERANCE)


def test_wrong_input_shape_is_refused(models):
    with pytest.raises(ValueError, match="112"):
        models["folded"](torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="112"):
        models["folded"](torch.zeros(3, 112, 112))


def test_loaded_model_is_for_inference(models):
    for model in models.values():
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())


def test_file_with_one_flipped_byte_is_refused(tmp_path):
    altered = tmp_path / "sface.onnx"
    shutil.copyfile(weights.SFACE.path(), altered)
    with open(altered, "r+b") as f:
        f.seek(weights.SFACE.size // 2)  # inside pre_fc1_weight's data: the file would still parse
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(WeightsError, match="not the pinned SFace file"):
        sface.load_sface(altered)


def test_pinned_file_given_by_path_loads(tmp_path, models, chips):
    copy = tmp_path / "sface.onnx"
    shutil.copyfile(weights.SFACE.path(), copy)
    model = sface.load_sface(copy)
    np.testing.assert_array_equal(_run(model, chips["hopper"][None]), _run(models["folded"], chips["hopper"][None]))


def test_layers_of_the_wrong_shape_are_named():
    arrays = sface._read_initializers(weights.SFACE.path())
    arrays["conv_5_conv2d_weight"] = arrays["conv_5_conv2d_weight"][:128]
    del arrays["fc1_moving_var"]
    with pytest.raises(WeightsError) as err:
        sface._assign_initializers(sface.SFace(), arrays, "test file")
    message = str(err.value)
    assert "conv_5_conv2d_weight has shape (128, 128, 1, 1), expected (256, 128, 1, 1)" in message
    assert "missing fc1_moving_var" in message


def test_the_registry_describes_the_network_it_loads(models):
    spec = SFACE
    out = _run(models["folded"], np.zeros((1, 3, spec.chip_size, spec.chip_size), np.float32))
    assert out.shape == (1, spec.embedding_dim)
    # The alignment template puts every landmark inside the chip the network takes.
    assert spec.template.shape == (5, 2) and ((0 < spec.template) & (spec.template < spec.chip_size)).all()
    assert spec.weights is weights.SFACE and spec.load().__class__ is sface.SFace
