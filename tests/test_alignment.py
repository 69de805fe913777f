"""Alignment: a similarity transform puts the 5 landmarks on the model's template."""
import numpy as np
import pytest

from facedemo.alignment import align, similarity_transform
from models.registry import TEMPLATE_112, TEMPLATE_150


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_similarity_transform_refuses_coincident_points():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), TEMPLATE_150)


def dots_image(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Gaussian dots centred exactly on `points` (pixel-centre coordinates)."""
    ys, xs = np.mgrid[: size[1], : size[0]].astype(float)
    sigma = max(1.5, size[0] / 120)
    grey = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return np.repeat((255 * np.clip(grey, 0, 1)).astype(np.uint8)[:, :, None], 3, axis=2)


def centroids(chip: np.ndarray, template: np.ndarray) -> np.ndarray:
    grey = chip[:, :, 0].astype(float)
    ys, xs = np.mgrid[: grey.shape[0], : grey.shape[1]]
    found = []
    for tx, ty in template:
        near = ((xs - tx) ** 2 + (ys - ty) ** 2 < 8**2) * grey
        found.append(((xs * near).sum() / near.sum(), (ys * near).sum() / near.sum()))
    return np.array(found)


@pytest.mark.parametrize("face_scale", [1.0, 6.0])  # 6x: goes through the box-filter reduction
def test_landmarks_land_on_the_template(face_scale):
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (TEMPLATE_150 - 75) @ rot.T * face_scale + 75 * face_scale + 30
    size = int(150 * face_scale + 60)
    chip = align(dots_image(points, (size, size)), points)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    np.testing.assert_allclose(centroids(chip, TEMPLATE_150), TEMPLATE_150, atol=0.5)


def test_chip_size_and_template_follow_the_model():
    points = TEMPLATE_112 * 2 + 10
    chip = align(dots_image(points, (260, 260)), points, TEMPLATE_112, 112)
    assert chip.shape == (112, 112, 3)
    np.testing.assert_allclose(centroids(chip, TEMPLATE_112), TEMPLATE_112, atol=0.5)
