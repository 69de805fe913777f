"""The Python API in a handful of plain functions; models load on first use, once per process.

Every function takes the photo as a path, bytes, a PIL image or an H x W x 3 uint8 RGB array, checked
against the image limits (20 MB encoded, 40 megapixels by default; `set_image_limits` changes them),
and an explicit `model=` ("sface_2021dec", the default, or "dlib_resnet_v1"); nothing depends on
environment variables. Distances are "smaller is more alike" in the model's unit (1 - cosine for
SFace, L2 for dlib), and the model's calibrated threshold decides "same person".
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facedemo.embedding import model_spec
from facedemo.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageSource, load
from facedemo.matching import Gallery, Subject, checked_threshold, distances
from facedemo.pipeline import Pipeline
from facedemo.results import Analysis, Face
from models.registry import DEFAULT_MODEL

_pipelines: dict[str, Pipeline] = {}
_lock = threading.Lock()
_limits = {"max_bytes": DEFAULT_MAX_BYTES, "max_pixels": DEFAULT_MAX_PIXELS}


def pipeline(model: str = DEFAULT_MODEL) -> Pipeline:
    """The process-wide pipeline of `model` behind these functions (its networks load once)."""
    with _lock:
        if model not in _pipelines:
            _pipelines[model] = Pipeline(model)
        return _pipelines[model]


def set_image_limits(max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """The limits every function checks a photo against: encoded bytes and decoded pixels."""
    if max_bytes < 1024 or max_pixels < 4096:
        raise ValueError("the limits must be at least 1024 bytes and 4096 pixels")
    _limits.update(max_bytes=max_bytes, max_pixels=max_pixels)


def load_image(source: ImageSource) -> np.ndarray:
    """A photo as an H x W x 3 uint8 RGB array (EXIF orientation applied); ImageError when it cannot be."""
    return load(source, **_limits)


def detect_faces(image: ImageSource) -> list[Face]:
    """Faces left to right: box (x1, y1, x2, y2) and 5 landmarks in original-image pixels, score 0..1.
    An empty list when there is no face."""
    return pipeline().detect(load_image(image))


def face_embeddings(image: ImageSource, faces: Sequence[Face] | None = None, model: str = DEFAULT_MODEL) -> np.ndarray:
    """N x 128 float32 embeddings of `model`, one per face (every detected face when `faces` is None)."""
    pixels = load_image(image)
    chosen = pipeline(model)
    return chosen.embed(pixels, chosen.detect(pixels) if faces is None else list(faces))


def face_distance(known: np.ndarray, candidate: np.ndarray, model: str = DEFAULT_MODEL) -> np.ndarray:
    """Distance of one embedding (128,) to each of `known` (N x 128), in `model`'s unit."""
    return distances(np.atleast_2d(candidate), np.atleast_2d(known), model_spec(model).metric)[0]


def compare_faces(
    known: np.ndarray, candidate: np.ndarray, threshold: float | None = None, model: str = DEFAULT_MODEL
) -> list[bool]:
    """For each of `known` (N x 128), whether `candidate` (128,) is the same person: its distance is
    below `threshold` (None: the model's calibrated default; at most the model's ceiling)."""
    limit = checked_threshold(model_spec(model), threshold)
    return [bool(d < limit) for d in face_distance(known, candidate, model)]


def gallery_from_embeddings(
    names: Sequence[str], embeddings: Sequence[np.ndarray], model: str = DEFAULT_MODEL
) -> Gallery:
    """A gallery of people: names[i] with embeddings[i] (k x 128, or one 128 vector) of `model`.
    A name given twice is one person with all their embeddings."""
    if len(names) != len(embeddings):
        raise ValueError(f"{len(names)} names but {len(embeddings)} sets of embeddings")
    rows: dict[str, list[np.ndarray]] = {}
    for name, vectors in zip(names, embeddings):
        rows.setdefault(name, []).append(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
    return Gallery.from_subjects([Subject(n, n, np.concatenate(v)) for n, v in rows.items()], model_spec(model).model_id)


def gallery_from_folder(directory: str | Path, model: str = DEFAULT_MODEL) -> Gallery:
    """A gallery from a person-per-folder directory (DIR/<name>/<photo>): one embedding per photo's
    main face; photos that cannot be read or show no face are skipped."""
    from facedemo.tools.dataset import gallery_from_folder as build

    return build(pipeline(model), directory, model)


def analyse(image: ImageSource, gallery: Gallery | None = None, threshold: float | None = None) -> Analysis:
    """Detection and recognition of every face against `gallery` (all unknown without one), with the
    gallery's model. threshold: None for the model's default, at most its ceiling."""
    model = gallery.model_id if gallery is not None else DEFAULT_MODEL
    return pipeline(model).analyse(load_image(image), gallery, threshold)
