"""Decode and validate an uploaded photo into one RGB uint8 array; every entry point goes through here."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Pillow otherwise decodes truncated files silently with grey filling: we want an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000

ImageSource = Union[bytes, bytearray, str, Path, np.ndarray, Image.Image]


class ImageError(ValueError):
    """The input is not a photo we can use; the message says why in words a person can act on."""


def load(
    source: ImageSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Turn a photo into an H x W x 3 uint8 RGB array (pixels, upright).

    `source` is encoded bytes, a file path, a PIL image or an array (H x W, H x W x 3 or
    H x W x 4; uint8, uint16, or float in 0..1). EXIF orientation is applied, alpha is
    composited on white, 16-bit data is scaled to 8 bits, CMYK and palettes become RGB, and
    only the first frame of an animation is used. Size limits are checked from the header,
    before the pixels are decoded. Raises ImageError for anything else.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        return _to_rgb(source)
    if isinstance(source, (str, Path)):
        data = _read_file(Path(source), max_bytes)
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(f"expected image bytes, a file path or an array, got {type(source).__name__}")
    return _decode(data, max_bytes, max_pixels)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(_too_many_bytes(size, max_bytes))
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"file not found: {path.name}") from None
    except IsADirectoryError:
        raise ImageError(f"{path.name} is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"no permission to read {path.name}") from None


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return f"the file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB"


def _decode(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    if not data:
        raise ImageError("the file is empty")
    if len(data) > max_bytes:
        raise ImageError(_too_many_bytes(len(data), max_bytes))
    with warnings.catch_warnings():
        # Pillow's own bomb guard warns below 2x its limit; ours is stricter and runs first.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                _check_pixels(img.width, img.height, max_pixels)
                img.seek(0)
                return _to_rgb(img)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("the image has too many pixels to decode safely") from None
        except UnidentifiedImageError:
            raise ImageError(
                "not an image format we can read (use JPEG, PNG, WebP, GIF, BMP or TIFF)"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            # Pillow reports truncated and malformed files through many exception types.
            raise ImageError(f"the image file is damaged or incomplete ({_short(exc)})") from None
        except MemoryError:
            raise ImageError("the image is too large to decode in memory") from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width} x {height} pixels ({width * height / 1e6:.1f} MP); "
            f"the limit is {max_pixels / 1e6:.1f} MP"
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    img.load()
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16- and 32-bit greyscale: scale the value range to 8 bits rather than clipping it.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"expected an H x W, H x W x 3 or H x W x 4 image array, got shape {array.shape}")
    _check_pixels(array.shape[1], array.shape[0], max_pixels)
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32)
    elif array.dtype == np.uint16:
        pixels = array.astype(np.float32) / 257.0
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("the image array contains NaN or infinite values")
        pixels = array.astype(np.float32) * (255.0 if array.max(initial=0) <= 1.0 else 1.0)
    else:
        raise ImageError(f"unsupported pixel type {array.dtype}; use uint8, uint16 or float")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4] / 255.0
        pixels = pixels[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
