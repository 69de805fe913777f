"""Drawing what detection and recognition found onto a copy of a photo: boxes, 5 landmarks, labels, blurred faces.

Pure functions: an H x W x 3 uint8 RGB array comes in, a new array comes out, the input is never
changed. Coordinates are in original-image pixels (as `Face` gives them). `max_side` shrinks the
result for display, and the drawing is scaled with it; `source_size` says which size the
coordinates refer to when the array given is already a smaller copy (see `fit`).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from facedemo.matching import Decision
from facedemo.results import Face, FaceAnalysis

RGB = tuple[int, int, int]

# Detection makes no statement about identity, so all its boxes share one neutral colour.
DETECTION_COLOUR: RGB = (30, 136, 229)
# Recognition colours by decision; the label says the same in words, so colour is never the only cue.
KNOWN_COLOUR: RGB = (0, 150, 70)
UNKNOWN_COLOUR: RGB = (216, 67, 21)
LANDMARK_COLOUR: RGB = (255, 214, 0)
LABEL_TEXT_COLOUR: RGB = (255, 255, 255)

# Long side, in pixels, of the images the UI shows: enough to read labels, small enough to send quickly.
DISPLAY_MAX_SIDE = 1280


def fit(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The photo shrunk so that its long side is at most `max_side` pixels (unchanged when it already is)."""
    return np.asarray(_canvas(image, max_side, None)[0])


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """An H x W x 3 uint8 RGB image as JPEG bytes (no metadata)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def from_jpeg(data: bytes) -> np.ndarray:
    """The H x W x 3 uint8 RGB image of JPEG bytes made by `jpeg`."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def detection_label(number: int, face: Face) -> str:
    """'1 0.998': the face's number (from 1, as in the faces table) and the detector's confidence (0..1)."""
    return f"{number} {face.score:.3f}"


def recognition_label(number: int, decision: Decision) -> str:
    """'1 Eileen 0.42', '2 Unknown 0.81' or '3 Unknown' (nobody enrolled): name and distance (model units)."""
    who = decision.identity if decision.accepted else "Unknown"
    if decision.distance is None:
        return f"{number} {who}"
    return f"{number} {who} {decision.distance:.2f}"


@dataclass(frozen=True)
class Label:
    """A tag drawn by a face: its text and its rectangle (x1, y1, x2, y2) in picture pixels."""

    text: str
    rect: tuple[int, int, int, int]


def place_labels(
    boxes: Sequence[Sequence[float]], texts: Sequence[str], size: tuple[int, int]
) -> list[Label]:
    """Where each face's tag goes in a picture of `size` (width, height) pixels; boxes in its pixels.

    Tags are sized from the picture's long side, so that they stay legible when the page shrinks the
    picture to a phone's width. A tag goes above its box, else below, else inside its top edge,
    wherever it covers no other tag and no other face; where the whole text finds no such place,
    only the face's number is drawn (the faces table carries the rest) in the first free place, or
    above the box when none is free.
    """
    font = _label_font(size)
    placed: list[Label] = []
    for n, (box, text) in enumerate(zip(boxes, texts)):
        others = [tuple(b) for m, b in enumerate(boxes) if m != n]
        label = None
        for candidate in (text, text.split(" ", 1)[0]):
            rects = _label_spots(box, _text_size(candidate, font), size)
            free = [r for r in rects if not any(_overlaps(r, o) for o in [*others, *(p.rect for p in placed)])]
            if free:
                label = Label(candidate, free[0])
                break
        placed.append(label or Label(candidate, rects[0]))
    return placed


def decision_colour(decision: Decision) -> RGB:
    """Green for an accepted identity, orange-red for unknown."""
    return KNOWN_COLOUR if decision.accepted else UNKNOWN_COLOUR


def draw_detection(
    image: np.ndarray,
    faces: Sequence[Face],
    blur: Sequence[bool] | None = None,
    max_side: int | None = DISPLAY_MAX_SIDE,
    source_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The photo with each face's box, its 5 landmarks and a label with its number and confidence.

    blur: one flag per face; flagged faces are blurred before drawing. max_side: the long side of
    the result in pixels at most (None keeps the photo's size). source_size: (width, height) of
    the photo the coordinates refer to, when `image` is a smaller copy of it.
    """
    canvas, scale = _canvas(image, max_side, source_size)
    canvas = _blur_flagged(canvas, [f.box for f in faces], blur, scale)
    draw = ImageDraw.Draw(canvas)
    style = _Style.for_size(canvas.size)
    boxes = [_scaled(face.box, scale) for face in faces]
    for face, box in zip(faces, boxes):
        _draw_box(draw, box, DETECTION_COLOUR, style)
        _draw_landmarks(draw, [(x * scale, y * scale) for x, y in face.landmarks], style)
    texts = [detection_label(number, face) for number, face in enumerate(faces, 1)]
    _draw_labels(draw, place_labels(boxes, texts, canvas.size), [DETECTION_COLOUR] * len(faces), canvas.size)
    return np.asarray(canvas)


def draw_recognition(
    image: np.ndarray,
    faces: Sequence[FaceAnalysis],
    blur_unknown: bool = False,
    max_side: int | None = DISPLAY_MAX_SIDE,
    source_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The photo with each face's box and a label with its number, name or 'Unknown', and distance.

    Boxes are green when the face is identified, orange-red when it is not. blur_unknown: blur
    every face that is not identified. max_side, source_size: as in `draw_detection`.
    """
    canvas, scale = _canvas(image, max_side, source_size)
    flags = [blur_unknown and not fa.decision.accepted for fa in faces]
    canvas = _blur_flagged(canvas, [fa.face.box for fa in faces], flags, scale)
    draw = ImageDraw.Draw(canvas)
    style = _Style.for_size(canvas.size)
    boxes = [_scaled(fa.face.box, scale) for fa in faces]
    colours = [decision_colour(fa.decision) for fa in faces]
    for box, colour in zip(boxes, colours):
        _draw_box(draw, box, colour, style)
    texts = [recognition_label(number, fa.decision) for number, fa in enumerate(faces, 1)]
    _draw_labels(draw, place_labels(boxes, texts, canvas.size), colours, canvas.size)
    return np.asarray(canvas)


def unknown_flags(faces: Sequence[FaceAnalysis]) -> list[bool]:
    """One flag per face: True where recognition did not identify it (what `blur` options hide)."""
    return [not fa.decision.accepted for fa in faces]


def explainer(
    photo: np.ndarray, faces: Sequence[Face], chips: Sequence[np.ndarray],
    distances: Sequence[tuple[str, float]], threshold: float, width: int = 960,
) -> np.ndarray:
    """One picture of the flow for people: the photo with its detected faces, the aligned chips, and
    each (caption, distance) as a bar against the threshold (model units). H x `width` x 3 uint8 RGB."""
    font = ImageFont.load_default(size=18)
    detected = Image.fromarray(draw_detection(photo, faces, max_side=width // 2))
    side = min(160, detected.height // 2)
    bar_top = max(detected.height, 2 * side + 40) + 30
    canvas = Image.new("RGB", (width, bar_top + 50 * len(distances) + 20), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, 0), "1. faces found", font=font, fill=(0, 0, 0))
    canvas.paste(detected, (0, 26))
    x = detected.width + 30
    draw.text((x, 0), "2. straightened", font=font, fill=(0, 0, 0))
    for n, chip in enumerate(chips):
        tile = Image.fromarray(chip).resize((side, side), Image.Resampling.LANCZOS)
        canvas.paste(tile, (x + n * (side + 12), 26))
    draw.text((0, bar_top - 26), f"3-4. distances (below {threshold:.2f}: the same person)", font=font, fill=(0, 0, 0))
    scale = (width - 40) / max(2 * threshold, *(d for _, d in distances))
    for n, (caption, distance) in enumerate(distances):
        y = bar_top + 50 * n
        colour = KNOWN_COLOUR if distance < threshold else UNKNOWN_COLOUR
        draw.rectangle((0, y + 22, round(distance * scale), y + 40), fill=colour)
        draw.text((0, y), f"{caption}: {distance:.2f}", font=font, fill=(0, 0, 0))
    line_x = round(threshold * scale)
    draw.line((line_x, bar_top - 4, line_x, bar_top + 50 * len(distances)), fill=(0, 0, 0), width=3)
    return np.asarray(canvas)


def face_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], width: int = 960) -> np.ndarray:
    """One picture with a row per (caption, face thumbnails): the caption above, the thumbnails
    (each T x T x 3 uint8) side by side below it, as many as fit in `width` pixels. H x width x 3."""
    font = _font(18)
    side = max((t.shape[0] for _, thumbs in rows for t in thumbs), default=64)
    gap, caption = 4, 26
    per_row = max(1, (width + gap) // (side + gap))
    canvas = Image.new("RGB", (width, max(1, len(rows) * (caption + side + 2 * gap))), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for n, (text, thumbs) in enumerate(rows):
        top = n * (caption + side + 2 * gap)
        draw.text((0, top + 2), text, font=font, fill=(0, 0, 0))
        for k, thumb in enumerate(thumbs[:per_row]):
            canvas.paste(Image.fromarray(thumb), (k * (side + gap), top + caption))
    return np.asarray(canvas)


# ----------------------------------------------------------------------------------- internals


# Tag text height as a fraction of the picture's long side: the page shows a 1280-px picture 326 px
# wide on a 390-px phone, where 1/28 of it is still 11.6 px of text, and about 21 px on a desktop.
LABEL_TEXT_FRACTION = 1 / 28
MIN_LABEL_TEXT_PX = 12


class _Style:
    """Line width and landmark radius, grown with the picture so they stay visible."""

    def __init__(self, line: int, dot: int) -> None:
        self.line, self.dot = line, dot

    @classmethod
    def for_size(cls, size: tuple[int, int]) -> _Style:
        line = max(2, round(max(size) / 400))
        return cls(line=line, dot=max(2, line + 1))


def label_text_px(size: tuple[int, int]) -> int:
    """The height in pixels of tag text in a picture of `size` (width, height)."""
    return max(MIN_LABEL_TEXT_PX, round(max(size) * LABEL_TEXT_FRACTION))


@lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _label_font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return _font(label_text_px(size))


def _text_size(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> tuple[int, int]:
    """Width and height of the tag around `text`, padding included."""
    left, top, right, bottom = font.getbbox(text)
    pad = _pad(font)
    return right - left + 2 * pad, bottom - top + 2 * pad


def _pad(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return max(2, round(getattr(font, "size", 12) / 6))


def _label_spots(
    box: Sequence[float], tag: tuple[int, int], size: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """The rectangles a tag of `tag` (width, height) may take by `box`: above, below, inside its top
    edge; each moved into the picture."""
    width, height = tag
    x = min(max(0, round(box[0])), max(0, size[0] - width))
    spots = []
    for y in (round(box[1]) - height, round(box[3]), round(box[1])):
        y = min(max(0, y), max(0, size[1] - height))
        spots.append((x, y, x + width, y + height))
    return spots


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _canvas(
    image: np.ndarray, max_side: int | None, source_size: tuple[int, int] | None
) -> tuple[Image.Image, float]:
    """A PIL copy of the photo to draw on, and the factor from coordinates to its pixels."""
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    if max_side is not None and max(pil.size) > max_side:
        shrink = max_side / max(pil.size)
        size = (max(1, round(pil.width * shrink)), max(1, round(pil.height * shrink)))
        # Bilinear, antialiased when shrinking like every Pillow filter but NEAREST, a little softer
        # than LANCZOS: ~10 ms instead of ~22 for a 1920 x 1080 photo (facedemo.tools.bench_page).
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    else:
        pil = pil.copy()
    source_width = source_size[0] if source_size is not None else image.shape[1]
    return pil, pil.width / source_width


def _scaled(box: Sequence[float], scale: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return x1 * scale, y1 * scale, x2 * scale, y2 * scale


def _blur_flagged(
    canvas: Image.Image,
    boxes: Sequence[Sequence[float]],
    flags: Sequence[bool] | None,
    scale: float,
) -> Image.Image:
    if not flags or not any(flags):
        return canvas
    out = canvas.copy()
    for box, flagged in zip(boxes, flags):
        if not flagged:
            continue
        x1, y1, x2, y2 = _scaled(box, scale)
        # MTCNN boxes are tight (brows to chin); widen them so hair line and ears are hidden too.
        grow_x, grow_y = 0.15 * (x2 - x1), 0.2 * (y2 - y1)
        left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
        right, bottom = min(out.width, int(np.ceil(x2 + grow_x))), min(out.height, int(np.ceil(y2 + grow_y)))
        if right <= left or bottom <= top:
            continue
        side = max(right - left, bottom - top)
        cells = max(1, side // 12)
        blocks = (max(1, (right - left) // cells), max(1, (bottom - top) // cells))
        hide_area(out, (left, top, right, bottom), blocks, max(2.0, side / 20))
    return out


def hide_area(canvas: Image.Image, area: tuple[int, int, int, int], blocks: tuple[int, int], radius: float) -> None:
    """Hide `area` (left, top, right, bottom, in `canvas` pixels) of `canvas`, in place, inside the
    area's ellipse: averaged down to `blocks` (columns, rows), blown up again, then blurred with a
    Gaussian of `radius` pixels. Pixelated first, then blurred: a Gaussian alone can leave a face
    recognisable to people and models."""
    region = canvas.crop(area)
    hidden = region.resize(blocks, Image.Resampling.BOX).resize(region.size, Image.Resampling.NEAREST)
    hidden = hidden.filter(ImageFilter.GaussianBlur(radius=radius))
    mask = Image.new("L", region.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, region.width - 1, region.height - 1), fill=255)
    canvas.paste(hidden, area[:2], mask)


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: RGB, style: _Style) -> None:
    draw.rectangle(tuple(round(v) for v in box), outline=colour, width=style.line)


def _draw_landmarks(draw: ImageDraw.ImageDraw, points: Sequence[tuple[float, float]], style: _Style) -> None:
    r = style.dot
    for x, y in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=LANDMARK_COLOUR, outline=(0, 0, 0))


def _draw_labels(draw: ImageDraw.ImageDraw, labels: Sequence[Label], colours: Sequence[RGB], size: tuple[int, int]) -> None:
    font = _label_font(size)
    pad = _pad(font)
    for label, colour in zip(labels, colours):
        left, top, _, _ = font.getbbox(label.text)
        x, y = label.rect[0], label.rect[1]
        draw.rectangle(label.rect, fill=colour)
        draw.text((x + pad - left, y + pad - top), label.text, font=font, fill=LABEL_TEXT_COLOUR)
