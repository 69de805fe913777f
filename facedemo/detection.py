"""Find faces in an RGB photo with MTCNN: boxes, 5 landmarks and confidence, in original-image pixels."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

Point = tuple[float, float]

# Where one face per photo is wanted, a box must reach this confidence to beat a larger one:
# helmets and suit patches are detected at 0.7-0.97 and can be larger than the real face.
CONFIDENT = 0.99


@dataclass(frozen=True)
class Face:
    """One detected face.

    box: (x1, y1, x2, y2) in original-image pixels; may reach past the image border.
    score: detector confidence, 0..1.
    landmarks: five (x, y) points in original-image pixels, in the order
        left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the photo).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, Point, Point, Point, Point]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self) -> dict:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
        }


def primary_face(faces: Sequence[Face]) -> Face | None:
    """The face a one-face photo is about: the largest confident face, else the largest face."""
    confident = [f for f in faces if f.score >= CONFIDENT]
    pool = confident or list(faces)
    return max(pool, key=lambda f: f.area, default=None)


class Detector:
    """MTCNN (facenet-pytorch's pretrained P/R/O-nets) with the policies a demo needs.

    Big photos are shrunk to `max_side` pixels for detection, small ones enlarged to
    `min_side`, and a photo whose face reaches past the border is padded and detected again,
    because MTCNN's landmarks go wrong on a face cut by the frame.
    """

    def __init__(
        self,
        max_side: int = 1600,
        min_side: int = 160,
        min_face_fraction: float = 0.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> None:
        from facenet_pytorch import MTCNN

        self.max_side = max_side
        self.min_side = min_side
        self.min_face_fraction = min_face_fraction
        self._mtcnn = MTCNN(keep_all=True, thresholds=list(thresholds), device="cpu")
        self._mtcnn.eval()
        # facenet-pytorch keeps per-call state in plain tensors only, but torch's thread pool
        # is shared: one detection at a time keeps latency predictable on 2 cores.
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
        min_face = max(20, int(self.min_face_fraction * min(image.shape[:2])))
        self._mtcnn.min_face_size = min_face
        with self._lock, _torch_inference():
            boxes, probs, points = self._mtcnn.detect(Image.fromarray(image), landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float32).reshape(-1)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        return [
            Face(
                box=tuple(float(v) for v in b),
                score=float(p),
                landmarks=tuple((float(x), float(y)) for x, y in pts),
            )
            for b, p, pts in zip(boxes, probs, points)
        ]


def _torch_inference():
    import torch

    return torch.inference_mode()


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
    """Coordinates in a resized copy -> original pixels (pixel centres stay centres)."""
    if fx == 1.0 and fy == 1.0:
        return face

    def x(v: float) -> float:
        return (v + 0.5) * fx - 0.5

    def y(v: float) -> float:
        return (v + 0.5) * fy - 0.5

    x1, y1, x2, y2 = face.box
    return Face(
        box=(x(x1), y(y1), x(x2), y(y2)),
        score=face.score,
        landmarks=tuple((x(px), y(py)) for px, py in face.landmarks),
    )
