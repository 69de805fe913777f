"""Stage 3b: how far a detected face can be trusted for recognition: its size, detail and pose.

A small, blurred or strongly turned face gives an unreliable embedding: its nearest enrolled person
is often the wrong one. Such a face is reported as "too poor to decide" instead of being given a
name (matching.decide, `problems`). The limits below come from the calibration set's everyday photos
(../shared/data/calibration/wild) shrunk and blurred on purpose (MODEL_CARD.md, "Face quality").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facedemo.alignment import align
from facedemo.results import Face
from models.registry import TEMPLATE_112

# Below 16 px the calibration faces were not measured (at 16 px SFace still put the right person
# nearest for 144 of 148); detection itself looks for faces of 20 px and more.
MIN_FACE_PX = 16.0
# Detail below 0.04 (blur of 4-8% of the face width, or a face a few pixels wide): the nearest
# enrolled person was the right one for only 48% of such faces with SFace, 35% with dlib's ResNet.
# Sharp photos measure 0.37-0.59 (5th-50th percentile), the grey ORL and Yale sets 0.26-0.43.
MIN_DETAIL = 0.04
# The nose tip at or beyond an eye (head turned about 60 degrees or more): landmarks and embeddings
# of such views are unreliable. Frontal and half-turned calibration faces stay within +-0.5.
MAX_YAW = 1.0

# Reported yaw is clipped to +-10 (a profile, JSON-ready: no infinity).
_YAW_LIMIT = 10.0

# The face inside the 112 x 112 chip (rows, columns), without the background at its corners.
_INNER = (slice(20, 100), slice(16, 96))


@dataclass(frozen=True)
class FaceQuality:
    """How usable one face is for recognition.

    size: the box's shorter side in original-image pixels.
    detail: high-frequency energy of the aligned face relative to its contrast (standard deviation
        of the Laplacian over that of the grey levels, in the 112 x 112 chip); 0 for a flat blur,
        about 0.4-0.6 for a sharp photo. Small faces, enlarged to the chip, show little detail too.
    yaw: the nose tip's offset from the eyes' midpoint along the line of the eyes, in half
        eye-distances: 0 for a frontal face, +-1 with the nose tip in front of an eye.
    problem: why the face is too poor to decide, in words for people; None when it is usable.
    """

    size: float
    detail: float
    yaw: float
    problem: str | None

    @property
    def usable(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict:
        return {"size": round(self.size, 1), "detail": round(self.detail, 3), "yaw": round(self.yaw, 2),
                "problem": self.problem}


def assess(image: np.ndarray, faces: Sequence[Face]) -> list[FaceQuality]:
    """The quality of each face of an H x W x 3 uint8 RGB image (boxes and landmarks in its pixels)."""
    if not faces:
        return []
    pil = Image.fromarray(image)
    return [_assess(pil, face) for face in faces]


def _assess(pil: Image.Image, face: Face) -> FaceQuality:
    size = float(min(face.width, face.height))
    detail = _detail(align(pil, face.landmarks, TEMPLATE_112, 112))
    yaw = _yaw(face.landmarks)
    if size < MIN_FACE_PX:
        problem = f"the face is {size:.0f} px wide (at least {MIN_FACE_PX:.0f} px needed)"
    elif detail < MIN_DETAIL:
        problem = "the face is blurred or too small to show detail"
    elif abs(yaw) >= MAX_YAW:
        problem = "the face is turned too far from the camera"
    else:
        problem = None
    return FaceQuality(size, detail, yaw, problem)


def _detail(chip: np.ndarray) -> float:
    grey = chip.astype(np.float32).mean(axis=2)[_INNER]
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    contrast = float(grey.std())
    return float(laplacian.std()) / contrast if contrast > 1e-3 else 0.0


def _yaw(landmarks) -> float:
    (lx, ly), (rx, ry), (nx, ny) = landmarks[0], landmarks[1], landmarks[2]
    eyes = float(np.hypot(rx - lx, ry - ly))
    if eyes < 1e-6:  # both eyes on one point: a profile
        return _YAW_LIMIT
    along = ((nx - (lx + rx) / 2) * (rx - lx) + (ny - (ly + ry) / 2) * (ry - ly)) / eyes
    return float(np.clip(along / (eyes / 2), -_YAW_LIMIT, _YAW_LIMIT))
