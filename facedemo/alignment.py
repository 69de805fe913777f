"""Cut an aligned face chip out of a photo: a similarity transform from 5 landmarks to a model's template."""
from __future__ import annotations

import numpy as np
from PIL import Image

from models.registry import DLIB_RESNET


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking points `src` onto `dst`.

    src, dst: N x 2 (x, y) pixels, N >= 2. Returns the 2 x 3 matrix M with dst ~ M @ [x, y, 1]
    (Umeyama's closed form, reflection excluded).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("landmarks are all at one point; cannot align")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align(
    image: np.ndarray | Image.Image,
    landmarks,
    template: np.ndarray = DLIB_RESNET.template,
    size: int = DLIB_RESNET.chip_size,
) -> np.ndarray:
    """Aligned chip: size x size x 3 uint8 RGB, the 5 landmarks moved onto `template` (pixels).

    `image` is H x W x 3 uint8 RGB (or a PIL image of it, to reuse one conversion for many
    faces); `landmarks` are 5 (x, y) points in image pixels. Faces more than twice the chip's
    size are box-filtered down first, so the bilinear warp does not alias.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    forward = similarity_transform(points, template)
    # Image pixels per chip pixel: the inverse of the warp's scale.
    factor = int(1.0 / np.sqrt(abs(np.linalg.det(forward[:, :2]))))
    if factor >= 2:
        pil, points = _reduce_around(pil, forward, points, size, factor)
    # Landmarks and template count pixel centres from 0; Pillow's transform puts them at +0.5.
    forward = similarity_transform(points + 0.5, template + 0.5)
    chip = pil.transform(
        (size, size),
        Image.Transform.AFFINE,
        data=tuple(_invert(forward).reshape(-1)),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(chip, dtype=np.uint8)


def _invert(affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]


def _reduce_around(pil: Image.Image, forward: np.ndarray, points: np.ndarray, size: int, factor: int):
    """Crop the region the chip will sample from and box-filter it by an integer `factor`.

    Returns the reduced region and the landmarks in its pixels.
    """
    inverse = _invert(forward)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    mapped = corners @ inverse.T
    margin = 2 * factor
    left = int(np.floor(mapped[:, 0].min())) - margin
    top = int(np.floor(mapped[:, 1].min())) - margin
    right = int(np.ceil(mapped[:, 0].max())) + margin
    bottom = int(np.ceil(mapped[:, 1].max())) + margin
    # Align the crop to the factor grid so each output pixel averages a whole factor x factor block.
    right = left + factor * max(1, (right - left + factor - 1) // factor)
    bottom = top + factor * max(1, (bottom - top + factor - 1) // factor)
    region = pil.crop((left, top, right, bottom)).reduce(factor)
    # A pixel centre c in the crop lands at (c + 0.5) / factor - 0.5 in the reduced image.
    reduced_points = (points - [left, top] + 0.5) / factor - 0.5
    return region, reduced_points
