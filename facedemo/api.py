"""The Python API in a handful of plain functions; models load on first use, once per process."""
from __future__ import annotations

import threading

import numpy as np

from facedemo.detection import Face
from facedemo.images import ImageSource, load
from facedemo.pipeline import Analysis, Pipeline
from facedemo.recognition import Gallery, distances, model_spec

_default: Pipeline | None = None
_default_lock = threading.Lock()


def default_pipeline() -> Pipeline:
    """The process-wide pipeline behind these functions (settings from the environment)."""
    global _default
    with _default_lock:
        if _default is None:
            from facedemo.config import Config

            _default = Pipeline(Config.from_env())
        return _default


def load_image(source: ImageSource) -> np.ndarray:
    """A photo (path, bytes, PIL image or array) as an H x W x 3 uint8 RGB array; raises ImageError."""
    return load(source)


def detect_faces(image: ImageSource) -> list[Face]:
    """Faces left to right: box (x1, y1, x2, y2) and 5 landmarks in pixels, score 0..1. [] if none."""
    return default_pipeline().detect(load(image))


def face_embeddings(image: ImageSource, faces: list[Face] | None = None, model: str | None = None) -> np.ndarray:
    """N x 128 float32 embeddings, one per face (all detected faces when `faces` is None)."""
    pixels = load(image)
    pipeline = default_pipeline()
    return pipeline.embed(pixels, pipeline.detect(pixels) if faces is None else faces, model)


def face_distance(known: np.ndarray, embedding: np.ndarray, model: str | None = None) -> np.ndarray:
    """Distance of one embedding (128,) to each of `known` (N x 128): L2 for dlib, 1 - cosine for SFace.

    Same person typically below the model's threshold (`default_pipeline().threshold`).
    """
    spec = model_spec(model or default_pipeline().model_id)
    return distances(np.atleast_2d(embedding), np.atleast_2d(known), spec.metric)[0]


def analyse(image: ImageSource, gallery: Gallery | None = None) -> Analysis:
    """Detection and recognition of every face against `gallery` (all unknown without one)."""
    return default_pipeline().analyse(load(image), gallery)
