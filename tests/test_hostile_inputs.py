"""Hostile and unusual uploads (tests/hostile.py) through the loader, the pipeline and the command line.

Every input ends in a result or in ImageError with a one-line message; nothing else is raised;
nothing passes the byte, pixel or per-photo face limits.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from facedemo.app import cli
from facedemo.images import ImageError, load
from tests import command_line, hostile
from tests.hostile import MAX_BYTES, MAX_FACES, MAX_PIXELS

ROOT = Path(__file__).resolve().parents[1]


def load_within_limits(data: bytes) -> np.ndarray:
    return load(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


@functools.cache
def analysed(name: str, pipeline):
    """The pipeline's analysis of a readable corpus entry (computed once: the crowd takes seconds)."""
    return pipeline.analyse(load_within_limits(hostile.case(name).data))


# ------------------------------------------------------------------------------------ loader


def test_the_corpus_holds_at_least_30_inputs_and_many_of_each_outcome():
    assert len(hostile.NAMES) >= 30
    assert len(hostile.READABLE) >= 10 and len(hostile.REFUSED) >= 10


@pytest.mark.parametrize("name", hostile.NAMES)
def test_loader_gives_the_expected_image_or_a_one_line_image_error(name):
    case = hostile.case(name)
    if not case.decodes:
        with pytest.raises(ImageError, match=case.error) as refused:
            load_within_limits(case.data)
        assert "\n" not in str(refused.value)
        return
    image = load_within_limits(case.data)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (image.shape[1], image.shape[0]) == case.size
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS and len(case.data) <= MAX_BYTES
    if case.expected is not None:
        difference = np.abs(image.astype(np.float32) - case.expected).mean()
        assert difference <= case.tolerance, f"mean difference {difference:.2f} per channel value"


@pytest.mark.parametrize(
    "name",
    ["png_decompression_bomb", "panorama_50_megapixels", "png_header_claims_100000_squared",
     "jpeg_header_claims_60000_squared", "gif_screen_65535_squared", "bmp_header_claims_30000_squared"],
)
def test_images_over_the_pixel_limit_are_refused_before_any_pixel_is_decoded(name, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="pixels"):
        load_within_limits(hostile.case(name).data)


def load_outcome(name: str) -> tuple[str, str]:
    """("image", digest of the pixels) or ("error", the message): what loading corpus entry `name` gives."""
    try:
        return "image", hashlib.sha256(load_within_limits(hostile.case(name).data)).hexdigest()
    except ImageError as exc:
        return "error", str(exc)


def test_concurrent_loads_give_what_sequential_loads_give_and_leave_warning_filters_alone():
    # The app decodes uploads on several threads; the loader swaps warning filters under a lock.
    names = [n for n in hostile.NAMES if n != "photo_at_the_pixel_limit"] * 3
    filters = list(warnings.filters)
    sequential = [load_outcome(n) for n in names]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(load_outcome, names))
    assert concurrent == sequential
    assert warnings.filters == filters


def test_exif_orientation_is_read_from_a_pil_image_too():
    stored = Image.open(io.BytesIO(hostile.case("jpeg_exif_orientation_6").data))
    np.testing.assert_array_equal(load(stored), load(hostile.case("jpeg_exif_orientation_6").data))
    assert load(stored).shape[:2] == hostile.SMALL[::-1]


# ---------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("name", hostile.NAMES)
def test_each_input_ends_in_an_analysis_within_the_face_limit_or_an_image_error(name, pipeline):
    case = hostile.case(name)
    try:
        analysis = analysed(name, pipeline)
    except ImageError:
        assert not case.decodes
        return
    assert case.decodes
    assert (analysis.width, analysis.height) == case.size
    assert len(analysis.faces) <= MAX_FACES
    if case.faces is not None:
        least, most = case.faces
        assert least <= len(analysis.faces) + analysis.faces_skipped <= most


def test_faces_beyond_the_per_photo_limit_are_counted_as_skipped_not_dropped(pipeline):
    analysis = analysed("crowd_of_42_faces", pipeline)
    assert len(analysis.faces) == MAX_FACES
    assert analysis.faces_skipped == 42 - MAX_FACES


# ------------------------------------------------------------------------- property-based

SEEDS = {
    fmt: hostile.encode(hostile.small_hopper()[::20, ::20], fmt)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP")
}


def assert_image_or_image_error(data: bytes) -> None:
    try:
        image = load_within_limits(data)
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] * image.shape[1] <= MAX_PIXELS


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=2048))
def test_random_bytes_end_in_an_image_or_an_image_error(data):
    assert_image_or_image_error(data)


@settings(max_examples=300, deadline=None, database=None)
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    keep=st.floats(0.0, 1.0),
)
def test_damaged_real_files_end_in_an_image_or_an_image_error(fmt, flips, keep):
    # Random bytes rarely get past a decoder's signature check; damaged real files reach deep into it.
    data = bytearray(SEEDS[fmt])
    for position, value in flips:
        data[position % len(data)] = value
    assert_image_or_image_error(bytes(data[: max(1, int(len(data) * keep))]))


# (mode, format) pairs Pillow writes; lossless ones must come back pixel for pixel.
ENCODINGS = [
    ("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"), ("I;16", "PNG"),
    ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("P", "GIF"), ("RGB", "BMP"), ("RGBA", "WEBP"),
    ("RGB", "TIFF"), ("CMYK", "TIFF"), ("F", "TIFF"), ("I", "TIFF"),
]
LOSSLESS_RGB = {("RGB", "PNG"), ("RGB", "BMP"), ("RGB", "TIFF")}


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, rgb[:, :, 0]]))
    if mode in ("I;16", "I", "F"):
        grey = np.asarray(image.convert("L"))
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray((grey.astype(np.float64) * 257).astype(dtype))
    return image.convert(mode)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.sampled_from(ENCODINGS),
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    seed=st.integers(0, 2**16),
)
def test_random_small_images_decode_to_their_size_and_are_analysed(pipeline, encoding, width, height, seed):
    mode, fmt = encoding
    source = random_image(mode, width, height, seed)
    image = load_within_limits(hostile.encode(source, fmt))
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    if encoding in LOSSLESS_RGB:
        np.testing.assert_array_equal(image, np.asarray(source))
    analysis = pipeline.analyse(image)
    assert (analysis.width, analysis.height) == (width, height) and len(analysis.faces) <= MAX_FACES


# ------------------------------------------------------------------------------ command line

def write_corpus(directory: Path, names) -> dict[str, Path]:
    paths = {}
    for name in names:
        case = hostile.case(name)
        paths[name] = directory / f"{name}{case.suffix}"
        paths[name].write_bytes(case.data)
    return paths


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, pipelines) -> dict[str, command_line.Ran]:
    """name -> what `python -m facedemo detect FILE` gives for each file of the corpus (in this process:
    an exception escaping the CLI shows as a traceback on stderr, as a user would see it)."""
    directory = tmp_path_factory.mktemp("corpus")
    paths = write_corpus(directory, hostile.NAMES)
    env = {"FACEDEMO_DATA_DIR": str(directory / "data")}
    return {name: command_line.run(["detect", path], pipelines, env) for name, path in paths.items()}


def assert_one_error_line(code: int, stderr: str, error: str | None = None) -> None:
    assert code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    if error:
        assert re.search(error, lines[0]), lines[0]


@pytest.mark.parametrize("name", hostile.NAMES)
def test_cli_detect_prints_faces_or_one_error_line_for_each_input(name, cli_results):
    case, result = hostile.case(name), cli_results[name]
    if not case.decodes:
        assert_one_error_line(result.code, result.err, case.error)
        assert result.out == ""
        return
    assert result.code == 0 and result.err == "", result.err
    summary = result.out.strip().splitlines()[-1]
    assert "face(s)" in summary
    if name == "crowd_of_42_faces":
        assert summary == f"{MAX_FACES} face(s); {42 - MAX_FACES} more not analysed (limit {MAX_FACES} per photo)"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["text_file", "png_decompression_bomb", "heic_renamed_jpg", "jpeg_truncated_half"])
def test_python_m_facedemo_detect_refuses_a_hostile_file_with_one_line(name, tmp_path):
    path = write_corpus(tmp_path, [name])[name]
    result = subprocess.run([sys.executable, "-m", "facedemo", "detect", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert_one_error_line(result.returncode, result.stderr, hostile.case(name).error)
    assert result.stdout == ""


def special_path(kind: str, tmp_path: Path) -> Path:
    if kind == "folder":
        (tmp_path / "photo.jpg").mkdir()
        return tmp_path / "photo.jpg"
    if kind == "fifo":
        os.mkfifo(tmp_path / "photo.jpg")  # opening it to read would wait for a writer forever
        return tmp_path / "photo.jpg"
    if kind == "endless device":
        return Path("/dev/zero")  # stat says 0 bytes; reading it never ends
    return tmp_path / "missing.jpg"


@pytest.mark.parametrize(
    "kind, words",
    [("folder", "folder"), ("fifo", "not a regular file"), ("endless device", "not a regular file"),
     ("missing", "not found")],
)
def test_cli_detect_on_something_that_is_not_a_file_prints_one_error_line(kind, words, tmp_path, capsys):
    path = special_path(kind, tmp_path)
    if not path.exists() and kind != "missing":
        pytest.skip(f"{path} does not exist on this system")
    code = cli.main(["detect", str(path)])
    assert_one_error_line(code, capsys.readouterr().err, words)


def test_file_larger_than_the_byte_limit_is_refused(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(10 * MAX_BYTES)  # sparse: 200 MB that take no disk space
    with pytest.raises(ImageError, match="the limit is"):
        load(path, max_bytes=MAX_BYTES)
