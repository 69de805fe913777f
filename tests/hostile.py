"""Hostile and unusual uploads, generated on demand: each a named Case saying what the loader must make of it.

Nothing here is a committed file: every input is built from the two public-domain photos that ship
with scikit-image and matplotlib, or from bytes written by hand. `case(name)` builds one (cached);
`NAMES` lists them all, so tests can be parametrised at collection time without building anything.
"""
from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, features

from facedemo.app.config import Config

# The limits the corpus is judged against: the app's defaults.
LIMITS = Config()
MAX_BYTES = LIMITS.max_image_bytes
MAX_PIXELS = LIMITS.max_image_pixels
MAX_FACES = LIMITS.max_faces

# Messages (regular expressions) the loader's ImageError must match, by kind of failure.
NOT_A_FORMAT = "not an image format we can read"
DAMAGED = "damaged or incomplete"
TOO_MANY_PIXELS = "pixels.*limit"
TOO_MANY_BYTES = "the file is .*; the limit is"
HEIF = "HEIC/HEIF"
EMPTY = "empty"
NO_PIXELS = "no pixels|damaged"


@dataclass(frozen=True)
class Case:
    """One upload and what must become of it.

    data: the file's bytes. suffix: the extension a visitor would give it.
    error: a regular expression the ImageError message must match; None when it must decode.
    size: (width, height) of the decoded, upright image, when it must decode.
    expected: the pixels (H x W x 3 uint8) it must decode to, within `tolerance` mean absolute
        difference per channel value; None when only the size is known.
    faces: (least, most) faces detection must find in it, before the per-photo limit; None: any.
    """

    name: str
    data: bytes = field(repr=False)
    suffix: str
    error: str | None = None
    size: tuple[int, int] | None = None
    expected: np.ndarray | None = field(default=None, repr=False)
    tolerance: float = 0.0
    faces: tuple[int, int] | None = None

    @property
    def decodes(self) -> bool:
        return self.error is None


# --------------------------------------------------------------------------------- photos


from facedemo.app.examples import astronaut, grace_hopper  # noqa: E402  (the photos the corpus is cut from)


def _face_crop(photo: np.ndarray, box: tuple[int, int, int, int], side: int, margin: float = 1.6) -> np.ndarray:
    """A square crop centred on `box` (x1, y1, x2, y2), `margin` times its size, resized to `side`."""
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * margin / 2
    crop = Image.fromarray(photo).crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    return np.asarray(crop.resize((side, side), Image.Resampling.BILINEAR))


# Face boxes found by MTCNN in the two photos (pixels), for building crops and crowds.
ASTRONAUT_FACE = (181, 62, 268, 172)
HOPPER_FACE = (174, 120, 356, 340)


def crowd(rows: int = 6, columns: int = 7, side: int = 64) -> np.ndarray:
    """rows x columns face tiles of both people, some mirrored: a photo with rows * columns faces."""
    tiles = [_face_crop(astronaut(), ASTRONAUT_FACE, side), _face_crop(grace_hopper(), HOPPER_FACE, side)]
    cells = [
        [tiles[(r + c) % 2] if (r * columns + c) % 3 else tiles[(r + c) % 2][:, ::-1] for c in range(columns)]
        for r in range(rows)
    ]
    return np.ascontiguousarray(np.concatenate([np.concatenate(row, axis=1) for row in cells], axis=0))


# (width, height) of the photo most format cases encode: small keeps detection quick, and not
# square, so that a rotation shows in the shape.
SMALL = (128, 150)


@functools.cache
def small_hopper() -> np.ndarray:
    """Grace Hopper at SMALL (128 x 150 pixels)."""
    return np.asarray(Image.fromarray(grace_hopper()).resize(SMALL, Image.Resampling.BOX))


# ------------------------------------------------------------------------------- encoding


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    """`image` saved by Pillow in `fmt` with `options`, as bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    """What Pillow itself decodes (as RGB) from bytes we wrote: the reference for lossy formats."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    """A PNG written by hand, so that headers can claim what Pillow would never write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def _zeros_compressed(total: int, chunk: int = 1 << 20) -> bytes:
    """zlib stream of `total` zero bytes, built in pieces so memory stays small."""
    compressor = zlib.compressobj(9)
    parts, block = [], bytes(chunk)
    for start in range(0, total, chunk):
        parts.append(compressor.compress(block[: min(chunk, total - start)]))
    parts.append(compressor.flush())
    return b"".join(parts)


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame header claims width x height (the pixel data stays tiny)."""
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = out.find(marker)
        if at >= 0:
            out[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    raise ValueError("no start-of-frame marker")


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# What a camera stores for each EXIF orientation, given the upright picture: the inverse of the
# transpose that ImageOps.exif_transpose applies when showing it.
_STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


# ----------------------------------------------------------------------------------- cases

_BUILDERS: dict[str, Callable[[], Case]] = {}
_READABLE: set[str] = set()  # declared with the builder, so tests can choose cases without building them


def _readable(builder: Callable[[], Case]) -> Callable[[], Case]:
    """Register a builder of an input that must decode; the case is named after the builder."""
    _BUILDERS[builder.__name__] = builder
    _READABLE.add(builder.__name__)
    return builder


def _refused(builder: Callable[[], Case]) -> Callable[[], Case]:
    """Register a builder of an input the loader must refuse with ImageError."""
    _BUILDERS[builder.__name__] = builder
    return builder


def _exif_case(orientation: int) -> Callable[[], Case]:
    def build() -> Case:
        upright = small_hopper()
        stored = Image.fromarray(upright).transpose(_STORED_FOR_ORIENTATION[orientation])
        data = encode(stored, "JPEG", quality=95, exif=exif_bytes(orientation))
        # The reference is the upright photo, so a wrong or missing rotation fails by far.
        return Case("", data, ".jpg", size=SMALL, expected=upright, tolerance=4.0, faces=(1, 1))

    build.__name__ = f"jpeg_exif_orientation_{orientation}"
    return build


for _orientation in range(2, 9):
    _readable(_exif_case(_orientation))


@_readable
def jpeg_photo() -> Case:
    data = encode(astronaut(), "JPEG", quality=90)
    return Case("", data, ".jpg", size=(512, 512), expected=_decoded(data), tolerance=0.5, faces=(1, 1))


@_readable
def jpeg_progressive() -> Case:
    data = encode(small_hopper(), "JPEG", quality=85, progressive=True)
    return Case("", data, ".jpg", size=SMALL, expected=_decoded(data), tolerance=0.5, faces=(1, 1))


@_readable
def jpeg_with_trailing_garbage() -> Case:
    data = encode(small_hopper(), "JPEG", quality=90)
    return Case("", data + b"\x00garbage after the end-of-image marker" * 100, ".jpg", size=SMALL, faces=(1, 1))


@_readable
def jpeg_exif_malformed() -> Case:
    # An APP1 segment that says Exif but holds junk: the photo itself is fine and must still load.
    data = encode(small_hopper(), "JPEG", quality=95)
    junk = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + b"\xff\xee" * 40
    segment = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    return Case("", data[:2] + segment + data[2:], ".jpg", size=SMALL, faces=(1, 1))


@_readable
def jpeg_exif_orientation_out_of_range() -> Case:
    data = encode(small_hopper(), "JPEG", quality=95, exif=exif_bytes(9))
    return Case("", data, ".jpg", size=SMALL, faces=(1, 1))


@_readable
def png_exif_orientation_6() -> Case:
    upright = small_hopper()
    stored = Image.fromarray(upright).transpose(_STORED_FOR_ORIENTATION[6])
    data = encode(stored, "PNG", exif=exif_bytes(6))
    return Case("", data, ".png", size=SMALL, expected=upright, faces=(1, 1))


@_readable
def jpeg_greyscale() -> Case:
    data = encode(Image.fromarray(small_hopper()).convert("L"), "JPEG", quality=90)
    return Case("", data, ".jpg", size=SMALL, expected=_decoded(data), tolerance=0.5, faces=(1, 1))


@_readable
def jpeg_cmyk() -> Case:
    source = Image.fromarray(astronaut()).convert("CMYK")
    data = encode(source, "JPEG", quality=95)
    return Case("", data, ".jpg", size=(512, 512), expected=astronaut(), tolerance=6.0, faces=(1, 1))


@_readable
def tiff_cmyk() -> Case:
    data = encode(Image.fromarray(small_hopper()).convert("CMYK"), "TIFF")
    return Case("", data, ".tif", size=SMALL, expected=small_hopper(), tolerance=3.0, faces=(1, 1))


@_readable
def tiff_lab() -> Case:
    from PIL import ImageCms

    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    data = encode(ImageCms.applyTransform(Image.fromarray(small_hopper()), to_lab), "TIFF")
    return Case("", data, ".tif", size=SMALL, expected=small_hopper(), tolerance=3.0, faces=(1, 1))


@_readable
def png_screenshot_with_transparency() -> Case:
    # A face on a transparent background: the background must come out white, not black.
    width, height = SMALL
    rgba = np.zeros((height, width + 60, 4), np.uint8)
    rgba[:, 30 : 30 + width, :3] = small_hopper()
    rgba[:, 30 : 30 + width, 3] = 255
    expected = np.full((height, width + 60, 3), 255, np.uint8)
    expected[:, 30 : 30 + width] = small_hopper()
    return Case("", encode(rgba, "PNG"), ".png", size=(width + 60, height), expected=expected, faces=(1, 1))


@_readable
def png_grey_with_alpha() -> Case:
    la = Image.fromarray(small_hopper()).convert("LA")
    la.putalpha(128)
    grey = np.asarray(la.getchannel("L"), np.float32)
    expected = np.repeat(np.round(grey * 128 / 255 + 255 * 127 / 255)[:, :, None], 3, axis=2).astype(np.uint8)
    return Case("", encode(la, "PNG"), ".png", size=SMALL, expected=expected, tolerance=1.0)


@_readable
def png_palette_with_transparency() -> Case:
    palette = Image.fromarray(small_hopper()).quantize(64)
    data = encode(palette, "PNG", transparency=0)
    return Case("", data, ".png", size=SMALL)


@_readable
def png_16bit_grey() -> Case:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    expected = np.repeat(np.round(ramp / 65535 * 255)[:, :, None], 3, axis=2).astype(np.uint8)
    return Case("", encode(Image.fromarray(ramp), "PNG"), ".png", size=(64, 64), expected=expected, tolerance=1.0)


@_readable
def png_16bit_rgb() -> Case:
    # 48-bit colour, which Pillow cannot write: built by hand from the photo scaled to 16 bits.
    photo = small_hopper().astype(">u2") * 257
    rows = b"".join(b"\x00" + row.tobytes() for row in photo)
    return Case("", png(*SMALL, 16, 2, zlib.compress(rows)), ".png", size=SMALL, expected=small_hopper(),
                tolerance=1.0, faces=(1, 1))


@_readable
def tiff_16bit_big_endian() -> Case:
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(">u2")
    expected = np.repeat(np.round(ramp.astype(np.float64) / 65535 * 255)[:, :, None], 3, axis=2).astype(np.uint8)
    return Case("", encode(Image.fromarray(ramp), "TIFF"), ".tif", size=(32, 32), expected=expected, tolerance=1.0)


@_readable
def tiff_float_with_nan_and_infinity() -> Case:
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    values[0, :4] = [np.nan, np.inf, -np.inf, 1e30]
    return Case("", encode(Image.fromarray(values), "TIFF"), ".tif", size=(32, 32))


@_readable
def tiff_32bit_integer() -> Case:
    values = np.arange(-512, 512, dtype=np.int32).reshape(32, 32) * 1000
    return Case("", encode(Image.fromarray(values), "TIFF"), ".tif", size=(32, 32))


@_readable
def tiff_bilevel_group4() -> Case:
    if not features.check("libtiff"):
        return Case("", encode(Image.new("1", (64, 48), 1), "TIFF"), ".tif", size=(64, 48))
    return Case("", encode(Image.new("1", (64, 48), 1), "TIFF", compression="group4"), ".tif", size=(64, 48),
                expected=np.full((48, 64, 3), 255, np.uint8))


@_readable
def tiff_multipage() -> Case:
    pages = [Image.fromarray(small_hopper()), Image.new("RGB", SMALL, (0, 0, 255))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    return Case("", data, ".tif", size=SMALL, expected=small_hopper(), faces=(1, 1))


@_readable
def gif_palette() -> Case:
    data = encode(Image.fromarray(small_hopper()).quantize(256), "GIF")
    return Case("", data, ".gif", size=SMALL, expected=_decoded(data), faces=(1, 1))


@_readable
def gif_animated() -> Case:
    frames = [Image.fromarray(small_hopper()).quantize(256), Image.new("P", SMALL, 7)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Case("", data, ".gif", size=SMALL, expected=_decoded(data), faces=(1, 1))


@_readable
def png_animated() -> Case:
    frames = [Image.fromarray(small_hopper()), Image.new("RGB", SMALL, (255, 0, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    return Case("", data, ".png", size=SMALL, expected=small_hopper(), faces=(1, 1))


@_readable
def webp_animated() -> Case:
    frames = [Image.fromarray(small_hopper()), Image.new("RGB", SMALL, (255, 0, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    return Case("", data, ".webp", size=SMALL, expected=small_hopper(), tolerance=1.0, faces=(1, 1))


@_readable
def webp_lossless_with_alpha() -> Case:
    rgba = np.dstack([small_hopper(), np.full(SMALL[::-1], 255, np.uint8)])
    rgba[:20, :, 3] = 0
    expected = small_hopper().copy()
    expected[:20] = 255
    return Case("", encode(rgba, "WEBP", lossless=True), ".webp", size=SMALL, expected=expected, faces=(1, 1))


@_readable
def jpeg_multi_picture_mpo() -> Case:
    frames = [Image.fromarray(small_hopper()), Image.new("RGB", SMALL, (0, 255, 0))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:], quality=95)
    return Case("", data, ".jpg", size=SMALL, expected=small_hopper(), tolerance=4.0, faces=(1, 1))


@_readable
def bmp_photo() -> Case:
    return Case("", encode(small_hopper(), "BMP"), ".bmp", size=SMALL, expected=small_hopper(), faces=(1, 1))


@_readable
def bmp_1bit() -> Case:
    return Case("", encode(Image.new("1", (40, 30), 0), "BMP"), ".bmp", size=(40, 30),
                expected=np.zeros((30, 40, 3), np.uint8))


def avif_photo() -> Case:
    if not features.check("avif"):
        # Without AVIF support in this Pillow, the loader must say so instead of crashing.
        return Case("", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", ".avif", error=NOT_A_FORMAT)
    data = encode(small_hopper(), "AVIF", quality=90)
    return Case("", data, ".avif", size=SMALL, expected=small_hopper(), tolerance=6.0, faces=(1, 1))


# Readable only where this Pillow was built with AVIF support.
(_readable if features.check("avif") else _refused)(avif_photo)


@_readable
def tiny_1x1() -> Case:
    return Case("", encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), ".png", size=(1, 1), faces=(0, 0))


@_readable
def tiny_tight_face_crop_48px() -> Case:
    # A face cropped to its box, 48 px: detection enlarges and pads such photos.
    crop = _face_crop(astronaut(), ASTRONAUT_FACE, 48, margin=1.1)
    return Case("", encode(crop, "PNG"), ".png", size=(48, 48), expected=crop, faces=(1, 1))


@_readable
def no_face_blank() -> Case:
    return Case("", encode(Image.new("RGB", (640, 480), (128, 128, 128)), "PNG"), ".png", size=(640, 480),
                faces=(0, 0))


@_readable
def no_face_noise() -> Case:
    noise = np.random.default_rng(6).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return Case("", encode(noise, "PNG"), ".png", size=(640, 480), expected=noise, faces=(0, 0))


@_readable
def crowd_of_42_faces() -> Case:
    data = encode(crowd(), "JPEG", quality=92)
    return Case("", data, ".jpg", size=(448, 384), faces=(42, 42))


@_readable
def photo_at_the_pixel_limit() -> Case:
    # Exactly MAX_PIXELS: allowed. A grey field with the photo in a corner, so it compresses well.
    canvas = Image.new("L", (8000, MAX_PIXELS // 8000), 100)
    canvas.paste(Image.fromarray(grace_hopper()).convert("L"), (0, 0))
    return Case("", encode(canvas, "JPEG", quality=60), ".jpg", size=(8000, MAX_PIXELS // 8000))


@_refused
def panorama_50_megapixels() -> Case:
    data = encode(Image.new("L", (10000, 5000), 90), "JPEG", quality=50)
    return Case("", data, ".jpg", error=TOO_MANY_PIXELS)


@_refused
def png_decompression_bomb() -> Case:
    # 7000 x 7000 greyscale zeros: ~50 KB on disk, 49 MB once decoded.
    side = 7000
    return Case("", png(side, side, 8, 0, _zeros_compressed((side + 1) * side)), ".png", error=TOO_MANY_PIXELS)


@_refused
def png_header_claims_100000_squared() -> Case:
    return Case("", png(100_000, 100_000, 8, 2, zlib.compress(b"\x00" * 64)), ".png", error=TOO_MANY_PIXELS)


@_refused
def jpeg_header_claims_60000_squared() -> Case:
    data = _with_jpeg_size(encode(Image.new("RGB", (16, 16)), "JPEG"), 60000, 60000)
    return Case("", data, ".jpg", error=TOO_MANY_PIXELS)


@_refused
def gif_screen_65535_squared() -> Case:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen width and height
    return Case("", bytes(data), ".gif", error=TOO_MANY_PIXELS)


@_refused
def bmp_header_claims_30000_squared() -> Case:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", 30000, 30000)
    return Case("", bytes(data), ".bmp", error=TOO_MANY_PIXELS)


@_refused
def png_zero_width() -> Case:
    return Case("", png(0, 10, 8, 2, zlib.compress(b"")), ".png", error=NO_PIXELS)


@_refused
def png_text_bomb() -> Case:
    # A compressed text chunk that inflates to 16 MB; Pillow caps text chunks and must not run out of memory.
    ztxt = b"Comment\x00\x00" + _zeros_compressed(16 << 20)
    rows = b"".join(b"\x00" + bytes(8 * 3) for _ in range(8))
    return Case("", png(8, 8, 8, 2, zlib.compress(rows), extra=png_chunk(b"zTXt", ztxt)), ".png", error=DAMAGED)


@_refused
def file_over_the_byte_limit() -> Case:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    return Case("", data + bytes(MAX_BYTES + 1 - len(data)), ".png", error=TOO_MANY_BYTES)


@_refused
def empty_file() -> Case:
    return Case("", b"", ".jpg", error=EMPTY)


@_refused
def one_nul_byte() -> Case:
    return Case("", b"\x00", ".jpg", error=NOT_A_FORMAT)


@_refused
def text_file() -> Case:
    return Case("", b"Dear visitor,\nthis is a letter, not a photo.\n", ".txt", error=NOT_A_FORMAT)


@_refused
def html_renamed_jpg() -> Case:
    return Case("", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", ".jpg",
                error=NOT_A_FORMAT)


@_refused
def svg_drawing() -> Case:
    data = b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle r="40"/></svg>'
    return Case("", data, ".svg", error=NOT_A_FORMAT)


@_refused
def pdf_document() -> Case:
    return Case("", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", ".pdf",
                error=NOT_A_FORMAT)


@_refused
def postscript_renamed_jpg() -> Case:
    # Pillow would hand EPS to Ghostscript; the loader must never get that far.
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n0 0 moveto 100 100 lineto stroke\nshowpage\n"
    return Case("", data, ".jpg", error=NOT_A_FORMAT)


@_refused
def zip_archive() -> Case:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", encode(Image.new("RGB", (8, 8)), "JPEG"))
    return Case("", buffer.getvalue(), ".zip", error=NOT_A_FORMAT)


@_refused
def heic_renamed_jpg() -> Case:
    # The start of an iPhone HEIC: an ISO-BMFF "ftyp" box with brand heic, then boxes we never read.
    data = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00\x00\x01\x00meta" + bytes(
        240
    )
    return Case("", data, ".jpg", error=HEIF)


@_refused
def targa_outside_the_allowed_formats() -> Case:
    return Case("", encode(small_hopper(), "TGA"), ".tga", error=NOT_A_FORMAT)


@_refused
def icon_outside_the_allowed_formats() -> Case:
    return Case("", encode(Image.new("RGB", (32, 32)), "ICO"), ".jpg", error=NOT_A_FORMAT)


@_refused
def jpeg_truncated_half() -> Case:
    data = encode(astronaut(), "JPEG", quality=90)
    return Case("", data[: len(data) // 2], ".jpg", error=DAMAGED)


@_refused
def jpeg_header_only() -> Case:
    return Case("", encode(astronaut(), "JPEG", quality=90)[:300], ".jpg", error=DAMAGED)


@_refused
def jpeg_magic_then_random_bytes() -> Case:
    junk = np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    return Case("", b"\xff\xd8\xff\xe0" + junk, ".jpg", error=DAMAGED)


@_refused
def png_truncated_half() -> Case:
    data = encode(small_hopper(), "PNG")
    return Case("", data[: len(data) // 2], ".png", error=DAMAGED)


@_refused
def png_signature_only() -> Case:
    return Case("", b"\x89PNG\r\n\x1a\n", ".png", error=DAMAGED)


@_refused
def png_bad_checksum() -> Case:
    data = bytearray(encode(small_hopper(), "PNG"))
    at = data.find(b"IDAT") + 4 + 50
    data[at] ^= 0xFF
    return Case("", bytes(data), ".png", error=DAMAGED)


@_refused
def png_without_image_data() -> Case:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    return Case("", b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IEND", b""), ".png", error=DAMAGED)


@_refused
def gif_truncated() -> Case:
    data = encode(Image.fromarray(small_hopper()).quantize(256), "GIF")
    return Case("", data[: len(data) // 3], ".gif", error=DAMAGED)


@_refused
def webp_truncated() -> Case:
    data = encode(small_hopper(), "WEBP", quality=80)
    return Case("", data[: len(data) // 2], ".webp", error=DAMAGED)


@_refused
def tiff_truncated() -> Case:
    data = encode(small_hopper(), "TIFF")
    return Case("", data[: len(data) // 2], ".tif", error=DAMAGED)


@_refused
def bmp_truncated() -> Case:
    data = encode(small_hopper(), "BMP")
    return Case("", data[: len(data) // 2], ".bmp", error=DAMAGED)


@_readable
def strip_1x3000() -> Case:
    return Case("", encode(Image.new("RGB", (1, 3000), (50, 60, 70)), "PNG"), ".png", size=(1, 3000), faces=(0, 0))


@_readable
def thin_rule_400x12() -> Case:
    # A horizontal rule or progress bar saved as an image.
    return Case("", encode(Image.new("RGB", (400, 12), (20, 120, 200)), "PNG"), ".png", size=(400, 12), faces=(0, 0))


@_readable
def web_banner_900x90() -> Case:
    banner = np.full((90, 900, 3), 230, np.uint8)
    banner[:, :80] = 40  # a dark block at the left, like a logo
    return Case("", encode(banner, "PNG"), ".png", size=(900, 90), faces=(0, 0))


NAMES: tuple[str, ...] = tuple(_BUILDERS)
READABLE: tuple[str, ...] = tuple(n for n in NAMES if n in _READABLE)
REFUSED: tuple[str, ...] = tuple(n for n in NAMES if n not in _READABLE)


@functools.cache
def case(name: str) -> Case:
    """The corpus entry `name`, built on first use."""
    built = replace(_BUILDERS[name](), name=name)
    if built.decodes != (name in _READABLE):
        raise AssertionError(f"{name} is registered as {'readable' if name in _READABLE else 'refused'} "
                             f"but built with error={built.error!r}")
    return built
