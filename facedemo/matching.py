"""Stage 5: embeddings -> decisions. Open-set matching against a gallery of enrolled people."""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.registry import ModelSpec

# The open-set rule's second level compares a face's nearest person with the median of the others:
# a median of fewer distances says too little (with 1-3 others a stranger's nearest often stands out by chance).
MIN_OTHERS = 4
# Up to this many subjects the median of the others is exact; beyond, it is estimated from this many.
_MEDIAN_EXACT_UP_TO = 2048


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
        object.__setattr__(self, "_means", {})  # metric -> (D x S mean templates, their squared norms), when asked

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

    def updated(self, removed: Iterable[str], added: Iterable) -> Gallery:
        """This gallery less the subjects `removed` (ids), plus `added` (as `with_subjects` takes them):
        how a vault's change since an earlier version is applied without stacking everyone again."""
        return self.without_subjects(removed).with_subjects(added)

    def without_subjects(self, subject_ids: Iterable[str]) -> Gallery:
        """A new gallery without the subjects named (ids not in it are ignored); this one stays unchanged.

        Copies the remaining rows once, as whole runs between the removed subjects (memory speed: about
        15 ms for 100,000 templates), into storage with room for the next additions.
        """
        wanted = set(subject_ids)
        if not wanted:
            return self
        if len(wanted) < 16:
            positions = sorted(self.subject_ids.index(sid) for sid in wanted if sid in self.subject_ids)
        else:
            positions = [i for i, sid in enumerate(self.subject_ids) if sid in wanted]
        if not positions:
            return self
        count, subjects = self._count, len(self.subject_ids)
        starts = self._starts

        def first_row(subject: int) -> int:
            if subject >= subjects:
                return count
            return subject if starts is None else int(starts[subject])

        # Runs of subjects kept: [previous removed + 1, next removed) for each gap.
        runs = [(a, b) for a, b in zip([0] + [p + 1 for p in positions], positions + [subjects]) if a < b]
        kept_rows = sum(first_row(b) - first_row(a) for a, b in runs)
        rows = _Rows.allocate(self._templates_t.shape[0], kept_rows + max(64, kept_rows // 16))
        ids: list[str] = []
        names: list[str] = []
        new_starts = []
        at = 0
        for a, b in runs:
            lo, hi = first_row(a), first_row(b)
            shift = bisect.bisect_left(positions, a)  # subjects removed before this run
            rows.templates_t[:, at:at + hi - lo] = self._templates_t[:, lo:hi]
            rows.norms2[at:at + hi - lo] = self._norms2[lo:hi]
            rows.owner[at:at + hi - lo] = self.owner[lo:hi] - shift
            if starts is not None:
                new_starts.append(starts[a:b] - lo + at)
            ids.extend(self.subject_ids[a:b])
            names.extend(self.names[a:b])
            at += hi - lo
        rows.used = kept_rows
        if starts is not None:
            merged = np.concatenate(new_starts) if new_starts else np.zeros(0, dtype=np.int64)
            starts = None if len(merged) == kept_rows else merged
        return Gallery._assemble(self.model_id, tuple(ids), tuple(names), rows, starts)

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

    def _subject_scores(self, probes: np.ndarray, metric: str, templates: str = "nearest") -> np.ndarray:
        """N x S scores (squared L2 or cosine distance) to each subject's nearest template, or to the
        mean of its templates (`templates="mean"`; renormalised for cosine)."""
        if len(self) == 0:
            return np.zeros((len(probes), 0), dtype=np.float32)
        probes = np.asarray(probes, dtype=np.float32)
        if self._starts is None:  # one template per subject: nearest and mean are the same
            return _scores(probes, self._templates_t, self._norms2, metric)
        if templates == "mean":
            return _scores(probes, *self._mean_templates(metric), metric)
        scores = _scores(probes, self._templates_t, self._norms2, metric)
        return np.minimum.reduceat(scores, self._starts, axis=1)

    def _mean_templates(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """D x S mean template per subject and their squared norms, computed once per gallery."""
        cached = self._means.get(metric)
        if cached is None:
            counts = np.diff(np.r_[self._starts, self._count]).astype(np.float32)
            means = np.add.reduceat(self._templates_t, self._starts, axis=1) / counts
            if metric == "cosine":
                means /= np.maximum(np.linalg.norm(means, axis=0), 1e-12)
            means = np.ascontiguousarray(means, dtype=np.float32)
            cached = self._means[metric] = (means, (means**2).sum(0))
        return cached

    def subject_distances(self, probes: np.ndarray, metric: str, templates: str = "nearest") -> np.ndarray:
        """N x S: for each probe (N x D), the distance to each subject's nearest template (or to the
        mean of its templates: `templates="mean"`)."""
        return _finish(self._subject_scores(probes, metric, templates), metric)


@dataclass(frozen=True)
class Candidate:
    """A possible identity for a face: an enrolled subject and its distance (model units).

    others_median: the median distance from the face to every other enrolled subject (model units),
    the yardstick of the open-set rule's second level; None when fewer than MIN_OTHERS others are enrolled.
    """

    subject_id: str
    name: str
    distance: float
    others_median: float | None = None


# Why a face got a name or none: the words the page and the API show (Decision.reason).
BELOW_THRESHOLD = "below the threshold"
CLEAR_MARGIN = "clear margin over the other enrolled people"
ABOVE_THRESHOLD = "above the threshold"
NO_CLEAR_MARGIN = "near the threshold, without a clear margin over the other enrolled people"
NOBODY_ENROLLED = "nobody is enrolled"
TOO_POOR = "too poor to decide"


def went_to_face(number: int) -> str:
    """The reason of a face left Unknown because face `number` (from 1) took its name, being closer."""
    return f"the name went to face {number}, which is closer"


@dataclass(frozen=True)
class Decision:
    """Who a face is, or None for unknown, and why.

    distance: to the decided subject, or to the nearest one when unknown; None with an empty gallery.
    margin: how much farther the next candidate (in distance order) is than that subject; never negative.
    reason: why, in words for people (BELOW_THRESHOLD, CLEAR_MARGIN, ABOVE_THRESHOLD, NO_CLEAR_MARGIN,
    went_to_face(n), "too poor to decide: ...", NOBODY_ENROLLED).
    """

    identity: str | None
    subject_id: str | None
    distance: float | None
    margin: float | None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.subject_id is not None


@dataclass(frozen=True)
class Rule:
    """When a face is accepted as its nearest enrolled person (distances in the model's unit).

    With fewer than MIN_OTHERS + 1 people enrolled there is no yardstick for "clearly": a face is
    accepted below `threshold`, nothing else. With more, below `strict_threshold` (at most
    `threshold`) it is accepted; from there up to `loose_threshold` (Rule.of keeps it at or under the
    model's ceiling) only when it is clearly that person: at least `min_separation` closer to them
    than the median distance to the other enrolled people, and at least `min_margin` closer than to
    the runner-up. The larger the gallery, the more strangers come close to someone by chance, so
    there the unconditional level is stricter and the clear margin decides. A face whose nearest
    person went to another face of the photo falls back to its next candidate only below the first
    level (`first_level`).
    """

    threshold: float
    strict_threshold: float
    loose_threshold: float
    min_separation: float = math.inf
    min_margin: float = math.inf

    @classmethod
    def single(cls, threshold: float) -> Rule:
        """One level: accepted below `threshold`, nothing else."""
        return cls(float(threshold), float(threshold), float(threshold))

    @classmethod
    def of(cls, spec: ModelSpec, threshold: object = None) -> Rule:
        """The model's rule at `threshold` (None: its default; ThresholdError as checked_threshold).

        Both levels move with the threshold in proportion (at threshold 0 nobody is accepted), and
        the loose one never exceeds the model's ceiling.
        """
        threshold = checked_threshold(spec, threshold)
        if spec.loose_threshold is None:
            return cls.single(threshold)
        scale = threshold / spec.default_threshold
        strict = min(threshold, spec.strict_threshold * scale)
        loose = max(threshold, min(spec.max_threshold, spec.loose_threshold * scale))
        return cls(threshold, strict, loose, spec.min_separation, spec.min_margin)

    def first_level(self, options: Sequence[Candidate]) -> float:
        """Below this a face's candidate is accepted without further test: `strict_threshold` when
        enough people are enrolled to judge a clear margin, else `threshold`."""
        return self.strict_threshold if options and options[0].others_median is not None else self.threshold

    def clear(self, options: Sequence[Candidate]) -> bool:
        """True when the nearest of `options` (nearest first) passes the second level."""
        if len(options) < 2 or options[0].others_median is None:
            return False
        nearest_one = options[0]
        return (
            nearest_one.distance < self.loose_threshold
            and options[1].distance - nearest_one.distance >= self.min_margin
            and nearest_one.others_median - nearest_one.distance >= self.min_separation
        )


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
    table = gallery._subject_scores(probes, metric, spec.templates)
    k = min(k, table.shape[1])
    if k == 0:
        return [[] for _ in range(len(table))]
    top = np.argpartition(table, k - 1, axis=1)[:, :k] if k < table.shape[1] else np.tile(
        np.arange(k), (len(table), 1))
    values = np.take_along_axis(table, top, axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, 1), _finish(np.take_along_axis(values, order, 1), metric)
    medians = _others_medians(table, k, metric)
    return [
        [
            Candidate(gallery.subject_ids[j], gallery.names[j], float(v), None if m is None else float(m))
            for j, v, m in zip(row_ids, row_values, row_medians)
        ]
        for row_ids, row_values, row_medians in zip(top, values, medians)
    ]


def _others_medians(table: np.ndarray, k: int, metric: str) -> list[list[float | None]]:
    """For each probe (row of N x S scores) and each of its k nearest (rank 0..k-1), the median
    distance to all the other S - 1 subjects; None when fewer than MIN_OTHERS others.

    Leaving out the subject at rank r shifts the middle order statistics by one when r lies below
    them, so three order statistics per row (one O(S) partition) give every rank's median.
    """
    n, s = table.shape
    others = s - 1
    if others < MIN_OTHERS:
        return [[None] * k for _ in range(n)]
    if s > _MEDIAN_EXACT_UP_TO:
        # A large gallery: the median of evenly spaced subjects (leaving one out moves it by a hair;
        # 0.003 at 100,000 random templates) costs a fraction of partitioning every row in full.
        sample = table[:, :: -(-s // _MEDIAN_EXACT_UP_TO)]
        medians = np.median(_finish(sample, metric), axis=1).astype(np.float64)
        return np.repeat(medians[:, None], k, axis=1).tolist()
    half = others // 2
    kth = [half - 1, half, half + 1]
    part = np.partition(table, kth, axis=1)
    order_stat = {a: _finish(part[:, a], metric).astype(np.float64) for a in kth}
    columns = []
    for rank in range(k):
        if others % 2:
            columns.append(order_stat[half + (rank <= half)])
        else:
            columns.append((order_stat[half - 1 + (rank <= half - 1)] + order_stat[half + (rank <= half)]) / 2)
    return np.stack(columns, axis=1).tolist()


def decide(
    candidates: Sequence[Sequence[Candidate]],
    rule: Rule | float,
    problems: Sequence[str | None] | None = None,
) -> list[Decision]:
    """Open-set identities for the faces of one photo (each face's candidates nearest first), decided jointly.

    rule: a Rule, or a number for one threshold (accepted below it). problems: per face, why it is too
    poor to decide (facedemo.quality), or None; such a face gets no name. No subject is given to two
    faces: (face, candidate) pairs the rule accepts are taken from the closest up, so the better match
    wins and the other face falls back to its next candidate below the first level, or to unknown with
    a reason naming the face that took its name.
    """
    rule = rule if isinstance(rule, Rule) else Rule.single(rule)
    problems = list(problems) if problems is not None else [None] * len(candidates)

    def acceptable(face: int, rank: int) -> bool:
        options = candidates[face]
        return options[rank].distance < rule.first_level(options) or (rank == 0 and rule.clear(options))

    pairs = sorted(
        (c.distance, face, rank)
        for face, options in enumerate(candidates)
        if not problems[face]
        for rank, c in enumerate(options)
        if acceptable(face, rank)
    )
    chosen: dict[int, int] = {}
    taken: dict[str, int] = {}  # subject id -> the face given it
    for _, face, rank in pairs:
        subject = candidates[face][rank].subject_id
        if face in chosen or subject in taken:
            continue
        chosen[face] = rank
        taken[subject] = face
    decisions = []
    for face, options in enumerate(candidates):
        if not options:
            decisions.append(Decision(None, None, None, None, NOBODY_ENROLLED))
            continue
        rank = chosen.get(face)
        pick = options[rank or 0]
        following = (rank or 0) + 1
        margin = options[following].distance - pick.distance if following < len(options) else None
        if rank is not None:
            if rank > 0:
                reason = f"{BELOW_THRESHOLD}; its nearest name went to face {taken[options[0].subject_id] + 1}, which is closer"
            else:
                reason = BELOW_THRESHOLD if pick.distance < rule.first_level(options) else CLEAR_MARGIN
            decisions.append(Decision(pick.name, pick.subject_id, pick.distance, margin, reason))
            continue
        if problems[face]:
            reason = f"{TOO_POOR}: {problems[face]}"
        elif acceptable(face, 0):
            reason = went_to_face(taken[pick.subject_id] + 1)
        elif pick.distance < rule.loose_threshold and pick.others_median is not None:
            reason = NO_CLEAR_MARGIN
        else:
            reason = ABOVE_THRESHOLD
        decisions.append(Decision(None, None, pick.distance, margin, reason))
    return decisions
