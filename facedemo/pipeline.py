"""One photo in, detection and recognition of each face out: image -> faces -> chips -> embeddings -> decisions."""
from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from facedemo.alignment import align
from facedemo.config import Config, ConfigError
from facedemo.detection import Detector, Face
from facedemo.recognition import (
    MODELS,
    Candidate,
    Decision,
    Embedder,
    Gallery,
    ModelUnavailable,
    ThresholdError,
    checked_threshold,
    decide,
    model_spec,
    nearest,
)


@dataclass(frozen=True)
class FaceAnalysis:
    """What detection found (face) and what recognition concluded (decision) for one face."""

    face: Face
    decision: Decision
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self, include_subject_id: bool = False) -> dict:
        """JSON-ready. `subject_id` (the key to a person's stored data, not a result) only when
        asked for, by callers that hold the vault themselves (the CLI); never in the web app."""
        d = self.decision
        data = {
            **self.face.to_dict(),
            "identity": d.identity,
            "distance": None if d.distance is None else round(d.distance, 5),
            "margin": None if d.margin is None else round(d.margin, 5),
        }
        if include_subject_id:
            data["subject_id"] = d.subject_id
        return data


@dataclass(frozen=True)
class Analysis:
    """Every face of one photo, left to right.

    width, height: of the photo in pixels. threshold: the decision threshold used, in the
    model's distance unit. faces_skipped: faces found beyond the per-photo limit, not analysed.
    """

    width: int
    height: int
    model_id: str
    threshold: float
    faces: tuple[FaceAnalysis, ...]
    faces_skipped: int = 0

    def with_threshold(self, threshold: object) -> "Analysis":
        """The same faces decided again at another threshold, without running any model.

        ThresholdError for a threshold that is not a number in 0..the model's ceiling.
        """
        threshold = checked_threshold(model_spec(self.model_id), threshold)
        decisions = decide([fa.candidates for fa in self.faces], threshold)
        faces = tuple(replace(fa, decision=d) for fa, d in zip(self.faces, decisions))
        return replace(self, threshold=threshold, faces=faces)

    def restricted_to(self, subject_ids: Collection[str]) -> "Analysis":
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
            "faces_skipped": self.faces_skipped,
            "faces": [fa.to_dict(include_subject_id) for fa in self.faces],
        }


class Pipeline:
    """Owns the detector and the embedding CNNs; each is loaded once, on first use, and shared.

    Safe to call from many threads.
    """

    def __init__(self, config: Config | None = None) -> None:
        """ConfigError when the configured threshold lies above the active model's ceiling."""
        self.config = config or Config()
        try:
            checked_threshold(model_spec(self.config.model), self.config.threshold)
        except ThresholdError as exc:
            raise ConfigError(f"FACEDEMO_THRESHOLD: {exc}") from None
        self._detector: Detector | None = None
        self._embedders: dict[str, Embedder] = {}
        self._load_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def threshold(self) -> float:
        """The active model's decision threshold (distance unit of that model)."""
        if self.config.threshold is not None:
            return self.config.threshold
        return model_spec(self.model_id).default_threshold

    @property
    def detector(self) -> Detector:
        with self._load_lock:
            if self._detector is None:
                self._detector = Detector()
            return self._detector

    def embedder(self, model_id: str | None = None) -> Embedder:
        model_id = model_id or self.model_id
        spec = model_spec(model_id)
        with self._load_lock:
            if model_id not in self._embedders:
                try:
                    self._embedders[model_id] = Embedder(spec)
                except ImportError as exc:
                    raise ModelUnavailable(f"{spec.title} cannot be loaded: {exc}") from exc
            return self._embedders[model_id]

    def installed_models(self) -> list[str]:
        """Every model whose code imports here, the active model first; each is loaded.

        A model whose module cannot be imported is left out (the active one raises
        ModelUnavailable). Weights that are missing or corrupt raise WeightsError: a broken
        install is reported, never skipped in silence.
        """
        available = []
        for model_id in [self.model_id] + [m for m in MODELS if m != self.model_id]:
            try:
                self.embedder(model_id)
            except ModelUnavailable:
                if model_id == self.model_id:
                    raise
                continue
            available.append(model_id)
        return available

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image, left to right."""
        return self.detector.detect(image)

    def embed(self, image: np.ndarray, faces: list[Face], model_id: str | None = None) -> np.ndarray:
        """len(faces) x D embeddings of the faces' aligned chips, in one batched forward pass."""
        embedder = self.embedder(model_id)
        spec = embedder.spec
        pil = Image.fromarray(image)
        chips = np.stack(
            [align(pil, f.landmarks, spec.template, spec.chip_size) for f in faces]
        ) if faces else np.zeros((0, spec.chip_size, spec.chip_size, 3), dtype=np.uint8)
        return embedder.embed(chips)

    def analyse(
        self,
        image: np.ndarray,
        gallery: Gallery | None = None,
        threshold: float | None = None,
    ) -> Analysis:
        """Detect every face, then identify each against `gallery` (unknown when it is empty).

        threshold: model distance units, 0..the model's ceiling; None: the configured one.
        ThresholdError (before any network runs) for anything else.
        """
        spec = model_spec(self.model_id)
        threshold = self.threshold if threshold is None else checked_threshold(spec, threshold)
        faces = self.detect(image)
        # Over the limit, the largest faces are the ones worth the time; the rest are counted.
        limit = self.config.max_faces
        kept = sorted(sorted(faces, key=lambda f: -f.area)[:limit], key=lambda f: (f.box[0], f.box[1]))
        skipped = len(faces) - len(kept)
        gallery = gallery if gallery is not None else Gallery.empty()
        if kept and len(gallery):
            candidates = nearest(self.embed(image, kept), gallery, spec.metric)
        else:
            candidates = [[] for _ in kept]
        decisions = decide(candidates, threshold)
        return Analysis(
            width=image.shape[1],
            height=image.shape[0],
            model_id=self.model_id,
            threshold=threshold,
            faces=tuple(FaceAnalysis(f, d, tuple(c)) for f, d, c in zip(kept, decisions, candidates)),
            faces_skipped=skipped,
        )
