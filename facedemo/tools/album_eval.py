"""How well albums work on labelled photos: the clusters of unknown faces against the true people, and
whether hidden faces can still be named.

    python -m facedemo.tools.album_eval [--calibration DIR] [--json OUT.json] [--picture OUT.jpg] [--model ID]

Albums: tests/data/faces-pd (shipped, public domain; its `_groups` and `_other` photos go in unlabelled)
and each person-per-folder set of the calibration folder that is present (yale_faces, orl_att_faces,
wild: read where they are, never copied into the project). In a photo of a person's folder, the
primary face (facedemo.detection.primary_face) is that person's; other faces are not labelled.

Clusters (nobody enrolled, every face unknown): purity (of the labelled faces grouped, the share in a
cluster whose majority is their person), completeness (the share in their person's largest cluster),
clusters formed against true people. Hiding: every face hidden, then each person enrolled in a
temporary vault from their first photo; the count of faces named in the originals (the check has
teeth), in the published photos, and at the hidden faces' original landmarks (as if the detector
still found them) must be 0 in both of the latter.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facedemo import render
from facedemo.album import Album, AlbumLimits, FaceRef, analyse_album
from facedemo.anonymise import anonymise_album
from facedemo.detection import primary_face
from facedemo.embedding import model_spec
from facedemo.images import load
from facedemo.matching import Gallery, Rule, decide, nearest
from facedemo.pipeline import Pipeline
from facedemo.tools.dataset import IMAGE_SUFFIXES, read_dataset
from models.registry import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]
FACES_PD = ROOT / "tests" / "data" / "faces-pd"
CALIBRATION = ROOT.parent / "shared" / "data" / "calibration"
CALIBRATION_SETS = ("yale_faces", "orl_att_faces", "wild")
# The before/after picture: a public-domain NASA crew photo (tests/data/faces-pd/PROVENANCE.csv), its
# leftmost person marked as the uploader.
PICTURE_PHOTO = FACES_PD / "_groups" / "expedition_1_crew.jpg"
PICTURE_WIDTH = 1280


@dataclass(frozen=True)
class LabelledAlbum:
    """An album's photos as (file name, bytes) and, per photo, the person its folder names (None: unlabelled)."""

    name: str
    photos: list[tuple[str, bytes]]
    people: list[str | None]


def labelled_album(name: str, root: Path, unlabelled: bool = False) -> LabelledAlbum:
    """Every photo of a person-per-folder set; with `unlabelled`, also those of its `_` folders."""
    photos, people = [], []
    for identity in read_dataset(root):
        for path in identity.photos:
            photos.append((f"{identity.name}__{path.name}", path.read_bytes()))
            people.append(identity.name)
    if unlabelled:
        for path in sorted(root.glob("_*/*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                photos.append((path.name, path.read_bytes()))
                people.append(None)
    return LabelledAlbum(name, photos, people)


def truth(album: Album, labelled: LabelledAlbum) -> dict[FaceRef, str]:
    """The labelled faces: in each photo of a person's folder, its primary face."""
    labels = {}
    for p, photo in enumerate(album.photos):
        person = labelled.people[photo.source]
        face = primary_face([fa.face for fa in photo.analysis.faces])
        if person is not None and face is not None:
            labels[FaceRef(p, [fa.face for fa in photo.analysis.faces].index(face))] = person
    return labels


def cluster_figures(album: Album, labels: dict[FaceRef, str]) -> dict:
    """Purity, completeness and counts of the album's clusters against the labelled faces."""
    grouped = {ref: c.number for c in album.clusters for ref in c.faces if ref in labels}
    by_cluster: dict[int, Counter] = {}
    by_person: dict[str, Counter] = {}
    for ref, number in grouped.items():
        by_cluster.setdefault(number, Counter())[labels[ref]] += 1
        by_person.setdefault(labels[ref], Counter())[number] += 1
    n = len(grouped)
    return {
        "photos": len(album.photos),
        "faces": album.faces,
        "labelled_faces": len(labels),
        "labelled_faces_grouped": n,
        "people": len(set(labels.values())),
        "clusters_of_labelled_faces": len(by_cluster),
        "clusters": len(album.clusters),
        "purity": round(sum(max(c.values()) for c in by_cluster.values()) / n, 4) if n else None,
        "completeness": round(sum(max(c.values()) for c in by_person.values()) / n, 4) if n else None,
        "people_in_one_cluster": sum(len(c) == 1 for c in by_person.values()),
        "seconds": round(album.seconds, 1),
    }


def enrolled_gallery(pipeline: Pipeline, labelled: LabelledAlbum) -> tuple[Gallery, int]:
    """Each person enrolled from their first usable photo in a temporary vault (FaceDemo.enroll, with its
    quality gates); the vault's gallery and how many people it holds."""
    from facedemo.app.config import Config
    from facedemo.app.service import EnrolmentError, FaceDemo
    from privacy.keys import generate_master_key

    with tempfile.TemporaryDirectory(prefix="album-eval-") as folder:
        demo = FaceDemo(Config(data_dir=Path(folder), master_key=generate_master_key()), pipeline=pipeline)
        try:
            enrolled = set()
            for (_, data), person in zip(labelled.photos, labelled.people):
                if person is None or person in enrolled:
                    continue
                try:
                    demo.enroll(person, [data], consent=True)
                except EnrolmentError:
                    continue  # no usable face in this photo: the person's next photo is tried
                enrolled.add(person)
            return demo.gallery(), len(enrolled)
        finally:
            demo.close()


def hiding_figures(pipeline: Pipeline, labelled: LabelledAlbum, album: Album, gallery: Gallery) -> dict:
    """Every face of `album` (analysed with nobody enrolled) hidden; faces named against `gallery` in the
    originals, in the published photos, and at the hidden faces' original landmarks. Also how often a
    labelled hidden face's nearest enrolled person is still its own (by chance: 1 / people enrolled):
    a distance above the threshold that still points at the right person would be a leak."""
    spec = model_spec(pipeline.model_id)
    rule = Rule.of(spec, pipeline.threshold)
    originals = [data for _, data in labelled.photos]
    data, _ = anonymise_album(album, originals, limits=AlbumLimits(max_photos=len(originals)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        outputs = {photo.name: archive.read(n) for photo, n in zip(album.photos, archive.namelist())}
    labels = truth(album, labelled)
    before = after = at_landmarks = hidden = own = own_of = 0
    nearest_hidden = []
    for p, photo in enumerate(album.photos):
        faces = [fa.face for fa in photo.analysis.faces]
        if not faces:
            continue
        hidden += len(faces)
        published = load(outputs[photo.name])
        before += sum(fa.decision.accepted for fa in pipeline.analyse(load(originals[photo.source]), gallery).faces)
        after += sum(fa.decision.accepted for fa in pipeline.analyse(published, gallery).faces)
        candidates = nearest(pipeline.embed(published, faces), gallery, spec)
        decisions = decide(candidates, rule)
        at_landmarks += sum(d.accepted for d in decisions)
        nearest_hidden += [d.distance for d in decisions if d.distance is not None]
        for f, options in enumerate(candidates):
            person = labels.get(FaceRef(p, f))
            if person is not None and person in gallery.names and options:
                own_of += 1
                own += options[0].name == person
    return {
        "faces_hidden": hidden,
        "named_in_originals": before,
        "named_after_hiding": after,
        "named_at_original_landmarks": at_landmarks,
        "nearest_distance_after_hiding": round(min(nearest_hidden), 3) if nearest_hidden else None,
        "threshold": pipeline.threshold,
        "nearest_is_own_person": own,
        "of_labelled_faces": own_of,
        "by_chance": round(own_of / len(gallery), 1) if len(gallery) else None,
    }


def evaluate_album(pipeline: Pipeline, labelled: LabelledAlbum, linkages: tuple[str, ...]) -> dict:
    limits = AlbumLimits(max_photos=len(labelled.photos))
    report: dict = {"clusters": {}}
    albums = {}
    for linkage in linkages:
        albums[linkage] = analyse_album(pipeline, labelled.photos, limits=limits, linkage=linkage)
        report["clusters"][linkage] = cluster_figures(albums[linkage], truth(albums[linkage], labelled))
    gallery, people = enrolled_gallery(pipeline, labelled)
    report["hiding"] = {"people_enrolled": people, **hiding_figures(pipeline, labelled, albums[linkages[0]], gallery)}
    return report


def before_after(pipeline: Pipeline, path: Path = PICTURE_PHOTO) -> np.ndarray:
    """The crew photo as analysed (boxes, every face unknown) beside its anonymised copy with the
    leftmost person marked as the uploader: one picture, PICTURE_WIDTH wide."""
    data = path.read_bytes()
    album = analyse_album(pipeline, [(path.name, data)])
    (photo,) = album.photos
    me = photo.clusters[0]
    zipped, _ = anonymise_album(album, [data], keep_cluster=me)
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        after = load(archive.read(photo.name))
    half = (PICTURE_WIDTH - 10) // 2
    size = (photo.analysis.width, photo.analysis.height)
    before = render.draw_recognition(render.fit(load(data), half), photo.analysis.faces, max_side=None, source_size=size)
    after = render.fit(after, half)
    font = ImageFont.load_default(size=20)
    canvas = Image.new("RGB", (PICTURE_WIDTH, before.shape[0] + 34), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    faces = len(photo.analysis.faces)
    draw.text((0, 4), f"before: {faces} faces found, nobody enrolled", font=font, fill=(0, 0, 0))
    draw.text((half + 10, 4), f"after: unknown person {me} marked as me, the others hidden", font=font, fill=(0, 0, 0))
    canvas.paste(Image.fromarray(before), (0, 34))
    canvas.paste(Image.fromarray(after), (half + 10, 34))
    return np.asarray(canvas)


def run(pipeline: Pipeline, calibration: Path = CALIBRATION, linkages: tuple[str, ...] = ("average", "complete")) -> dict:
    """Every album's figures as one JSON-able dict, with the machine they were measured on."""
    from facedemo.tools.bench import hardware

    albums = [labelled_album("faces-pd", FACES_PD, unlabelled=True)]
    albums += [labelled_album(name, calibration / name) for name in CALIBRATION_SETS if (calibration / name).is_dir()]
    report = {"hardware": hardware(), "model": pipeline.model_id, "threshold": pipeline.threshold, "albums": {}}
    for labelled in albums:
        started = time.perf_counter()
        report["albums"][labelled.name] = evaluate_album(pipeline, labelled, linkages)
        print(f"{labelled.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facedemo.tools.album_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, default=CALIBRATION, help="folder of person-per-folder sets")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--picture", type=Path, help="write the before/after picture here (JPEG)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"embedding model (default {DEFAULT_MODEL})")
    args = parser.parse_args(argv)
    pipeline = Pipeline(args.model)
    if args.picture:
        Image.fromarray(before_after(pipeline)).save(args.picture, quality=85, optimize=True)
    report = run(pipeline, args.calibration)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
