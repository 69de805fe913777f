"""Precision and recall of the face detectors on hand-labelled photos and on photos made from them.

The labels (`tests/data/faces-pd/LABELS.json`) list every face in every photo of the shipped
public-domain set, counted by eye once. Three sets are measured:

- "labelled": each labelled photo at its own size;
- "shrunk": the same photos 500 px wide (the group photos' faces become 23-58 px, where false faces
  of 22-38 px were reported and a 37-px face was missed);
- "generated": small faces (22-60 px wide) cut from the portraits with a soft oval edge and pasted
  into the cluttered ISS photos, at seeded random places and sizes; their labels are where they were
  pasted, plus each photo's own labelled face;
- "small": 240 faces of 28-48 px pasted into the group and ISS photos 500-640 px wide, blurred,
  darkened, rotated or low in contrast, re-encoded as JPEG (`small_face_photos`).

A detection is a true face when it overlaps an unclaimed labelled face by IoU >= 0.4 (the detectors
frame faces differently from the labels: IoU 0.6-0.9 on clear faces); best scores claim first. A
second detection of a claimed face, or one of nothing, is a false detection, unless its centre lies
in an 'ignore' box. Run: python -m facedemo.tools.detection_eval [--json OUT] [--detectors mtcnn,yunet]
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facedemo.images import load
from facedemo.results import Face

FACES_PD = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces-pd"
MATCH_IOU = 0.4
SHRUNK_WIDTH = 500


@dataclass(frozen=True)
class LabelledPhoto:
    """A photo and where its faces are. boxes: K x 4 (x1, y1, x2, y2) edges in its pixels."""

    name: str
    image: np.ndarray
    faces: np.ndarray
    ignore: np.ndarray


def read_labels(root: Path | str = FACES_PD) -> dict:
    """LABELS.json of a folder: {"photos": {relative path: {"size", "faces", "ignore"?, "notes"?}}}."""
    return json.loads((Path(root) / "LABELS.json").read_text())


def _boxes(rows: Sequence) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def labelled_photos(root: Path | str = FACES_PD, width: int | None = None) -> list[LabelledPhoto]:
    """Every labelled photo, at its own size or resized to `width` px wide (labels scaled with it)."""
    photos = []
    for relative, entry in read_labels(root)["photos"].items():
        image = load(Path(root) / relative)
        faces, ignore = _boxes(entry["faces"]), _boxes(entry.get("ignore", []))
        name = relative
        if width is not None and image.shape[1] != width:
            scale = width / image.shape[1]
            size = (width, max(1, round(image.shape[0] * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
            faces, ignore, name = faces * scale, ignore * scale, f"{relative}@{width}px"
        photos.append(LabelledPhoto(name, image, faces, ignore))
    return photos


def generated_photos(root: Path | str = FACES_PD, per_photo: int = 8, seed: int = 13,
                     widths: tuple[float, float] = (22.0, 60.0)) -> list[LabelledPhoto]:
    """The ISS photos (`*_onboard.jpg`, one labelled face each) with `per_photo` small faces pasted in.

    Faces come from the portraits (their labelled boxes with half a face of context around them),
    scaled to a face width drawn uniformly from `widths`, blended in through a feathered oval so
    that no rectangle edge is left, and placed where they overlap no other face or ignore box.
    """
    labels = read_labels(root)["photos"]
    donors = []
    for relative, entry in labels.items():
        if "portrait" in relative and len(entry["faces"]) == 1:
            donors.append((load(Path(root) / relative), np.asarray(entry["faces"][0], dtype=np.float64)))
    rng = np.random.default_rng(seed)
    photos = []
    if not donors:
        return photos
    for relative, entry in labels.items():
        if not relative.endswith("_onboard.jpg"):
            continue
        canvas = Image.fromarray(load(Path(root) / relative))
        faces, ignore = list(_boxes(entry["faces"])), _boxes(entry.get("ignore", []))
        taken = [*faces, *ignore]
        for _ in range(per_photo):
            donor, box = donors[rng.integers(len(donors))]
            width = rng.uniform(*widths)
            patch, face = _face_patch(donor, box, width)
            spot = _free_spot(rng, canvas, patch, taken, attempts=200)
            if spot is None:
                continue
            x, y, outer = spot
            canvas.paste(patch, (round(x), round(y)), _oval_mask(patch.size))
            faces.append(np.array([x, y, x, y]) + face)
            taken.append(outer)
        photos.append(LabelledPhoto(f"generated/{Path(relative).name}", np.asarray(canvas), _boxes(faces), ignore))
    return photos


def small_face_photos(root: Path | str = FACES_PD, count: int = 80, per_photo: int = 3, seed: int = 21,
                      widths: tuple[float, float] = (28.0, 48.0)) -> list[LabelledPhoto]:
    """Small faces made hard: the group and ISS photos 500 or 640 px wide, each with `per_photo`
    faces of 28-48 px from the labelled photos pasted in, every fifth photo's faces blurred,
    darkened, rotated by up to 25 degrees or low in contrast, and the whole re-encoded as JPEG
    (quality 60-90). The photo's own faces are 'ignore' boxes (at this size some are too small to
    demand); faces too hard to count as clear are not used as donors (the half-hidden girl, the
    rotated crew, the cameraman)."""
    import io

    from PIL import ImageEnhance

    labels = read_labels(root)["photos"]
    donors, backgrounds = [], []
    for relative, entry in labels.items():
        image = load(Path(root) / relative)
        if "sts131" not in relative and "camera" not in relative:
            hidden = [498, 318, 556, 393]  # the blurred girl half hidden behind an arm
            donors += [(image, np.asarray(b, dtype=np.float64)) for b in entry["faces"] if b != hidden]
        if relative.startswith("_groups/") or relative.endswith("_onboard.jpg"):
            backgrounds.append((relative, image, _boxes(entry["faces"])))
    if not donors or not backgrounds:
        return []
    rng = np.random.default_rng(seed)
    photos = []
    for k in range(count):
        relative, background, own = backgrounds[k % len(backgrounds)]
        width = (500, 640)[k % 2]
        scale = width / background.shape[1]
        canvas = Image.fromarray(background).resize((width, round(background.shape[0] * scale)), Image.Resampling.LANCZOS)
        taken, faces = list(own * scale), []
        for _ in range(per_photo):
            donor, box = donors[rng.integers(len(donors))]
            patch, face = _face_patch(donor, box, rng.uniform(*widths))
            change = k % 5
            if change == 1:
                patch = patch.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.2)))
            elif change == 2:
                patch = ImageEnhance.Brightness(patch).enhance(rng.uniform(0.35, 0.6))
            elif change == 3:
                patch = patch.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
            elif change == 4:
                patch = ImageEnhance.Contrast(patch).enhance(rng.uniform(0.4, 0.6))
            spot = _free_spot(rng, canvas, patch, taken, attempts=300)
            if spot is None:
                continue
            x, y, outer = spot
            canvas.paste(patch, (round(x), round(y)), _oval_mask(patch.size))
            faces.append(np.array([round(x), round(y), round(x), round(y)]) + face)
            taken.append(outer)
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=int(rng.uniform(60, 90)))
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        photos.append(LabelledPhoto(f"small/{Path(relative).stem}#{k}", image, _boxes(faces), own * scale))
    return photos


def _face_patch(donor: np.ndarray, box: np.ndarray, width: float) -> tuple[Image.Image, np.ndarray]:
    """The face with half its size of context on every side, scaled to `width` px of face; and the
    face's box within the patch."""
    x1, y1, x2, y2 = box
    margin = 0.5 * max(x2 - x1, y2 - y1)
    crop = (max(0, x1 - margin), max(0, y1 - margin), min(donor.shape[1], x2 + margin), min(donor.shape[0], y2 + margin))
    scale = width / (x2 - x1)
    size = (max(1, round((crop[2] - crop[0]) * scale)), max(1, round((crop[3] - crop[1]) * scale)))
    patch = Image.fromarray(donor).crop(tuple(round(v) for v in crop)).resize(size, Image.Resampling.LANCZOS)
    sx, sy = size[0] / (round(crop[2]) - round(crop[0])), size[1] / (round(crop[3]) - round(crop[1]))
    face = np.array([(x1 - round(crop[0])) * sx, (y1 - round(crop[1])) * sy, (x2 - round(crop[0])) * sx,
                     (y2 - round(crop[1])) * sy])
    return patch, face


def _free_spot(
    rng: np.random.Generator, canvas: Image.Image, patch: Image.Image, taken: list[np.ndarray], attempts: int
) -> tuple[float, float, np.ndarray] | None:
    """A random top-left corner (x, y) where `patch` overlaps none of the `taken` boxes, and the patch's
    box there; None after `attempts` tries."""
    for _attempt in range(attempts):
        x = rng.uniform(0, canvas.width - patch.width)
        y = rng.uniform(0, canvas.height - patch.height)
        outer = np.array([x, y, x + patch.width, y + patch.height])
        if all(_iou(outer, t) == 0 for t in taken):
            return x, y, outer
    return None


def _oval_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse((0.08 * w, 0.04 * h, 0.92 * w, 0.96 * h), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(1.0, 0.06 * min(w, h))))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Outcome:
    """One detector on one photo: the labels found, missed, and the false detections (Face objects)."""

    found: list[int]
    missed: list[int]
    false: list[Face]
    ignored: list[Face]


def match(faces: Sequence[Face], photo: LabelledPhoto, min_iou: float = MATCH_IOU) -> Outcome:
    """Detections against labels: best score first, each claims the unclaimed label it overlaps most."""
    claimed: set[int] = set()
    false, ignored = [], []
    for face in sorted(faces, key=lambda f: -f.score):
        box = np.asarray(face.box)
        overlaps = [(_iou(box, label), k) for k, label in enumerate(photo.faces) if k not in claimed]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= min_iou:
            claimed.add(best[1])
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in photo.ignore):
            ignored.append(face)
        else:
            false.append(face)
    found = sorted(claimed)
    return Outcome(found, [k for k in range(len(photo.faces)) if k not in claimed], false, ignored)


def measure(detect: Callable[[np.ndarray], list[Face]], photos: Sequence[LabelledPhoto]) -> dict:
    """Recall, precision and what was missed or false, for one detector over `photos`."""
    faces = found = 0
    misses, falses, seconds = [], [], 0.0
    for photo in photos:
        start = time.perf_counter()
        detections = detect(photo.image)
        seconds += time.perf_counter() - start
        outcome = match(detections, photo)
        faces += len(photo.faces)
        found += len(outcome.found)
        misses += [{"photo": photo.name, "box": [round(float(v)) for v in photo.faces[k]],
                    "width_px": round(float(photo.faces[k][2] - photo.faces[k][0]))} for k in outcome.missed]
        falses += [{"photo": photo.name, "box": [round(v) for v in f.box], "score": round(f.score, 3),
                    "width_px": round(f.width)} for f in outcome.false]
    detections = found + len(falses)
    return {
        "photos": len(photos),
        "faces": faces,
        "found": found,
        "false": len(falses),
        "recall": round(found / faces, 4) if faces else None,
        "precision": round(found / detections, 4) if detections else None,
        "seconds": round(seconds, 2),
        "missed_faces": misses,
        "false_detections": falses,
    }


def evaluation_sets(root: Path | str = FACES_PD) -> dict[str, list[LabelledPhoto]]:
    """The three sets the module docstring describes, by name."""
    return {
        "labelled": labelled_photos(root),
        "shrunk": labelled_photos(root, SHRUNK_WIDTH),
        "generated": generated_photos(root),
        "small": small_face_photos(root),
    }


def evaluate(detectors: dict[str, Callable[[np.ndarray], list[Face]]], root: Path | str = FACES_PD) -> dict:
    """{set name: {detector name: `measure`'s figures}} plus each detector's totals over all sets."""
    sets = evaluation_sets(root)
    report: dict = {name: {} for name in sets}
    report["all"] = {}
    for detector, detect in detectors.items():
        for name, photos in sets.items():
            report[name][detector] = measure(detect, photos)
        parts = [report[name][detector] for name in sets]
        faces, found, false = (sum(p[key] for p in parts) for key in ("faces", "found", "false"))
        report["all"][detector] = {
            "faces": faces, "found": found, "false": false,
            "recall": round(found / faces, 4), "precision": round(found / max(1, found + false), 4),
        }
    return report


def compare_detectors(pipeline, root: Path | str = FACES_PD, detectors: Sequence[str] | None = None) -> dict:
    """Every detector of facedemo.detection.DETECTORS (or `detectors`) side by side through `pipeline`."""
    from facedemo.detection import DETECTORS

    chosen = list(detectors or DETECTORS)
    return evaluate({name: (lambda image, n=name: pipeline.detect(image, n)) for name in chosen}, root)


def detectors_report(pipeline, root: Path | str) -> dict:
    """Both detectors side by side on a dataset folder, for `evaluate`'s report.

    With a LABELS.json in `root`: recall, precision, faces found and false detections on the
    labelled photos at their own size and 500 px wide. Without: on every photo of the
    person-per-folder set, faces found by each detector, photos where it found none, and how many
    faces both found (IoU >= 0.4), with the time each took.
    """
    from facedemo.detection import DETECTORS
    from facedemo.tools.dataset import read_dataset

    root = Path(root)
    if (root / "LABELS.json").is_file():
        sets = {"labelled": labelled_photos(root), "shrunk": labelled_photos(root, SHRUNK_WIDTH)}
        keys = ("photos", "faces", "found", "false", "recall", "precision", "seconds")
        return {name: {d: {k: v for k, v in measure(lambda image, d=d: pipeline.detect(image, d), photos).items() if k in keys}
                       for d in DETECTORS} for name, photos in sets.items()}
    found: dict[str, list[list[Face]]] = {d: [] for d in DETECTORS}
    seconds = dict.fromkeys(DETECTORS, 0.0)
    for identity in read_dataset(root):
        for path in identity.photos:
            try:
                image = load(path)
            except Exception:  # unreadable photos are evaluate's to report
                continue
            for d in DETECTORS:
                start = time.perf_counter()
                found[d].append(pipeline.detect(image, d))
                seconds[d] += time.perf_counter() - start
    report: dict = {d: {"photos": len(found[d]), "faces_found": sum(map(len, found[d])),
                        "photos_without_face": sum(1 for faces in found[d] if not faces),
                        "seconds": round(seconds[d], 2)} for d in DETECTORS}
    first, *others = DETECTORS
    for other in others:
        report[f"found_by_{first}_and_{other}"] = sum(
            sum(1 for f in mine if any(_iou(np.asarray(f.box), np.asarray(g.box)) >= MATCH_IOU for g in theirs))
            for mine, theirs in zip(found[first], found[other])
        )
    return report


def summary_lines(report: dict) -> list[str]:
    """One line per set and detector: recall, precision, faces found, false detections."""
    lines = []
    for name in ("labelled", "shrunk", "generated", "small", "all"):
        for detector, r in report.get(name, {}).items():
            lines.append(
                f"{name:9s} {detector:6s} recall {r['found']}/{r['faces']} ({r['recall']:.3f}), "
                f"precision {r['precision']:.3f}, {r['false']} false"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facedemo.tools.detection_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the full report (misses and false detections too) to this file")
    parser.add_argument("--detectors", help="comma-separated detector ids (default: all)")
    parser.add_argument("--root", default=str(FACES_PD), help="a folder with LABELS.json (default: the shipped faces-pd)")
    args = parser.parse_args(argv)
    from facedemo.pipeline import Pipeline

    report = compare_detectors(Pipeline(), args.root, args.detectors.split(",") if args.detectors else None)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
