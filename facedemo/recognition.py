"""Face chips -> embeddings (batched CNN), and open-set matching of embeddings against a gallery."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from facedemo.alignment import TEMPLATE_112, TEMPLATE_150

class ModelUnavailable(RuntimeError):
    """An embedding model was asked for that is unknown or whose weights are not installed."""


class ThresholdError(ValueError):
    """A decision threshold that is not a number, or lies outside 0..the model's ceiling."""


@dataclass(frozen=True)
class ModelSpec:
    """How to run one embedding CNN and how to compare its embeddings.

    Distances are always "smaller is more alike": L2 distance for dlib's ResNet,
    1 - cosine similarity for SFace. `default_threshold` and `max_threshold` are in that same unit.
    `max_threshold` is the ceiling no caller may exceed: above it, strangers would be named as
    enrolled people often enough to list who is enrolled (see MODEL_CARD.md, "Threshold ceiling").
    """

    model_id: str
    title: str
    chip_size: int
    template: np.ndarray = field(repr=False)
    metric: str
    default_threshold: float
    max_threshold: float
    load: Callable[[], "object"] = field(repr=False)
    # True: compare the network's unit-length output, its `embed` method (SFace), not forward().
    normalise: bool = False


def _load_dlib():
    from models.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet()


def _load_sface():
    from models.sface import load_sface

    return load_sface()


MODELS: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        ModelSpec(
            model_id="dlib_resnet_v1",
            title="dlib ResNet-29 (128-D, L2 distance)",
            chip_size=150,
            template=TEMPLATE_150,
            metric="euclidean",
            # ~1% false accepts on a held-out cross-domain test; dlib's customary 0.6 let ~11% through.
            default_threshold=0.54,
            # Distance at FAR 1e-3 on the calibration set's everyday photos (17,034 impostor pairs).
            max_threshold=0.60,
            load=_load_dlib,
        ),
        ModelSpec(
            model_id="sface_2021dec",
            title="SFace MobileFaceNet (128-D, cosine)",
            chip_size=112,
            template=TEMPLATE_112,
            metric="cosine",
            # Cosine similarity 0.44, ~1% false accepts held out; OpenCV's own 0.363 accepted ~10%.
            default_threshold=0.56,
            # Distance at FAR 1e-3 on the calibration set's everyday photos (17,034 impostor pairs).
            max_threshold=0.63,
            load=_load_sface,
            normalise=True,
        ),
    )
}


def model_spec(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        raise ModelUnavailable(
            f"unknown model {model_id!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


def checked_threshold(spec: ModelSpec, threshold: object) -> float:
    """`threshold` as a float in 0..spec.max_threshold (model distance units); None means the default.

    Raises ThresholdError with a message for people: for text, NaN, infinity, a list, or a value
    above the ceiling, which would let strangers be named as enrolled people.
    """
    if threshold is None:
        return spec.default_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ThresholdError(f"the threshold must be a number, not {type(threshold).__name__}")
    value = float(threshold)
    if not np.isfinite(value):
        raise ThresholdError("the threshold must be a finite number")
    if not 0.0 <= value <= spec.max_threshold:
        raise ThresholdError(
            f"the threshold must be between 0 and {spec.max_threshold:.2f} for {spec.model_id} (got {value:g}); "
            "above that ceiling strangers would be named as enrolled people too often"
        )
    return value


class Embedder:
    """One embedding CNN, loaded once, turning aligned chips into embeddings."""

    batch_size = 16

    def __init__(self, spec: ModelSpec) -> None:
        import torch

        self.spec = spec
        self._torch = torch
        self._net = spec.load()
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """chips: N x S x S x 3 uint8 RGB (S = spec.chip_size) -> N x D float32 embeddings."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.spec.chip_size, self.spec.chip_size, 3):
            raise ValueError(
                f"expected N x {self.spec.chip_size} x {self.spec.chip_size} x 3 chips, got {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        torch = self._torch
        network = self._net.embed if self.spec.normalise else self._net
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(chips[start : start + self.batch_size]).permute(0, 3, 1, 2).float()
                out.append(network(batch).numpy())
        return np.concatenate(out).astype(np.float32)


def distances(probes: np.ndarray, templates: np.ndarray, metric: str) -> np.ndarray:
    """N x M distances between probes (N x D) and templates (M x D); smaller is more alike."""
    probes = np.asarray(probes, dtype=np.float32)
    templates = np.asarray(templates, dtype=np.float32)
    return _finish(_scores(probes, templates.T, (templates**2).sum(1), metric), metric)


def _scores(probes: np.ndarray, templates_t: np.ndarray, template_norms2: np.ndarray, metric: str) -> np.ndarray:
    """Like `distances` (templates given transposed, D x M) but squared for L2: same order, no roots."""
    dot = probes @ templates_t
    if metric == "cosine":
        return 1.0 - dot
    return (probes**2).sum(1)[:, None] + template_norms2[None, :] - 2.0 * dot


def _finish(scores: np.ndarray, metric: str) -> np.ndarray:
    return scores if metric == "cosine" else np.sqrt(np.maximum(scores, 0.0))


@dataclass(frozen=True)
class Subject:
    """One enrolled person as a gallery entry: templates is k x D, one row per photo."""

    subject_id: str
    name: str
    templates: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Gallery:
    """Enrolled people for one model: templates (M x D) and, per row, its subject.

    owner[i] indexes subject_ids/names; rows of one subject are contiguous.
    """

    subject_ids: tuple[str, ...]
    names: tuple[str, ...]
    templates: np.ndarray = field(repr=False)
    owner: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        # Derived once per gallery: identification runs many times against the same gallery.
        # Stored D x M contiguous: the probe product then streams memory in order (2x faster at
        # 100,000 templates); `templates` stays an M x D view of it.
        templates_t = np.ascontiguousarray(np.asarray(self.templates, dtype=np.float32).T)
        templates = templates_t.T
        object.__setattr__(self, "templates", templates)
        object.__setattr__(self, "_templates_t", templates_t)
        object.__setattr__(self, "_norms2", (templates**2).sum(1))
        starts = np.flatnonzero(np.r_[True, self.owner[1:] != self.owner[:-1]]) if len(self.owner) else None
        single = starts is not None and len(starts) == len(self.owner)
        object.__setattr__(self, "_starts", None if single else starts)

    @classmethod
    def from_subjects(cls, subjects: Iterable) -> "Gallery":
        """Build from items with .subject_id, .name and .templates (k x D)."""
        ids, names, blocks, owner = [], [], [], []
        for index, subject in enumerate(subjects):
            templates = np.asarray(subject.templates, dtype=np.float32).reshape(len(subject.templates), -1)
            ids.append(subject.subject_id)
            names.append(subject.name)
            blocks.append(templates)
            owner.append(np.full(len(templates), index, dtype=np.int64))
        if not blocks:
            return cls.empty()
        return cls(tuple(ids), tuple(names), np.concatenate(blocks), np.concatenate(owner))

    @classmethod
    def empty(cls, dim: int = 128) -> "Gallery":
        return cls((), (), np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.subject_ids)

    def _subject_scores(self, probes: np.ndarray, metric: str) -> np.ndarray:
        """N x S scores (squared L2 or cosine distance) to each subject's nearest template."""
        if len(self) == 0:
            return np.zeros((len(probes), 0), dtype=np.float32)
        scores = _scores(np.asarray(probes, dtype=np.float32), self._templates_t, self._norms2, metric)
        return scores if self._starts is None else np.minimum.reduceat(scores, self._starts, axis=1)

    def subject_distances(self, probes: np.ndarray, metric: str) -> np.ndarray:
        """N x S: for each probe (N x D), the distance to each subject's nearest template."""
        return _finish(self._subject_scores(probes, metric), metric)


@dataclass(frozen=True)
class Candidate:
    """A possible identity for a face: an enrolled subject and its distance (model units)."""

    subject_id: str
    name: str
    distance: float


@dataclass(frozen=True)
class Decision:
    """Who a face is, or None for unknown.

    distance: to the nearest enrolled subject (also when rejected); None with an empty gallery.
    margin: how much farther the runner-up subject is than the decided (or nearest) one.
    """

    identity: str | None
    subject_id: str | None
    distance: float | None
    margin: float | None

    @property
    def accepted(self) -> bool:
        return self.subject_id is not None


def nearest(probes: np.ndarray, gallery: Gallery, metric: str, k: int = 5) -> list[list[Candidate]]:
    """For each probe (N x D), its k nearest subjects, nearest first."""
    table = gallery._subject_scores(probes, metric)
    k = min(k, table.shape[1])
    if k == 0:
        return [[] for _ in range(len(table))]
    top = np.argpartition(table, k - 1, axis=1)[:, :k] if k < table.shape[1] else np.tile(
        np.arange(k), (len(table), 1))
    values = np.take_along_axis(table, top, axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, 1), _finish(np.take_along_axis(values, order, 1), metric)
    return [
        [Candidate(gallery.subject_ids[j], gallery.names[j], float(v)) for j, v in zip(row_ids, row_values)]
        for row_ids, row_values in zip(top, values)
    ]


def decide(candidates: Sequence[Sequence[Candidate]], threshold: float) -> list[Decision]:
    """Open-set identities for the faces of one photo, decided jointly.

    A face is accepted as a subject when its distance is below `threshold`. No subject is
    given to two faces: pairs are taken from the closest up, so the better match wins and the
    other face falls back to its next candidate under the threshold, or to unknown.
    """
    pairs = sorted(
        (c.distance, face, rank)
        for face, options in enumerate(candidates)
        for rank, c in enumerate(options)
        if c.distance < threshold
    )
    chosen: dict[int, int] = {}
    taken: set[str] = set()
    for _, face, rank in pairs:
        subject = candidates[face][rank].subject_id
        if face in chosen or subject in taken:
            continue
        chosen[face] = rank
        taken.add(subject)
    decisions = []
    for face, options in enumerate(candidates):
        if not options:
            decisions.append(Decision(None, None, None, None))
            continue
        rank = chosen.get(face)
        pick = options[rank] if rank is not None else options[0]
        others = [c.distance for i, c in enumerate(options) if i != (rank or 0)]
        margin = (min(others) - pick.distance) if others else None
        if rank is None:
            decisions.append(Decision(None, None, pick.distance, margin))
        else:
            decisions.append(Decision(pick.name, pick.subject_id, pick.distance, margin))
    return decisions
