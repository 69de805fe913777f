"""The example photos: public-domain portraits shipped inside installed packages, nothing downloaded.

Eileen Collins (scikit-image's `astronaut`, NASA) and Grace Hopper (matplotlib's sample data, US
Navy), and a group photo made of both. The app offers them under its upload box; the load test,
the benchmark and the tests use the same ones. A package that is missing just means fewer examples.
"""
from __future__ import annotations

import functools
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image


@functools.cache
def astronaut() -> np.ndarray:
    """Eileen Collins, 512 x 512 x 3 uint8 RGB."""
    from skimage import data

    return data.astronaut()


@functools.cache
def grace_hopper() -> np.ndarray:
    """Grace Hopper, 600 x 512 x 3 uint8 RGB."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 24) -> np.ndarray:
    """Both photos at the height of the shorter one, next to each other on a grey background."""
    height = min(left.shape[0], right.shape[0])
    parts = [
        np.asarray(Image.fromarray(p).resize((round(p.shape[1] * height / p.shape[0]), height), Image.Resampling.LANCZOS))
        for p in (left, right)
    ]
    canvas = np.full((height, parts[0].shape[1] + gap + parts[1].shape[1], 3), 200, dtype=np.uint8)
    canvas[:, : parts[0].shape[1]] = parts[0]
    canvas[:, parts[0].shape[1] + gap :] = parts[1]
    return canvas


def photos() -> dict[str, np.ndarray]:
    """The examples whose packages are installed: "astronaut", "grace_hopper" and, with both, "group"."""
    found: dict[str, np.ndarray] = {}
    if find_spec("skimage") is not None:
        found["astronaut"] = astronaut()
    if find_spec("matplotlib") is not None:
        found["grace_hopper"] = grace_hopper()
    if len(found) == 2:
        found["group"] = side_by_side(found["astronaut"], found["grace_hopper"])
    return found


def write(directory: Path) -> list[Path]:
    """Each example as `directory`/<name>.jpg (for gr.Examples and for uploads); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pixels in photos().items():
        path = directory / f"{name}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths
