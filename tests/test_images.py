"""The image loader: every upload becomes an upright RGB uint8 array or one clear ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from facedemo.images import ImageError, load


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_png_bytes_decode_to_rgb_uint8():
    out = load(encode(Image.new("RGB", (30, 20), (10, 20, 30)), "PNG"))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (10, 20, 30)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    out = load(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (40, 20)


def test_alpha_is_composited_on_white():
    out = load(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"))
    assert (out == 255).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    img = Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16))
    out = load(encode(img, "PNG"))
    assert 120 <= out[0, 0, 0] <= 135


def test_cmyk_jpeg_becomes_rgb():
    out = load(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (8, 8, 3)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def test_palette_image_is_expanded():
    out = load(encode(Image.new("RGB", (8, 8), (200, 10, 10)).convert("P"), "GIF"))
    assert out.shape == (8, 8, 3) and out[0, 0, 0] > 150


def test_first_frame_of_an_animation_is_used():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = load(data)
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"this is plain text, not a photo", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "PNG file is damaged"),
    ],
)
def test_unreadable_bytes_give_image_error(data, words):
    with pytest.raises(ImageError, match=words):
        load(data)


def test_truncated_jpeg_gives_image_error():
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageError, match="damaged"):
        load(data[: len(data) // 2])


def test_pixel_limit_is_checked_before_decoding():
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match="limit"):
        load(data, max_pixels=1_000_000)


def test_byte_limit_is_checked():
    with pytest.raises(ImageError, match="limit"):
        load(b"\x00" * 2048, max_bytes=1024)


def test_missing_file_gives_image_error(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load(tmp_path / "nope.jpg")


@pytest.mark.parametrize(
    "array",
    [np.zeros((5, 5), np.uint8), np.zeros((5, 5, 4), np.uint8), np.zeros((5, 5, 3), np.float32),
     np.zeros((5, 5, 3), np.uint16)],
)
def test_arrays_of_common_layouts_become_rgb_uint8(array):
    out = load(array)
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8


def test_array_of_wrong_shape_gives_image_error():
    with pytest.raises(ImageError, match="shape"):
        load(np.zeros((5, 5, 2), np.uint8))
