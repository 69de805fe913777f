"""Decode and validate an uploaded photo into one RGB uint8 array; every entry point goes through here."""
from __future__ import annotations

import functools
import io
import stat
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Pillow otherwise decodes truncated files silently with grey filling: we want an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000

# The only decoders an upload may reach. Pillow would otherwise also try EPS (which runs Ghostscript
# on the file), PSD, FITS and a dozen rare formats whose decoders see far less scrutiny.
# JPEG includes the multi-picture JPEGs (MPO) many cameras write; AVIF is read when this Pillow
# was built with it. PPM is Netpbm's grey and colour formats (.pgm, .ppm, .pbm: a short text header,
# then raw samples), the format of research face sets such as ORL / AT&T.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "PPM")
_READABLE = "use JPEG, PNG, WebP, GIF, BMP, TIFF or PGM/PPM"

# Signatures of formats we read, so that a file of a known format that fails to open is called
# damaged rather than "not an image": the user then knows to re-export it, not to convert it.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"P5\n", "PGM"),
    (b"P6\n", "PPM"),
)
# ISO base media "ftyp" brands of HEIC/HEIF, the iPhone's default photo format, often renamed .jpg.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}

# warnings.catch_warnings swaps process-wide state; serialise our use of it (only around the header
# and EXIF parse, which take microseconds) so that concurrent requests never restore each other's filters.
_WARNINGS_LOCK = threading.Lock()

EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow raises for malformed headers, metadata and pixel data.
_PILLOW_FAILURES = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, struct.error,
                    ZeroDivisionError)

ImageSource = bytes | bytearray | str | Path | np.ndarray | Image.Image


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
    only the first frame of an animation is used. Only the decoders in FORMATS are reached; a
    path must name a regular file. Size limits (max_bytes of encoded data, max_pixels) are checked
    from the file size and the header, before the pixels are decoded. Raises ImageError, with a
    one-line message, for anything else.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        try:
            source.load()
            return _upright(_to_rgb(source), _orientation(source))
        except _PILLOW_FAILURES as exc:
            raise ImageError(f"the image cannot be converted to RGB ({_short(exc)})") from None
    if isinstance(source, (str, Path)):
        data = _read_file(Path(source), max_bytes)
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(f"expected image bytes, a file path or an array, got {type(source).__name__}")
    return _decode(data, max_bytes, max_pixels)


def _read_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing anything that is not a regular file and reading at most max_bytes + 1."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(f"{path.name} is a folder, not an image file")
        if not stat.S_ISREG(mode):
            # A FIFO would block forever and /dev/zero would never end: neither is a photo.
            raise ImageError(f"{path.name} is not a regular file")
        with open(path, "rb") as f:
            # Bounded even though the size was checked: the file may grow between stat and read.
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"file not found: {path.name}") from None
    except IsADirectoryError:
        raise ImageError(f"{path.name} is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"no permission to read {path.name}") from None
    except OSError as exc:
        raise ImageError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        size = max(len(data), _size_or_zero(path))
        raise ImageError(_too_many_bytes(size, max_bytes))
    return data


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _too_many_bytes(size: int, max_bytes: int) -> str:
    size_text, limit_text = f"{size / 2**20:.1f} MB", f"{max_bytes / 2**20:.1f} MB"
    if size_text == limit_text:  # just over the limit: rounded, both would read the same
        size_text, limit_text = f"{size:,} bytes", f"{max_bytes:,} bytes"
    return f"the file is {size_text}; the limit is {limit_text}"


def _decode(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    if not data:
        raise ImageError("the file is empty")
    if len(data) > max_bytes:
        raise ImageError(_too_many_bytes(len(data), max_bytes))
    if _is_heif(data):
        raise ImageError(
            "this is a HEIC/HEIF photo (the iPhone's format), not a format we can read; "
            "export it as JPEG (iPhone: Settings > Camera > Formats > Most Compatible)"
        )
    try:
        img = _open(data)
        with img:
            _check_pixels(img.width, img.height, max_pixels)
            img.seek(0)
            img.load()  # decodes the pixels: every error of damaged data surfaces here
            return _upright(_to_rgb(img), _orientation(img))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image has too many pixels to decode safely; the limit is {max_pixels / 1e6:.1f} MP"
        ) from None
    except UnidentifiedImageError:
        known = _known_format(data)
        if known:
            raise ImageError(f"the {known} file is damaged or incomplete (its header cannot be read)") from None
        raise ImageError(f"not an image format we can read ({_READABLE})") from None
    except _PILLOW_FAILURES as exc:
        # Pillow reports truncated and malformed files through many exception types.
        kind = _known_format(data) or "image"
        raise ImageError(f"the {kind} file is damaged or incomplete ({_short(exc)})") from None
    except MemoryError:
        raise ImageError("the image is too large to decode in memory") from None


def _open(data: bytes) -> Image.Image:
    """Parse the header only (no pixels are decoded), with Pillow's bomb guard raised as an error."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        _quiet_exif_warnings()  # JPEG headers are read with their EXIF block (for the resolution)
        # Pillow only warns between 1x and 2x its own limit. Ours is usually stricter and runs next,
        # but a warning printed to stderr would still break the CLI's one-line errors.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=_registered_formats())
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None


def _quiet_exif_warnings() -> None:
    # Pillow warns (UserWarning) about malformed EXIF while parsing it. The pixels are fine, the
    # photo is used as stored, and the warning would only add a stray line to the CLI's output.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of a decoded image; 1 (as stored) when absent, invalid or unreadable.

    Call only after img.load(): for some formats (PNG) getexif() would otherwise decode the pixels
    itself, and the error of a damaged file would be mistaken for an unreadable EXIF block.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        _quiet_exif_warnings()
        try:
            value = img.getexif().get(EXIF_ORIENTATION, 1)
        except _PILLOW_FAILURES:
            return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    if orientation not in _UPRIGHT:
        return rgb
    return np.asarray(Image.fromarray(rgb).transpose(_UPRIGHT[orientation]))


def file_extensions() -> list[str]:
    """The file name endings of the formats `load` decodes here (".jpg", ".png", ...), for file pickers."""
    formats = set(_registered_formats())
    return sorted(ext for ext, name in Image.registered_extensions().items() if name in formats)


@functools.lru_cache(maxsize=1)
def _registered_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format this Pillow build lacks (AVIF is optional).
    Image.init()
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _is_heif(data: bytes) -> bool:
    # ISO base media file: a box size, then "ftyp" and the major brand; compatible brands follow.
    if data[4:8] != b"ftyp":
        return False
    brands = {data[i : i + 4] for i in range(8, min(len(data), 64), 4)}
    return bool(brands & _HEIF_BRANDS) and not {b"avif", b"avis"} & {data[8:12]}


def _known_format(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


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
    """Decode and convert to H x W x 3 uint8 RGB, as stored (orientation is applied by the caller)."""
    img.load()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16- and 32-bit greyscale: scale the value range to 8 bits rather than clipping it.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0.0)  # NaN and infinities carry no picture
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
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        # Already what we want: no float copy (a 40 MP photo would need ~0.5 GB for it).
        return np.ascontiguousarray(array)
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
