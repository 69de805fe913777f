"""Find faces in an RGB photo: boxes, 5 landmarks and confidence, in original-image pixels.

Two detectors: MTCNN (facenet-pytorch's P/R/O-nets, run by models/mtcnn.py; the default) and YuNet
(OpenCV Zoo's, run by models/yunet.py). Both are wrapped in the same policies (`Detector`).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from PIL import Image

from facedemo.results import Face

# Where one face per photo is wanted, a box must reach this confidence to beat a larger one:
# helmets and suit patches are detected at 0.7-0.97 and can be larger than the real face.
CONFIDENT = 0.99

DETECTORS = ("mtcnn", "yunet")
DEFAULT_DETECTOR = "mtcnn"

# MTCNN's P-, R- and O-net thresholds. With YuNet's second opinion the last one applies to the mean
# of O-net's and YuNet's scores for a doubtful box: 0.65 kept as many real faces as the mirror rule
# at 0.7 (427 of 432 in detection_eval's sets and a set of 60 faces at the border) with 2 false
# faces instead of 18; 0.7 lost 4 more real faces, 0.6 let one more false face through. P-net at
# 0.7 instead of MTCNN's 0.6 found the same 427 faces (and 96 of the 100 upscaled lfw_subset faces)
# from a quarter fewer candidates: 1080p detection 92 -> 84 ms.
THRESHOLDS = {"yunet": (0.7, 0.7, 0.65), "mirror": (0.6, 0.7, 0.7)}
# YuNet's score threshold. On detection_eval's four sets (372 faces) OpenCV Zoo's 0.9 found 290;
# 0.75 found 352 with no false face, 0.7 found 358 with 8 false faces, 0.6 364 with 36.
YUNET_THRESHOLD = 0.75


class DetectorError(ValueError):
    """A detector name that is not one of DETECTORS."""


def detector_name(name: str | None) -> str:
    """The detector id for `name` (None: the default); DetectorError naming the choices otherwise."""
    if name is None:
        return DEFAULT_DETECTOR
    key = str(name).strip().lower()
    if key not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")
    return key


def primary_face(faces: Sequence[Face]) -> Face | None:
    """The face a one-face photo is about: the largest confident face, else the largest face."""
    confident = [f for f in faces if f.score >= CONFIDENT]
    pool = confident or list(faces)
    return max(pool, key=lambda f: f.area, default=None)


class Detector:
    """One face detector (`name`: "mtcnn" or "yunet") with the policies a demo needs.

    - Photos with a long side over `max_side` px are shrunk for detection (bounded time and
      memory), photos with a long side under `min_side` px are enlarged (MTCNN needs faces of
      >= 12 px with some context around them).
    - Faces are searched for down to `min_face` px or `min_face_fraction` of the short side,
      whichever is larger (both in the working image), so MTCNN's first and most expensive
      pyramid level has a short side of at most 12 / fraction = 480 px. With the defaults a
      1920 x 1080 photo is searched down to 27 px faces (facenet-pytorch's defaults: 20 px;
      2% of the short side, 21.6 px, made our detection 2.6x faster than theirs instead of
      3.2x), and any photo with a short side of <= 800 px down to 20 px. YuNet reports faces of
      that size and more.
    - A photo whose face reaches past the border is padded and detected again, because the
      landmarks go wrong on a face cut by the frame.
    Safe to call from many threads.
    """

    def __init__(
        self,
        name: str = DEFAULT_DETECTOR,
        max_side: int = 1920,
        min_side: int = 160,
        min_face: float = 20.0,
        min_face_fraction: float = 0.025,
        thresholds: tuple[float, float, float] | None = None,
        second_opinion: str = "yunet",
    ) -> None:
        """thresholds: MTCNN's P-, R- and O-net thresholds; None: THRESHOLDS[second_opinion].
        second_opinion: who judges MTCNN's doubtful faces (O-net from 2t - 1 to 0.99), "yunet" or "mirror"
        (O-net on the mirror image, models.mtcnn's own rule); see models/MODEL_CARD.md.
        """
        self.name = detector_name(name)
        self.max_side = max_side
        self.min_side = min_side
        self.min_face = min_face
        self.min_face_fraction = min_face_fraction
        if self.name == "mtcnn":
            from models.mtcnn import Cascade
            from models.yunet import Runner

            if second_opinion not in ("yunet", "mirror"):
                raise DetectorError(f"second_opinion must be 'yunet' or 'mirror', not {second_opinion!r}")
            # YuNet's score on a crop around each doubtful box, averaged with O-net's: on our
            # labelled and generated photos it kept every real face the mirror rule kept and more,
            # with a third of the false faces (models/MODEL_CARD.md, "Precision and recall").
            opinion = Runner().opinion if second_opinion == "yunet" else None
            self._run = Cascade(thresholds or THRESHOLDS[second_opinion], second_opinion=opinion)
        else:
            from models.yunet import Runner

            self._run = Runner(score_threshold=YUNET_THRESHOLD)
        # The networks are thread-safe on their own; one detection at a time keeps latency
        # predictable on 2 cores (two at once would share torch's threads and both be late).
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image, sorted left to right; [] when there is none."""
        long_side = max(image.shape[:2])
        scale = 1.0
        if long_side > self.max_side:
            scale = self.max_side / long_side
        elif long_side < self.min_side:
            scale = self.min_side / long_side
        work = _resize(image, scale)
        faces = self._detect_scaled(work)
        if any(_touches_border(f, work.shape) for f in faces):
            pad = int(round(0.25 * max(work.shape[:2])))
            padded = np.pad(work, ((pad, pad), (pad, pad), (0, 0)), mode="constant",
                            constant_values=int(work.mean()))
            faces = [_shift(f, -pad) for f in self._detect_scaled(padded)]
        fx, fy = image.shape[1] / work.shape[1], image.shape[0] / work.shape[0]
        faces = [_map_back(f, fx, fy) for f in faces]
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

    def _detect_scaled(self, image: np.ndarray) -> list[Face]:
        min_face = max(self.min_face, self.min_face_fraction * min(image.shape[:2]))
        with self._lock:
            found = self._run(np.ascontiguousarray(image), min_face)
        return [
            Face(
                box=tuple(float(v) for v in box),
                score=float(score),
                landmarks=tuple((float(x), float(y)) for x, y in points),
            )
            for box, score, points in zip(found.boxes, found.scores, found.landmarks)
        ]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize(size, resample))


def _touches_border(face: Face, shape: tuple[int, ...]) -> bool:
    x1, y1, x2, y2 = face.box
    return x1 < 0 or y1 < 0 or x2 > shape[1] or y2 > shape[0]


def _shift(face: Face, offset: float) -> Face:
    return Face(
        box=tuple(v + offset for v in face.box),
        score=face.score,
        landmarks=tuple((x + offset, y + offset) for x, y in face.landmarks),
    )


def _map_back(face: Face, fx: float, fy: float) -> Face:
    """Coordinates in a resized copy -> original pixels; fx, fy: original px per copy px.

    Continuous coordinates scale exactly: the copy's edge x = w is the original's edge x = W.
    """
    if fx == 1.0 and fy == 1.0:
        return face
    x1, y1, x2, y2 = face.box
    return Face(
        box=(x1 * fx, y1 * fy, x2 * fx, y2 * fy),
        score=face.score,
        landmarks=tuple((x * fx, y * fy) for x, y in face.landmarks),
    )
