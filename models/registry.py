"""Every embedding network's facts in one place: id, input chip and its alignment template, how to
compare its embeddings, its calibrated thresholds, its weight file and how to load it.

Everyone reads these: alignment, embedding, matching, the app, the tools and the tests. Only numpy
is imported here; a network's own module (and torch) is imported when `ModelSpec.load` is called.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from models import weights
from models.weights import WeightFile

# Where dlib's face recognition ResNet expects left eye, right eye, nose tip and the mouth
# corners in its 150 x 150 input (pixels).
TEMPLATE_150 = np.array(
    [
        (47.549, 46.599),
        (100.476, 46.599),
        (74.013, 76.562),
        (50.415, 103.023),
        (97.610, 103.023),
    ],
    dtype=np.float64,
)

# The ArcFace 5-point template SFace was trained with, in its 112 x 112 input (pixels).
TEMPLATE_112 = np.array(
    [
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ],
    dtype=np.float64,
)



@dataclass(frozen=True)
class ModelSpec:
    """How to run one embedding CNN and how to compare its embeddings.

    Distances are always "smaller is more alike": L2 distance for dlib's ResNet, 1 - cosine
    similarity for SFace. `default_threshold` and `max_threshold` are in that same unit.
    `max_threshold` is the ceiling no caller may exceed: above it, strangers would be named as
    enrolled people often enough to list who is enrolled (MODEL_CARD.md, "Threshold ceiling").
    chip_size: the network's square input in pixels; template: where the five landmarks go in it
    (5 x 2 pixels); embedding_dim: length of one embedding.

    The open-set rule (`facedemo.matching.Rule`, MODEL_CARD.md "Open-set rule"): with fewer than 5
    people enrolled a face is accepted as its nearest below `default_threshold`. With 5 or more, below
    `strict_threshold` (None: the default); from there up to `loose_threshold` (never above
    `max_threshold`) only when it is clearly that person: at least `min_separation` closer to them
    than the median distance to the other enrolled people, and at least `min_margin` closer than to
    the runner-up. `loose_threshold` None: one level only. A threshold other than the default scales
    both levels in proportion.
    templates: how a person's several templates (one per enrolment photo) are compared: "nearest"
    (the closest one) or "mean" (their mean, renormalised for cosine).
    """

    model_id: str
    title: str
    chip_size: int
    template: np.ndarray = field(repr=False)
    embedding_dim: int
    metric: str
    default_threshold: float
    max_threshold: float
    weights: WeightFile = field(repr=False)
    loader: str = field(repr=False)  # "module:function" returning the loaded network
    # True: compare the network's unit-length output, its `embed` method (SFace), not forward().
    normalise: bool = False
    strict_threshold: float | None = None
    loose_threshold: float | None = None
    min_separation: float = 0.0
    min_margin: float = 0.0
    templates: str = "nearest"

    def __post_init__(self) -> None:
        if not 0.0 < self.default_threshold <= self.max_threshold:
            raise ValueError(f"{self.model_id}: the default threshold must lie in (0, max_threshold]")
        if self.strict_threshold is None:
            object.__setattr__(self, "strict_threshold", self.default_threshold)
        if not 0.0 < self.strict_threshold <= self.default_threshold:
            raise ValueError(f"{self.model_id}: the strict threshold must lie in (0, default_threshold]")
        if self.loose_threshold is not None and not self.default_threshold <= self.loose_threshold <= self.max_threshold:
            # The second level may never pass the ceiling: strangers would be named often enough to list who is enrolled.
            raise ValueError(f"{self.model_id}: the loose threshold must lie between the default and the ceiling")
        if self.templates not in ("nearest", "mean"):
            raise ValueError(f"{self.model_id}: templates must be 'nearest' or 'mean', not {self.templates!r}")

    def load(self):
        """The network, its verified weights loaded (imports the network's module, and torch)."""
        module, function = self.loader.split(":")
        return getattr(importlib.import_module(module), function)()


DLIB_RESNET = ModelSpec(
    model_id="dlib_resnet_v1",
    title="dlib ResNet-29 (128-D, L2 distance)",
    chip_size=150,
    template=TEMPLATE_150,
    embedding_dim=128,
    metric="euclidean",
    # ~1% false accepts on a held-out cross-domain test; dlib's customary 0.6 let ~11% through.
    default_threshold=0.54,
    # Distance at FAR 1e-3 on the calibration set's everyday photos (17,034 impostor pairs).
    max_threshold=0.60,
    weights=weights.DLIB_RESNET,
    loader="models.dlib_resnet:load_dlib_resnet",
    # Open-set rule chosen with identities held out (2 folds; MODEL_CARD.md, "Open-set rule"). On grey,
    # evenly lit sets (Yale, ORL) no threshold or rule keeps dlib's false accepts near 1%: use SFace there.
    loose_threshold=0.56,
    min_separation=0.38,
    min_margin=0.10,
    # The mean of several templates accepted more strangers at this threshold than the nearest one.
    templates="nearest",
)

SFACE = ModelSpec(
    model_id="sface_2021dec",
    title="SFace MobileFaceNet (128-D, cosine)",
    chip_size=112,
    template=TEMPLATE_112,
    embedding_dim=128,
    metric="cosine",
    # Cosine similarity 0.44, ~1% false accepts held out; OpenCV's own 0.363 accepted ~10%.
    default_threshold=0.56,
    # Distance at FAR 1e-3 on the calibration set's everyday photos (17,034 impostor pairs).
    max_threshold=0.63,
    weights=weights.SFACE,
    loader="models.sface:load_sface",
    normalise=True,
    # Open-set rule chosen with identities held out (2 folds; MODEL_CARD.md, "Open-set rule"): everyday
    # photos 148 -> 149 of 150 accepted, strangers 2 -> 1 of 188 (ORL 4 -> 1 of 400).
    strict_threshold=0.53,
    loose_threshold=0.60,
    min_separation=0.40,
    min_margin=0.10,
    # The mean of a person's templates: more enrolled people accepted and fewer strangers than the
    # nearest template, with 2 or 3 enrolment photos (MODEL_CARD.md, "Several templates per person").
    templates="mean",
)

MODELS: dict[str, ModelSpec] = {spec.model_id: spec for spec in (DLIB_RESNET, SFACE)}
# SFace: clearly more accurate than dlib's ResNet on cross-domain and harsh-light photos (MODEL_CARD.md).
DEFAULT_MODEL = SFACE.model_id
