"""Photo transformations the engine tests share: another copy of the same person, a group photo."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def augment(image: np.ndarray) -> np.ndarray:
    """Crop, rescale, brighten and JPEG re-encode a photo: the same person, other pixels."""
    h, w = image.shape[:2]
    pil = Image.fromarray(image).crop((int(0.06 * w), int(0.04 * h), int(0.97 * w), int(0.98 * h)))
    pil = pil.resize((int(pil.width * 0.8), int(pil.height * 0.8)), Image.Resampling.BILINEAR)
    pil = ImageEnhance.Brightness(pil).enhance(1.25)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=70)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def compose(*photos: np.ndarray, height: int = 400) -> np.ndarray:
    """Photos scaled to one height and placed side by side on grey: a group photo."""
    scaled = []
    for photo in photos:
        pil = Image.fromarray(photo)
        scaled.append(np.asarray(pil.resize((int(pil.width * height / pil.height), height))))
    gap = np.full((height, 40, 3), 200, dtype=np.uint8)
    parts = [gap]
    for s in scaled:
        parts += [s, gap]
    return np.concatenate(parts, axis=1)
