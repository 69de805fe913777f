"""Stage: a whole album of photos through the pipeline: every face, who it is, and which unknown faces are one person.

Each photo is decoded, analysed (`Pipeline.analyse`) and forgotten before the next: an album is never
all in memory as pixels. The unknown faces are embedded (the analysis keeps no embeddings) and
grouped by `facedemo.clustering`; the embeddings are dropped when `analyse_album` returns, so an
`Album` holds boxes, names and group numbers, never anything a face could be matched with later.
"""
from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np

from facedemo.clustering import DEFAULT_LINKAGE, MAX_ITEMS, cluster
from facedemo.embedding import model_spec
from facedemo.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, ImageSource, load
from facedemo.matching import Gallery, checked_threshold, distances
from facedemo.pipeline import Pipeline
from facedemo.results import Analysis, Face

# Longest file name stem kept in an album (characters); longer ones are cut, keeping their start.
MAX_STEM = 80


@dataclass(frozen=True)
class AlbumLimits:
    """How much one album may hold, checked while it is read and analysed.

    max_photos: photos analysed. max_bytes: encoded bytes of all photos together (a zip's members
    uncompressed). max_ratio: uncompressed / compressed size of one zip member. max_pixels: decoded
    pixels of all photos together. max_seconds: wall-clock seconds of analysis; photos not reached
    by then are refused. image_max_bytes, image_max_pixels: one photo's limits (facedemo.images.load).
    """

    max_photos: int = 200
    max_bytes: int = 1 << 30
    max_ratio: float = 100.0
    max_pixels: int = 2_000_000_000
    max_seconds: float = 600.0
    image_max_bytes: int = DEFAULT_MAX_BYTES
    image_max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Refusal:
    """A file of the album that was not analysed, and why in words for people.

    name: the file's name as it was given (a zip member's path, say), made printable and shortened.
    """

    name: str
    reason: str


@dataclass(frozen=True)
class FaceRef:
    """One face of an album: `photo` indexes Album.photos, `face` that photo's analysis.faces (both from 0)."""

    photo: int
    face: int


@dataclass(frozen=True)
class AlbumPhoto:
    """One analysed photo of an album.

    name: a safe file name (no folder, no `..`, unique in the album ignoring case).
    source: the photo's position in the list given to `analyse_album` (to find the original again).
    analysis: every face, boxes in this photo's original pixels, decided against the gallery.
    clusters: per face of `analysis.faces`, the number of its Cluster (Album.clusters, from 1), or
        None: a recognised person, or a face too poor to group (facedemo.quality), or beyond MAX_ITEMS.
    unanalysed: faces found beyond the pipeline's per-photo limit, neither recognised nor grouped
        (boxes in original pixels). Anonymisation hides them too.
    given: the name the photo came with (its path in a folder or zip), safe to show; "" when the
        caller gave none beyond `name`.
    """

    name: str
    source: int
    analysis: Analysis
    clusters: tuple[int | None, ...]
    unanalysed: tuple[Face, ...] = ()
    given: str = ""


@dataclass(frozen=True)
class Cluster:
    """Unknown faces that look like one person: joined while the linkage distance between their
    groups stayed below the album's threshold (model distance units).

    number: from 1, the largest cluster first. faces: in album order.
    spread: the largest distance between two of its faces (model units; 0 for a single face).
    """

    number: int
    faces: tuple[FaceRef, ...]
    spread: float

    def photos(self) -> tuple[int, ...]:
        """Indices (in Album.photos) of the photos this person is in, ascending."""
        return tuple(sorted({ref.photo for ref in self.faces}))


@dataclass(frozen=True)
class Person:
    """An enrolled person recognised in the album: their faces, in album order."""

    subject_id: str
    name: str
    faces: tuple[FaceRef, ...]

    def photos(self) -> tuple[int, ...]:
        """Indices (in Album.photos) of the photos this person is in, ascending."""
        return tuple(sorted({ref.photo for ref in self.faces}))


@dataclass(frozen=True)
class Album:
    """What an album holds: each analysed photo, the clusters of unknown faces, the files refused.

    threshold: the decision threshold and the clusters' cut, in the model's distance unit.
    linkage: how clusters were joined (facedemo.clustering.LINKAGES). pixels: decoded pixels of the
    analysed photos together. seconds: wall-clock time of the analysis. unclustered: unknown faces
    good enough to group but beyond facedemo.clustering.MAX_ITEMS, left in no cluster.
    """

    photos: tuple[AlbumPhoto, ...]
    clusters: tuple[Cluster, ...]
    refused: tuple[Refusal, ...]
    model_id: str
    threshold: float
    linkage: str = DEFAULT_LINKAGE
    pixels: int = 0
    seconds: float = 0.0
    unclustered: int = 0

    @property
    def faces(self) -> int:
        """Faces found in all photos, those beyond the per-photo limit included."""
        return sum(len(p.analysis.faces) + len(p.unanalysed) for p in self.photos)

    def people(self) -> tuple[Person, ...]:
        """The enrolled people recognised, the one in most photos first (then by name)."""
        found: dict[str, tuple[str, list[FaceRef]]] = {}
        for p, photo in enumerate(self.photos):
            for f, fa in enumerate(photo.analysis.faces):
                if fa.decision.accepted:
                    found.setdefault(fa.decision.subject_id, (fa.decision.identity, []))[1].append(FaceRef(p, f))
        people = [Person(sid, name, tuple(refs)) for sid, (name, refs) in found.items()]
        return tuple(sorted(people, key=lambda person: (-len(person.photos()), person.name, person.subject_id)))

    def cluster(self, number: int) -> Cluster:
        """Cluster `number` (from 1); ValueError for a number the album does not have."""
        if not 1 <= number <= len(self.clusters):
            have = f"1 to {len(self.clusters)}" if self.clusters else "none"
            raise ValueError(f"there is no unknown person {number} in this album (it has {have})")
        return self.clusters[number - 1]

    def restricted_to(self, subject_ids: Collection[str]) -> Album:
        """The same album with only these subjects still enrolled: a face of anyone else loses its
        name (Analysis.restricted_to) and, being in no cluster, is treated as unknown."""
        photos = tuple(replace(p, analysis=p.analysis.restricted_to(subject_ids)) for p in self.photos)
        return replace(self, photos=photos)

    def to_dict(self, include_subject_id: bool = False) -> dict:
        """JSON-ready: per photo its faces (as FaceAnalysis.to_dict, plus `cluster`) and those beyond the
        per-photo limit (`faces_not_analysed`: as Face.to_dict), the people, the clusters (faces as file
        and face number from 1) and the refused files. No embedding is in it;
        `subject_id` only for callers holding the vault themselves (as FaceAnalysis.to_dict)."""
        def ref(r: FaceRef) -> dict:
            return {"file": self.photos[r.photo].name, "face": r.face + 1}

        people = []
        for person in self.people():
            entry = {"name": person.name, "photos": [self.photos[i].name for i in person.photos()],
                     "faces": len(person.faces)}
            if include_subject_id:
                entry["subject_id"] = person.subject_id
            people.append(entry)
        return {
            "model": self.model_id,
            "threshold": self.threshold,
            "linkage": self.linkage,
            "photos": [
                {
                    "file": p.name,
                    "given": p.given or p.name,
                    "width": p.analysis.width,
                    "height": p.analysis.height,
                    "faces": [{**fa.to_dict(include_subject_id), "cluster": c}
                              for fa, c in zip(p.analysis.faces, p.clusters)],
                    "faces_not_analysed": [face.to_dict() for face in p.unanalysed],
                }
                for p in self.photos
            ],
            "people": people,
            "clusters": [{"cluster": c.number, "spread": round(c.spread, 5), "faces": [ref(r) for r in c.faces]}
                         for c in self.clusters],
            "unclustered_faces": self.unclustered,
            "refused": [{"file": r.name, "reason": r.reason} for r in self.refused],
            "pixels": self.pixels,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[int, int, int], None]
OnPhoto = Callable[[int, np.ndarray, AlbumPhoto], None]


def analyse_album(
    pipeline: Pipeline,
    photos: Sequence[tuple[str, ImageSource]],
    gallery: Gallery | None = None,
    *,
    threshold: float | None = None,
    limits: AlbumLimits = AlbumLimits(),
    linkage: str = DEFAULT_LINKAGE,
    progress: Progress | None = None,
    on_photo: OnPhoto | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Album:
    """Analyse every photo of an album and group its unknown faces.

    photos: (file name, photo) pairs; names are made safe and unique (`unique_name`). gallery: the
    enrolled people (None: nobody). threshold: model distance units (None: the pipeline's), used for
    the decisions and as the clusters' cut; ThresholdError before anything runs. Photos that cannot
    be decoded, or come after a limit was reached, are refused with a reason; the rest are analysed.
    progress(photos done, photos in all, faces so far) after each photo; on_photo(index in
    Album.photos, its H x W x 3 pixels, the AlbumPhoto without clusters) while its pixels are in memory.
    """
    spec = model_spec(pipeline.model_id)
    threshold = pipeline.threshold if threshold is None else checked_threshold(spec, threshold)
    started = clock()
    analysed: list[AlbumPhoto] = []
    refused: list[Refusal] = []
    unknown: list[FaceRef] = []  # unknown faces good enough to group, and their embeddings
    vectors: list[np.ndarray] = []
    taken: set[str] = set()
    pixels = faces = 0
    stop: str | None = None  # once a limit is reached, why the remaining photos are not analysed
    for index, (name, source) in enumerate(photos):
        if stop is None and index >= limits.max_photos:
            stop = f"not analysed: the album's limit is {limits.max_photos} photos"
        if stop is None and clock() - started > limits.max_seconds:
            stop = f"not analysed: the album's time limit of {limits.max_seconds:g} s was reached"
        image = None
        if stop is None:
            try:
                image = load(source, max_bytes=limits.image_max_bytes, max_pixels=limits.image_max_pixels)
            except ImageError as exc:
                refused.append(Refusal(printable(name), str(exc)))
        if image is not None and pixels + image.shape[0] * image.shape[1] > limits.max_pixels:
            stop = f"not analysed: the album's limit of {limits.max_pixels / 1e6:,g} megapixels in all was reached"
        if stop is not None:
            refused.append(Refusal(printable(name), stop))
        elif image is not None:
            pixels += image.shape[0] * image.shape[1]
            number = len(analysed)
            analysis = pipeline.analyse(image, gallery, threshold)
            photo = AlbumPhoto(unique_name(name, taken), index, analysis, (None,) * len(analysis.faces),
                               _beyond_the_limit(pipeline, image, analysis))
            usable = [f for f, fa in enumerate(analysis.faces)
                      if not fa.decision.accepted and (fa.quality is None or fa.quality.usable)]
            if usable:
                vectors.append(pipeline.embed(image, [analysis.faces[f].face for f in usable]))
                unknown += [FaceRef(number, f) for f in usable]
            if on_photo is not None:
                on_photo(number, image, photo)
            analysed.append(photo)
            faces += len(analysis.faces) + len(photo.unanalysed)
        del image  # one photo's pixels at a time
        if progress is not None:
            progress(index + 1, len(photos), faces)
    grouped = min(len(unknown), MAX_ITEMS)
    embeddings = np.concatenate(vectors)[:grouped] if vectors else np.zeros((0, spec.embedding_dim), np.float32)
    clusters = _clusters(unknown[:grouped], embeddings, spec.metric, threshold, linkage)
    numbers: dict[FaceRef, int] = {ref: c.number for c in clusters for ref in c.faces}
    analysed = [replace(p, clusters=tuple(numbers.get(FaceRef(i, f)) for f in range(len(p.analysis.faces))))
                for i, p in enumerate(analysed)]
    return Album(tuple(analysed), tuple(clusters), tuple(refused), pipeline.model_id, threshold, linkage,
                 pixels, clock() - started, len(unknown) - grouped)


def _beyond_the_limit(pipeline: Pipeline, image: np.ndarray, analysis: Analysis) -> tuple[Face, ...]:
    """The faces analyse() left out over its per-photo limit. Detection is run again (it gives the same
    faces) only for such photos: a face that is not found cannot be hidden when the album is published."""
    if not analysis.faces_skipped:
        return ()
    kept = {fa.face.box for fa in analysis.faces}
    return tuple(f for f in pipeline.detect(image) if f.box not in kept)


def _clusters(refs: list[FaceRef], embeddings: np.ndarray, metric: str, cut: float, linkage: str) -> list[Cluster]:
    clusters = []
    for number, rows in enumerate(cluster(embeddings, metric, cut, linkage), 1):
        members = embeddings[rows]
        spread = float(distances(members, members, metric).max()) if len(rows) > 1 else 0.0
        clusters.append(Cluster(number, tuple(refs[r] for r in rows), max(spread, 0.0)))
    return clusters


# Names Windows opens as devices, whatever their suffix: "con.jpg" cannot be a file there.
WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)}
)


def printable(name: str, limit: int = 120) -> str:
    """A file name as given, safe to show: control and invisible characters as '?', at most `limit`
    characters (the end kept: it holds the file's own name)."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def safe_name(name: str) -> str:
    """A file name that is safe to write anywhere: the last part of `name` (after / or \\), characters
    other than letters, digits, '.', '-' and '_' as '_', no leading dot or dash, a stem of at most
    MAX_STEM characters, '_' before a name Windows keeps for a device (CON, AUX, COM1...), the suffix
    in lower case; "photo" when nothing is left."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", str(name)))[-1]
    base = re.sub(r"[^\w.-]", "_", base).lstrip(".-")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem:
        stem, suffix = base, ""
    stem = stem[:MAX_STEM].rstrip(".") or "photo"
    if stem.split(".")[0].upper() in WINDOWS_DEVICES:
        stem = f"_{stem}"
    suffix = re.sub(r"[^a-z0-9]", "", suffix.lower())[:10]
    return f"{stem}.{suffix}" if suffix else stem


def unique_name(name: str, taken: set[str]) -> str:
    """`safe_name(name)`, with -2, -3, ... before the suffix when the name is in `taken` (compared
    ignoring case: on some file systems A.jpg and a.jpg are one file). Adds the result to `taken`."""
    base = safe_name(name)
    stem, dot, suffix = base.rpartition(".") if "." in base else (base, "", "")
    candidate, n = base, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{n}{dot}{suffix}"
    taken.add(candidate.lower())
    return candidate
