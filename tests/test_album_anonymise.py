"""Anonymising an album (facedemo.anonymise) on real photos and models: hidden faces are named by nobody even
with everyone enrolled, consenting people and the marked cluster stay sharp, no metadata leaves, safe zip."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from facedemo.album import analyse_album
from facedemo.anonymise import MANIFEST, AnonymiseError, anonymise_album, hide
from facedemo.embedding import model_spec
from facedemo.images import load
from facedemo.matching import Gallery, Rule, Subject, decide, nearest
from tests.test_album import enrolled

# Public domain (tests/data/faces-pd/PROVENANCE.csv): six faces, Eileen Collins twice.
FILES = [
    "eileen_collins/collins_nasa_portrait_a.jpg",
    "grace_hopper/hopper_us_navy_portrait.jpg",
    "_groups/expedition_1_crew.jpg",
    "eileen_collins/collins_nasa_portrait_b.jpg",
]


@pytest.fixture(scope="module")
def photos(faces_pd) -> list[tuple[str, bytes]]:
    return [(path.split("/")[-1], (faces_pd / path).read_bytes()) for path in FILES]


@pytest.fixture(scope="module")
def everyone(pipeline, photos) -> Gallery:
    """Every face of the album enrolled from itself: the hardest test a hidden face can face."""
    subjects = []
    for name, data in photos:
        image = load(data)
        faces = [fa.face for fa in pipeline.analyse(image).faces]
        for number, row in enumerate(pipeline.embed(image, faces), 1):
            subjects.append(Subject(f"{name}#{number}", f"{name}#{number}", row[None]))
    return Gallery.from_subjects(subjects, pipeline.model_id)


@pytest.fixture(scope="module")
def unknown_album(pipeline, photos):
    """Nobody enrolled: every face is unknown."""
    return analyse_album(pipeline, photos)


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_hidden_faces_are_named_by_nobody_with_everyone_enrolled(pipeline, photos, everyone, unknown_album):
    data, _ = anonymise_album(unknown_album, [d for _, d in photos])
    outputs = unzip(data)
    named_before = sum(fa.decision.accepted for _, d in photos for fa in pipeline.analyse(load(d), everyone).faces)
    named_after = sum(fa.decision.accepted for name, _ in photos
                      for fa in pipeline.analyse(load(outputs[name]), everyone).faces)
    assert named_before == 6 and named_after == 0


def test_hidden_faces_are_named_by_nobody_even_where_the_face_was(pipeline, photos, everyone, unknown_album):
    """The detector does not find hidden faces; embedded at their original landmarks, they match nobody."""
    spec = model_spec(pipeline.model_id)
    data, _ = anonymise_album(unknown_album, [d for _, d in photos])
    outputs = unzip(data)
    for photo in unknown_album.photos:
        faces = [fa.face for fa in photo.analysis.faces]
        candidates = nearest(pipeline.embed(load(outputs[photo.name]), faces), everyone, spec)
        decisions = decide(candidates, Rule.of(spec, pipeline.threshold))
        assert not any(d.accepted for d in decisions)
        assert min(d.distance for d in decisions) > pipeline.threshold + 0.1


def face_change(before: np.ndarray, after: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(np.abs(before[y1:y2, x1:x2].astype(np.float32) - after[y1:y2, x1:x2]).mean())


def test_an_enrolled_person_recognised_stays_sharp_and_everyone_else_is_hidden(pipeline, faces_pd, photos):
    gallery = enrolled(pipeline, faces_pd, {"Grace Hopper": "grace_hopper/hopper_us_navy_portrait.jpg"})
    album = analyse_album(pipeline, photos[1:3], gallery)
    data, published = anonymise_album(album, [d for _, d in photos[1:3]])
    outputs = unzip(data)
    hopper, crew = album.photos
    assert face_change(load(photos[1][1]), load(outputs[hopper.name]), hopper.analysis.faces[0].face.box) < 4
    assert all(face_change(load(photos[2][1]), load(outputs[crew.name]), fa.face.box) > 15 for fa in crew.analysis.faces)
    assert [(p.faces, p.hidden, p.kept_enrolled) for p in published] == [(1, 0, 1), (3, 3, 0)]
    assert [fa.decision.identity for fa in pipeline.analyse(load(outputs[hopper.name]), gallery).faces] == ["Grace Hopper"]


def test_the_marked_cluster_stays_sharp(photos, unknown_album):
    collins = unknown_album.photos[0].clusters[0]
    data, published = anonymise_album(unknown_album, [d for _, d in photos], keep_cluster=collins)
    outputs = unzip(data)
    for photo in unknown_album.photos:
        original, output = load(photos[photo.source][1]), load(outputs[photo.name])
        for fa, cluster in zip(photo.analysis.faces, photo.clusters):
            change = face_change(original, output, fa.face.box)
            assert change < 4 if cluster == collins else change > 15, (photo.name, cluster)
    assert sum(p.kept_marked for p in published) == 2 and sum(p.hidden for p in published) == 4


def test_an_unknown_person_the_album_does_not_have_is_refused(photos, unknown_album):
    with pytest.raises(AnonymiseError, match="no unknown person 99"):
        anonymise_album(unknown_album, [d for _, d in photos], keep_cluster=99)


def test_an_original_that_is_not_the_photo_analysed_is_refused(photos, unknown_album):
    originals = [d for _, d in photos]
    originals[0] = photos[1][1]
    with pytest.raises(AnonymiseError, match="not the photo that was analysed"):
        anonymise_album(unknown_album, originals)


def with_metadata(pixels: np.ndarray, kind: str) -> bytes:
    """The photo with EXIF (camera, GPS position), an ICC profile and a text comment or PNG text chunks."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0), 3: "E", 4: (13.0, 24.0, 0.0)}  # the GPS block
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    if kind == "PNG":
        text = PngInfo()
        text.add_text("Author", "SecretAuthor")
        text.add_itxt("Location", "SecretPlace")
        Image.fromarray(pixels).save(buffer, "PNG", pnginfo=text, exif=exif, icc_profile=icc)
    else:
        Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, icc_profile=icc, comment=b"SecretComment")
    return buffer.getvalue()


def test_published_photos_carry_no_exif_gps_icc_or_text(pipeline, astronaut):
    originals = [with_metadata(astronaut, "JPEG"), with_metadata(astronaut, "PNG")]
    assert Image.open(io.BytesIO(originals[0])).getexif().get_ifd(0x8825)  # the GPS block is there before
    album = analyse_album(pipeline, list(zip(["a.jpeg", "b.png"], originals)))
    outputs = unzip(anonymise_album(album, originals)[0])
    assert sorted(outputs) == ["a.jpg", "b.png", MANIFEST]
    for name in ("a.jpg", "b.png"):
        image = Image.open(io.BytesIO(outputs[name]))
        image.load()
        assert not {"exif", "icc_profile", "comment", "Author", "Location", "xmp"} & set(image.info), name
        assert not image.getexif() and image.format == ("PNG" if name.endswith("png") else "JPEG")
        for secret in (b"Exif", b"SecretCam", b"SecretComment", b"SecretAuthor", b"SecretPlace", b"ICC_PROFILE", b"iCCP"):
            assert secret not in outputs[name], (name, secret)


def test_the_zip_holds_safe_plain_files_and_a_manifest_of_counts(photos, unknown_album):
    data, _ = anonymise_album(unknown_album, [d for _, d in photos])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        manifest = json.loads(archive.read(MANIFEST))
    assert [i.filename for i in infos] == [p.name for p in unknown_album.photos] + [MANIFEST]
    assert all("/" not in i.filename and (i.external_attr >> 16) == 0o644 for i in infos)
    assert [(p["file"], p["faces"], p["hidden"]) for p in manifest["photos"]] == [
        ("collins_nasa_portrait_a.jpg", 1, 1), ("hopper_us_navy_portrait.jpg", 1, 1),
        ("expedition_1_crew.jpg", 3, 3), ("collins_nasa_portrait_b.jpg", 1, 1)]
    assert manifest["hidden"] == 6 and manifest["left_out"] == [] and "Collins" not in json.dumps(manifest)


def test_hiding_changes_only_the_grown_box_and_leaves_the_input_alone():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    before = image.copy()
    hidden = hide(image, [(100.0, 80.0, 150.0, 140.0)])  # grown: x 90-160, y 62-152
    assert np.array_equal(image, before)
    changed = np.argwhere(np.any(hidden != image, axis=2))
    assert changed[:, 0].min() >= 62 and changed[:, 0].max() < 152
    assert changed[:, 1].min() >= 90 and changed[:, 1].max() < 160
    assert np.abs(np.diff(hidden[90:130, 110:140].astype(np.float32), axis=1)).mean() < 5  # no detail left
