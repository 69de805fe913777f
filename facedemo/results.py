"""What the flow produces: a detected face, and each face of a photo with what recognition concluded.

Plain frozen dataclasses with their units; the stages build them, the app and the tools read them.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from facedemo.embedding import model_spec
from facedemo.matching import Candidate, Decision, Rule, decide

if TYPE_CHECKING:
    from facedemo.quality import FaceQuality

Point = tuple[float, float]

@dataclass(frozen=True)
class Face:
    """One detected face.

    Coordinates are continuous original-image pixels: the pixel in column i, row j covers
    [i, i + 1) x [j, j + 1), so x2 - x1 is the box's width in pixels.
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


@dataclass(frozen=True)
class FaceAnalysis:
    """What detection found (face) and what recognition concluded (decision) for one face.

    candidates: the nearest enrolled subjects, nearest first, kept to decide again without the models.
    quality: size, detail and pose of the face (facedemo.quality); None when not assessed.
    """

    face: Face
    decision: Decision
    candidates: tuple[Candidate, ...] = ()
    quality: FaceQuality | None = None

    def to_dict(self, include_subject_id: bool = False) -> dict:
        """JSON-ready. `subject_id` (the key to a person's stored data, not a result) only when
        asked for, by callers that hold the vault themselves (the CLI); never in the web app."""
        d = self.decision
        data = {
            **self.face.to_dict(),
            "identity": d.identity,
            # + 0.0: a cosine distance of an exact match can come out as -0.0, which reads as a bug.
            "distance": None if d.distance is None else round(d.distance, 5) + 0.0,
            "margin": None if d.margin is None else round(d.margin, 5) + 0.0,
            "reason": d.reason,
            "quality": None if self.quality is None else self.quality.to_dict(),
        }
        if include_subject_id:
            data["subject_id"] = d.subject_id
        return data


@dataclass(frozen=True)
class Analysis:
    """Every face of one photo, left to right.

    width, height: of the photo in pixels. threshold: the decision threshold used, in the
    model's distance unit (the open-set rule's first level; `rule` holds its second level).
    faces_skipped: faces found beyond the per-photo limit, not analysed.
    """

    width: int
    height: int
    model_id: str
    threshold: float
    faces: tuple[FaceAnalysis, ...]
    faces_skipped: int = 0

    def with_threshold(self, threshold: object) -> Analysis:
        """The same faces decided again at another threshold, without running any model.

        ThresholdError for a threshold that is not a number in 0..the model's ceiling.
        """
        rule = Rule.of(model_spec(self.model_id), threshold)
        problems = [None if fa.quality is None else fa.quality.problem for fa in self.faces]
        decisions = decide([fa.candidates for fa in self.faces], rule, problems)
        faces = tuple(replace(fa, decision=d) for fa, d in zip(self.faces, decisions))
        return replace(self, threshold=rule.threshold, faces=faces)

    @property
    def rule(self) -> Rule:
        """The open-set rule these faces were decided with: the model's, at `threshold`."""
        return Rule.of(model_spec(self.model_id), self.threshold)

    def restricted_to(self, subject_ids: Collection[str]) -> Analysis:
        """The same faces with only the candidates still enrolled (`subject_ids`), decided again:
        after a deletion, a kept result must not name the deleted person."""
        faces = tuple(
            replace(fa, candidates=tuple(c for c in fa.candidates if c.subject_id in subject_ids))
            for fa in self.faces
        )
        return replace(self, faces=faces).with_threshold(self.threshold)

    def to_dict(self, include_subject_id: bool = False) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "model": self.model_id,
            "threshold": self.threshold,
            "strict_threshold": self.rule.strict_threshold,
            "loose_threshold": self.rule.loose_threshold,
            "faces_skipped": self.faces_skipped,
            "faces": [fa.to_dict(include_subject_id) for fa in self.faces],
        }
