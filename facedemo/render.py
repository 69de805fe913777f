"""Drawing what detection and recognition found onto a copy of a photo: boxes, 5 landmarks, labels, blurred faces.

Pure functions: an H x W x 3 uint8 RGB array comes in, a new array comes out, the input is never
changed. Coordinates are in original-image pixels (as `Face` gives them). `max_side` shrinks the
result for display, and the drawing is scaled with it; `source_size` says which size the
coordinates refer to when the array given is already a smaller copy (see `fit`).
"""
from __future__ import annotations

from collections.abc import Sequence

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


def detection_label(number: int, face: Face) -> str:
    """'#1 0.998': the face's number (from 1, left to right) and the detector's confidence (0..1)."""
    return f"#{number} {face.score:.3f}"


def recognition_label(number: int, decision: Decision) -> str:
    """'#1 Eileen 0.42', '#2 Unknown 0.81' or '#3 Unknown' (nobody enrolled): name and distance (model units)."""
    who = decision.identity if decision.accepted else "Unknown"
    if decision.distance is None:
        return f"#{number} {who}"
    return f"#{number} {who} {decision.distance:.2f}"


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
    for number, face in enumerate(faces, 1):
        box = _scaled(face.box, scale)
        _draw_box(draw, box, DETECTION_COLOUR, style)
        _draw_landmarks(draw, [(x * scale, y * scale) for x, y in face.landmarks], style)
        _draw_label(draw, box, detection_label(number, face), DETECTION_COLOUR, style, canvas.size)
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
    for number, fa in enumerate(faces, 1):
        box = _scaled(fa.face.box, scale)
        colour = decision_colour(fa.decision)
        _draw_box(draw, box, colour, style)
        _draw_label(draw, box, recognition_label(number, fa.decision), colour, style, canvas.size)
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


# ----------------------------------------------------------------------------------- internals


class _Style:
    """Line width, landmark radius and font, all grown with the picture so labels stay legible."""

    def __init__(self, line: int, dot: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, pad: int) -> None:
        self.line, self.dot, self.font, self.pad = line, dot, font, pad

    @classmethod
    def for_size(cls, size: tuple[int, int]) -> _Style:
        short = min(size)
        line = max(2, round(short / 250))
        font_px = max(12, round(short / 32))
        return cls(line=line, dot=max(2, line + 1), font=ImageFont.load_default(size=font_px), pad=max(2, font_px // 6))


def _canvas(
    image: np.ndarray, max_side: int | None, source_size: tuple[int, int] | None
) -> tuple[Image.Image, float]:
    """A PIL copy of the photo to draw on, and the factor from coordinates to its pixels."""
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    if max_side is not None and max(pil.size) > max_side:
        shrink = max_side / max(pil.size)
        size = (max(1, round(pil.width * shrink)), max(1, round(pil.height * shrink)))
        pil = pil.resize(size, Image.Resampling.LANCZOS)
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
        region = out.crop((left, top, right, bottom))
        # Pixelate first, then blur: a Gaussian alone can leave a face recognisable to people and models.
        side = max(right - left, bottom - top)
        cells = max(1, side // 12)
        small = region.resize(
            (max(1, (right - left) // cells), max(1, (bottom - top) // cells)), Image.Resampling.BOX
        )
        hidden = small.resize(region.size, Image.Resampling.NEAREST).filter(
            ImageFilter.GaussianBlur(radius=max(2.0, side / 20))
        )
        mask = Image.new("L", region.size, 0)
        ImageDraw.Draw(mask).ellipse((0, 0, region.width - 1, region.height - 1), fill=255)
        out.paste(hidden, (left, top), mask)
    return out


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: RGB, style: _Style) -> None:
    draw.rectangle(tuple(round(v) for v in box), outline=colour, width=style.line)


def _draw_landmarks(draw: ImageDraw.ImageDraw, points: Sequence[tuple[float, float]], style: _Style) -> None:
    r = style.dot
    for x, y in points:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=LANDMARK_COLOUR, outline=(0, 0, 0))


def _draw_label(
    draw: ImageDraw.ImageDraw,
    box: Sequence[float],
    text: str,
    colour: RGB,
    style: _Style,
    size: tuple[int, int],
) -> None:
    """A filled tag above the box, or inside its top edge when there is no room above; kept in the picture."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=style.font)
    width, height = right - left + 2 * style.pad, bottom - top + 2 * style.pad
    x = min(max(0, round(box[0])), max(0, size[0] - width))
    y = round(box[1]) - height
    if y < 0:
        y = max(0, round(box[1]))
    y = min(y, max(0, size[1] - height))
    draw.rectangle((x, y, x + width, y + height), fill=colour)
    draw.text((x + style.pad - left, y + style.pad - top), text, font=style.font, fill=LABEL_TEXT_COLOUR)
