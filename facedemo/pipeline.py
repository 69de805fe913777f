"""One photo in, detection and recognition of each face out: image -> faces -> chips -> embeddings -> decisions."""
from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from facedemo.alignment import align
from facedemo.detection import DEFAULT_DETECTOR, DETECTORS, Detector, detector_name
from facedemo.embedding import Embedder, ModelUnavailable, model_spec
from facedemo.matching import Gallery, Rule, checked_threshold, decide, nearest
from facedemo.quality import assess
from facedemo.results import Analysis, Face, FaceAnalysis
from models.registry import DEFAULT_MODEL, MODELS

# Faces analysed per photo by default; beyond it the largest are kept and the rest counted.
MAX_FACES = 40


class Pipeline:
    """Owns the detectors and the embedding CNNs; each is loaded once, on first use, and shared.

    Safe to call from many threads.
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, threshold: float | None = None, max_faces: int = MAX_FACES,
        detector: str = DEFAULT_DETECTOR,
    ) -> None:
        """model: a registry id (models.registry.MODELS); threshold: its decision threshold in the
        model's distance unit, None for the calibrated default; max_faces: faces analysed per photo;
        detector: the default face detector, one of facedemo.detection.DETECTORS.

        ModelUnavailable for an unknown model, ThresholdError for a threshold above the ceiling,
        DetectorError for an unknown detector.
        """
        self._model_id = model_spec(model).model_id
        self._threshold = checked_threshold(model_spec(model), threshold)
        self.max_faces = max_faces
        self._detector_id = detector_name(detector)
        self._detectors: dict[str, Detector] = {}
        self._embedders: dict[str, Embedder] = {}
        self._load_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def threshold(self) -> float:
        """The active model's decision threshold (distance unit of that model)."""
        return self._threshold

    @property
    def detector_id(self) -> str:
        """The detector used when a call names none."""
        return self._detector_id

    def detector(self, name: str | None = None) -> Detector:
        """The detector `name` (None: the default one), loaded on first use; DetectorError for an unknown name."""
        name = detector_name(name) if name is not None else self._detector_id
        with self._load_lock:
            if name not in self._detectors:
                self._detectors[name] = Detector(name)
            return self._detectors[name]

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

    def warm_up(self, model_ids: list[str] | None = None) -> None:
        """Load the detectors and the given embedding models (default: the active one) and run each
        once, so that the first request is as fast as the rest."""
        for name in [self.detector_id] + [d for d in DETECTORS if d != self.detector_id]:
            self.detect(np.full((160, 160, 3), 128, dtype=np.uint8), name)
        for model_id in model_ids or [self.model_id]:
            spec = model_spec(model_id)
            self.embedder(model_id).embed(np.zeros((1, spec.chip_size, spec.chip_size, 3), np.uint8))

    def detect(self, image: np.ndarray, detector: str | None = None) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image, left to right; detector: None for the default."""
        return self.detector(detector).detect(image)

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
        detector: str | None = None,
    ) -> Analysis:
        """Detect every face, then identify each against `gallery` (unknown when it is empty).

        threshold: model distance units, 0..the model's ceiling; None: the configured one.
        ThresholdError (before any network runs) for anything else.
        detector: one of facedemo.detection.DETECTORS; None: the configured one (DetectorError
        before any network runs for another name).
        """
        spec = model_spec(self.model_id)
        threshold = self.threshold if threshold is None else checked_threshold(spec, threshold)
        faces = self.detect(image, detector)
        # Over the limit, the largest faces are the ones worth the time; the rest are counted.
        limit = self.max_faces
        kept = sorted(sorted(faces, key=lambda f: -f.area)[:limit], key=lambda f: (f.box[0], f.box[1]))
        skipped = len(faces) - len(kept)
        gallery = gallery if gallery is not None else Gallery.empty(self.model_id)
        if kept and len(gallery):
            candidates = nearest(self.embed(image, kept), gallery, spec)
        else:
            candidates = [[] for _ in kept]
        # Each face's quality decides whether it may be named at all ("too poor to decide").
        qualities = assess(image, kept)
        decisions = decide(candidates, Rule.of(spec, threshold), [q.problem for q in qualities])
        return Analysis(
            width=image.shape[1],
            height=image.shape[0],
            model_id=self.model_id,
            threshold=threshold,
            faces=tuple(
                FaceAnalysis(f, d, tuple(c), q) for f, d, c, q in zip(kept, decisions, candidates, qualities)
            ),
            faces_skipped=skipped,
        )
