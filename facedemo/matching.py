"""Stage 5: embeddings -> decisions. Open-set matching against a gallery of enrolled people."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.registry import ModelSpec


class ThresholdError(ValueError):
    """A decision threshold that is not a number, or lies outside 0..the model's ceiling."""


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
            f"the threshold must be between 0 and {spec.max_threshold:.2f} for {spec.model_id} (got {value!r}); "
            "above that ceiling strangers would be named as enrolled people too often"
        )
    return value


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


@dataclass
class _Rows:
    """Template storage shared by a gallery and the galleries `Gallery.with_subjects` made from it.

    templates_t: D x capacity float32; norms2 and owner: one entry per column. Columns before `used`
    belong to galleries already made and are never written again; only the gallery holding all `used`
    columns appends in place, every other one copies first.
    """

    templates_t: np.ndarray
    norms2: np.ndarray
    owner: np.ndarray
    used: int

    @classmethod
    def allocate(cls, dim: int, capacity: int) -> _Rows:
        return cls(
            np.zeros((dim, capacity), dtype=np.float32), np.zeros(capacity, dtype=np.float32),
            np.zeros(capacity, dtype=np.int64), 0,
        )


@dataclass(frozen=True)
class Gallery:
    """Enrolled people for one model: templates (M x D) and, per row, its subject.

    model_id: the model whose embeddings these are; matching refuses probes of another model
    (both networks give 128 numbers, so a mix would be silent and meaningless).
    owner[i] indexes subject_ids/names; rows of one subject are contiguous.
    """

    model_id: str
    subject_ids: tuple[str, ...]
    names: tuple[str, ...]
    templates: np.ndarray = field(repr=False)
    owner: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        # Derived once per gallery: identification runs many times against the same gallery.
        # Stored D x M row-major: the probe product then streams memory in order (2x faster at
        # 100,000 templates); `templates` stays an M x D view of it.
        templates_t = np.ascontiguousarray(np.asarray(self.templates, dtype=np.float32).T)
        owner = np.asarray(self.owner, dtype=np.int64)
        rows = _Rows(templates_t, (templates_t**2).sum(0), owner.copy(), len(owner))
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else None
        single = starts is not None and len(starts) == len(owner)
        self._attach(rows, None if single else starts)

    def _attach(self, rows: _Rows, starts: np.ndarray | None) -> None:
        """Point this gallery at the columns of `rows` in use now (its rows; later appends are not its own)."""
        count = rows.used
        templates_t = rows.templates_t[:, :count]
        object.__setattr__(self, "templates", templates_t.T)
        object.__setattr__(self, "owner", rows.owner[:count])
        object.__setattr__(self, "_templates_t", templates_t)
        object.__setattr__(self, "_norms2", rows.norms2[:count])
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_count", count)

    @classmethod
    def _assemble(
        cls, model_id: str, subject_ids: tuple[str, ...], names: tuple[str, ...], rows: _Rows, starts: np.ndarray | None
    ) -> Gallery:
        gallery = object.__new__(cls)
        object.__setattr__(gallery, "model_id", model_id)
        object.__setattr__(gallery, "subject_ids", subject_ids)
        object.__setattr__(gallery, "names", names)
        gallery._attach(rows, starts)
        return gallery

    def with_subjects(self, subjects: Iterable) -> Gallery:
        """A new gallery: this one plus `subjects` (items with .subject_id, .name, .templates k x D), after the others.

        The rows already here are not copied again: they share storage that grows by half when full,
        so adding one subject to a gallery of 100,000 costs microseconds, not a rebuild. This gallery
        stays valid and unchanged (callers still matching against it are not disturbed). Galleries are
        safe to read from many threads; extend them from one thread at a time (the app does under a lock).
        """
        ids, names, blocks = [], [], []
        for subject in subjects:
            ids.append(subject.subject_id)
            names.append(subject.name)
            blocks.append(np.asarray(subject.templates, dtype=np.float32).reshape(len(subject.templates), -1))
        if not blocks:
            return self
        added = np.concatenate(blocks)
        rows, count = self._rows, self._count
        if count and added.shape[1] != rows.templates_t.shape[0]:
            raise ValueError(f"templates of {added.shape[1]} components cannot join a gallery of {rows.templates_t.shape[0]}")
        total = count + len(added)
        if rows.used != count or total > rows.templates_t.shape[1] or rows.templates_t.shape[0] != added.shape[1]:
            rows = _Rows.allocate(added.shape[1], max(total + total // 2, 64))
            if count:
                rows.templates_t[:, :count] = self._templates_t
                rows.norms2[:count] = self._norms2
                rows.owner[:count] = self.owner
        # Columns past `count` belong to no gallery yet: writing them disturbs no reader of this one.
        rows.templates_t[:, count:total] = added.T
        rows.norms2[count:total] = (added**2).sum(1)
        first = len(self.subject_ids)
        lengths = np.array([len(b) for b in blocks])
        rows.owner[count:total] = np.repeat(np.arange(first, first + len(blocks)), lengths)
        rows.used = total
        starts = self._starts
        if starts is not None or (lengths != 1).any():
            previous = np.arange(count) if starts is None else starts
            starts = np.concatenate([previous, count + np.r_[0, np.cumsum(lengths)[:-1]]])
        return Gallery._assemble(self.model_id, self.subject_ids + tuple(ids), self.names + tuple(names), rows, starts)

    def without_subjects(self, subject_ids: Iterable[str]) -> Gallery:
        """A new gallery without the subjects named (ids not in it are ignored); this one stays unchanged.

        Copies the remaining rows once (O(rows), numpy speed: no Python loop over subjects).
        """
        wanted = set(subject_ids)
        if not wanted:
            return self
        if len(wanted) < 16:
            positions = [self.subject_ids.index(sid) for sid in wanted if sid in self.subject_ids]
        else:
            positions = [i for i, sid in enumerate(self.subject_ids) if sid in wanted]
        if not positions:
            return self
        keep_subject = np.ones(len(self.subject_ids), dtype=bool)
        keep_subject[positions] = False
        keep_rows = keep_subject[self.owner]
        new_index = np.cumsum(keep_subject) - 1
        owner = new_index[self.owner[keep_rows]]
        templates_t = np.ascontiguousarray(self._templates_t[:, keep_rows])
        rows = _Rows(templates_t, self._norms2[keep_rows], owner, len(owner))
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else None
        single = starts is not None and len(starts) == len(owner)
        kept = np.flatnonzero(keep_subject)
        return Gallery._assemble(
            self.model_id, tuple(self.subject_ids[i] for i in kept), tuple(self.names[i] for i in kept), rows,
            None if single else starts,
        )

    @classmethod
    def from_subjects(cls, subjects: Iterable, model_id: str) -> Gallery:
        """Build from items with .subject_id, .name and .templates (k x D embeddings of `model_id`)."""
        ids, names, blocks, owner = [], [], [], []
        for index, subject in enumerate(subjects):
            templates = np.asarray(subject.templates, dtype=np.float32).reshape(len(subject.templates), -1)
            ids.append(subject.subject_id)
            names.append(subject.name)
            blocks.append(templates)
            owner.append(np.full(len(templates), index, dtype=np.int64))
        if not blocks:
            return cls.empty(model_id)
        return cls(model_id, tuple(ids), tuple(names), np.concatenate(blocks), np.concatenate(owner))

    @classmethod
    def empty(cls, model_id: str, dim: int = 128) -> Gallery:
        return cls(model_id, (), (), np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64))

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


class GalleryMismatch(ValueError):
    """Probes and gallery come from different embedding models."""


def nearest(probes: np.ndarray, gallery: Gallery, spec: ModelSpec, k: int = 5) -> list[list[Candidate]]:
    """For each probe (N x D embeddings of `spec`'s model), its k nearest subjects, nearest first,
    by that model's metric. GalleryMismatch when the gallery holds another model's templates."""
    if gallery.model_id != spec.model_id:
        raise GalleryMismatch(
            f"the gallery holds {gallery.model_id} templates; {spec.model_id} embeddings cannot be matched to them"
        )
    metric = spec.metric
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
