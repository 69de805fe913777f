"""Stage: an album made ready to publish: every face hidden except those of people who consented, re-encoded, zipped.

Consent is enrolment: a face recognised as an enrolled person stays sharp, and so do, optionally,
the faces of one cluster of unknown faces the uploader marks as themself. Every other face found is
hidden (pixelated, then blurred) at full resolution. Each photo is encoded again from its pixels,
so nothing of the original file travels with it: no EXIF (camera, time, GPS), no XMP, no ICC
profile, no comments. A face the detector misses is not hidden: see README's Albums section.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from facedemo import render
from facedemo.album import Album, AlbumLimits, AlbumPhoto, unique_name
from facedemo.images import ImageSource, load

# How far the hidden area reaches past the detector's box, as fractions of the box's width and
# height: MTCNN's boxes run from the brows to the chin, so forehead, hair line, ears and chin are
# outside them (render's blur grows 15% / 20%; here more, as these photos are published).
GROW_SIDES = 0.2
GROW_UP = 0.3
GROW_DOWN = 0.2
# Blocks across the hidden area's long side, then a Gaussian of BLUR_FRACTION of that side. Either
# alone leaks: embedded at their original landmarks, with faces-pd's 8 people enrolled from their own
# photos, pixelation alone (16 blocks) let SFace and dlib each name 1 of its 37 faces, a Gaussian alone (3%) 2 and 3.
# Together, at 7 blocks and 8%, no hidden face is named on faces-pd or the calibration sets, and
# a hidden face's nearest enrolled person is its own no more often than chance (album_eval; README, Albums).
PIXELATE_CELLS = 7
BLUR_FRACTION = 0.08
JPEG_QUALITY = 90
MANIFEST = "manifest.json"
# Zip members get a fixed date: the zip should not say when the album was processed.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class AnonymiseError(ValueError):
    """An album cannot be anonymised as asked (a cluster it does not have, originals that do not match it)."""


@dataclass(frozen=True)
class PublishedPhoto:
    """One photo of the anonymised album: its file name in the zip and what happened to its faces.

    faces: found in all (those beyond the per-photo limit included). hidden: pixelated and blurred.
    kept_enrolled: left sharp as recognised enrolled people. kept_marked: left sharp as the marked cluster.
    given: the name the photo came with (its path in the folder or zip the album was read from).
    """

    file: str
    faces: int
    hidden: int
    kept_enrolled: int
    kept_marked: int
    given: str = ""


def hide(image: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """A copy of the H x W x 3 uint8 RGB photo with each box (x1, y1, x2, y2 in its pixels), grown by
    GROW_* and clipped to the photo, pixelated to PIXELATE_CELLS blocks and blurred inside an ellipse."""
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    for x1, y1, x2, y2 in boxes:
        width, height = x2 - x1, y2 - y1
        left = max(0, int(np.floor(x1 - GROW_SIDES * width)))
        top = max(0, int(np.floor(y1 - GROW_UP * height)))
        right = min(canvas.width, int(np.ceil(x2 + GROW_SIDES * width)))
        bottom = min(canvas.height, int(np.ceil(y2 + GROW_DOWN * height)))
        if right <= left or bottom <= top:
            continue
        width, height = right - left, bottom - top
        side = max(width, height)
        cell = max(1.0, side / PIXELATE_CELLS)
        blocks = (max(1, round(width / cell)), max(1, round(height / cell)))
        render.hide_area(canvas, (left, top, right, bottom), blocks, max(1.0, BLUR_FRACTION * side))
    return np.asarray(canvas)


def kept(photo: AlbumPhoto, keep_cluster: int | None = None) -> list[bool]:
    """Per face of `photo.analysis.faces`: True when it stays sharp (a recognised enrolled person, or a
    face of cluster `keep_cluster`); faces beyond the per-photo limit are always hidden."""
    return [fa.decision.accepted or (keep_cluster is not None and c == keep_cluster)
            for fa, c in zip(photo.analysis.faces, photo.clusters)]


def encode(image: np.ndarray, kind: str) -> bytes:
    """The pixels alone as a new "JPEG" (quality JPEG_QUALITY) or "PNG" file: no metadata of any kind."""
    if kind != "PNG":
        return render.jpeg(image, JPEG_QUALITY)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def published_name(name: str, taken: set[str]) -> tuple[str, str]:
    """(file name in the zip, "JPEG" or "PNG"): a PNG stays PNG (lossless), anything else becomes JPEG."""
    kind = "PNG" if name.lower().endswith(".png") else "JPEG"
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return unique_name(f"{stem}.{'png' if kind == 'PNG' else 'jpg'}", taken), kind


def anonymise_album(
    album: Album,
    originals: Sequence[ImageSource],
    keep_cluster: int | None = None,
    limits: AlbumLimits = AlbumLimits(),
) -> tuple[bytes, list[PublishedPhoto]]:
    """The album's photos with faces hidden as `kept` says, as a zip (bytes) with MANIFEST, and what
    was done to each photo.

    originals: what `facedemo.album.analyse_album` was given, in the same order (AlbumPhoto.source
    indexes it); each is decoded again here, one at a time, with `limits`' per-photo limits.
    keep_cluster: a cluster number of the album (from 1), or None. AnonymiseError for a cluster the
    album does not have, or an original whose size differs from the one analysed.
    """
    if keep_cluster is not None:
        try:
            album.cluster(keep_cluster)
        except ValueError as exc:
            raise AnonymiseError(str(exc)) from None
    buffer = io.BytesIO()
    published: list[PublishedPhoto] = []
    taken = {MANIFEST}
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in album.photos:
            image = load(originals[photo.source], max_bytes=limits.image_max_bytes,
                         max_pixels=limits.image_max_pixels)
            if (image.shape[1], image.shape[0]) != (photo.analysis.width, photo.analysis.height):
                raise AnonymiseError(f"{photo.name} is not the photo that was analysed (its size differs)")
            sharp = kept(photo, keep_cluster)
            boxes = [fa.face.box for fa, s in zip(photo.analysis.faces, sharp) if not s]
            boxes += [face.box for face in photo.unanalysed]
            file, kind = published_name(photo.name, taken)
            # JPEG data does not compress; PNG is compressed already.
            archive.writestr(_member(file), encode(hide(image, boxes), kind), zipfile.ZIP_STORED)
            marked = sum(1 for fa, c in zip(photo.analysis.faces, photo.clusters)
                         if keep_cluster is not None and c == keep_cluster and not fa.decision.accepted)
            published.append(PublishedPhoto(file, len(photo.analysis.faces) + len(photo.unanalysed), len(boxes),
                                            sum(fa.decision.accepted for fa in photo.analysis.faces), marked,
                                            photo.given or photo.name))
        archive.writestr(_member(MANIFEST), json.dumps(manifest(album, published, keep_cluster), indent=2),
                         zipfile.ZIP_DEFLATED)
    return buffer.getvalue(), published


def manifest(album: Album, published: Sequence[PublishedPhoto], keep_cluster: int | None) -> dict:
    """What the zip's MANIFEST says: per photo its counts, the files left out and why. No names of
    people: the zip may be passed on with the photos."""
    return {
        "photos": [asdict(p) for p in published],
        "faces": sum(p.faces for p in published),
        "hidden": sum(p.hidden for p in published),
        "kept_enrolled": sum(p.kept_enrolled for p in published),
        "kept_marked": sum(p.kept_marked for p in published),
        "marked_cluster": keep_cluster,
        "left_out": [{"file": r.name, "reason": r.reason} for r in album.refused],
        "note": "Faces were hidden where the detector found them; check the photos before publishing.",
    }


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = 0o644 << 16  # a plain file, readable: never a link or executable when unpacked
    return info
