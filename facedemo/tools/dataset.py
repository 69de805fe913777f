"""Person-per-folder photo sets (DIR/<identity>/<image>) and the galleries built from them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedemo.detection import primary_face
from facedemo.images import ImageError, load
from facedemo.matching import Gallery, Subject
from facedemo.results import Face

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}


class DatasetError(ValueError):
    """A dataset folder is missing or holds no usable identity."""


@dataclass(frozen=True)
class Identity:
    """One person's folder: its name and photo files sorted by file name."""

    name: str
    photos: tuple[Path, ...]


def read_dataset(root: Path | str) -> list[Identity]:
    """Identities of a person-per-folder set, sorted by name.

    Folders starting with "_" (group photos, other material) are not identities; files
    without an image suffix are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    identities = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        photos = tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if photos:
            identities.append(Identity(folder.name, photos))
    if not identities:
        raise DatasetError(f"no identity folders with photos in {root} (expected DIR/<identity>/<image>)")
    return identities


def primary_face_of(pipeline, path: Path) -> tuple[np.ndarray, Face] | None:
    """The photo (H x W x 3 uint8) and its primary face, or None when unreadable or faceless."""
    try:
        image = load(path)
    except ImageError:
        return None
    face = primary_face(pipeline.detect(image))
    return None if face is None else (image, face)


def gallery_from_folder(pipeline, root: Path | str, model_id: str | None = None) -> Gallery:
    """A gallery with one subject per identity folder, one template per photo with a face.

    Subject ids are the folder names. Photos that cannot be read or show no face are skipped.
    """
    model_id = model_id or pipeline.model_id
    subjects = []
    for identity in read_dataset(root):
        found = [f for f in (primary_face_of(pipeline, path) for path in identity.photos) if f is not None]
        rows = [pipeline.embed(image, [face], model_id)[0] for image, face in found]
        if rows:
            subjects.append(Subject(identity.name, identity.name, np.stack(rows)))
    return Gallery.from_subjects(subjects, model_id)
