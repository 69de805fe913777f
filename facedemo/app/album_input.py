"""Reading an album into memory: a folder, a zip file or uploaded files; each file kept, or refused with a reason.

Nothing is written to disk: zip members are read into memory and decoded from there. Everything
that can be hostile in a zip is refused member by member while the rest is read: names with `..`
or an absolute path, links and other non-files (from the zip's Unix mode bits), a second member of
the same name, zips inside the zip, encrypted members, files that are not photos, and compression
bombs. Sizes are checked from the zip's headers first and again while each member is inflated,
never trusting the headers: a member is cut off as soon as it inflates past the limits.
"""
from __future__ import annotations

import contextlib
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from facedemo.album import AlbumLimits, Refusal, printable, unique_name
from facedemo.images import file_extensions

# A zip's central directory is parsed into memory before any member is read; beyond this size
# (about 10,000 entries of ordinary names) the zip is refused without parsing it.
MAX_DIRECTORY_BYTES = 2 * 1024 * 1024
# Entries a zip may list, per photo the album may hold: folders, a manifest, macOS metadata and
# a few stray files fit; a zip listing more is refused as a whole rather than answered file by file.
ENTRIES_PER_PHOTO = 5
CHUNK = 256 * 1024
ZIP_MAGIC = b"PK\x03\x04"
PHOTO_SUFFIXES = frozenset(file_extensions())


class AlbumError(ValueError):
    """The album as a whole cannot be read (a damaged zip, one listing too many files, no photo at all);
    the message says why in words a person can act on."""


@dataclass(frozen=True)
class AlbumFile:
    """One photo read into memory. name: safe and unique in the album (facedemo.album.unique_name);
    given: its name as given (the path in the folder or zip), safe to show (facedemo.album.printable)."""

    name: str
    data: bytes = field(repr=False)
    given: str = ""


@dataclass(frozen=True)
class AlbumInput:
    """The photos of an album, in memory, in the order given, and the files refused with their reasons."""

    files: tuple[AlbumFile, ...]
    refused: tuple[Refusal, ...]

    @property
    def size(self) -> int:
        """Bytes held: the photos' encoded data together."""
        return sum(len(f.data) for f in self.files)

    def photos(self) -> list[tuple[str, bytes]]:
        """(name, encoded photo) pairs, as facedemo.album.analyse_album takes them."""
        return [(f.name, f.data) for f in self.files]


class _Refused(Exception):
    """One file is refused; the message is the reason."""


class _Collector:
    """The photos read so far, the refusals, and what the limits still allow."""

    def __init__(self, limits: AlbumLimits) -> None:
        self.limits = limits
        self.files: list[AlbumFile] = []
        self.refused: list[Refusal] = []
        self.taken: set[str] = set()
        self.bytes = 0

    def refuse(self, name: str, reason: str) -> None:
        self.refused.append(Refusal(printable(name), reason))

    def check_room(self) -> None:
        if len(self.files) >= self.limits.max_photos:
            raise _Refused(f"not read: the album's limit is {self.limits.max_photos} photos")

    def check_size(self, size: int, compressed: int | None = None) -> None:
        """Refuse a file of `size` bytes (inflated from `compressed` bytes in a zip)."""
        limits = self.limits
        if compressed is not None and size > limits.max_ratio * max(compressed, 1):
            raise _Refused(
                f"inflates more than {limits.max_ratio:g} times ({compressed:,} bytes compressed): no photo "
                "compresses that well, so it is refused as a possible zip bomb"
            )
        if size > limits.image_max_bytes:
            raise _Refused(f"larger than {limits.image_max_bytes / 2**20:.1f} MB, the limit for one photo")
        if self.bytes + size > limits.max_bytes:
            raise _Refused(f"not read: the album's photos together would pass {_megabytes(limits.max_bytes)}")

    def add(self, name: str, data: bytes) -> None:
        self.files.append(AlbumFile(unique_name(name, self.taken), data, printable(name)))
        self.bytes += len(data)

    def result(self) -> AlbumInput:
        return AlbumInput(tuple(self.files), tuple(self.refused))


def read_album(source: str | os.PathLike | Sequence[str | os.PathLike], limits: AlbumLimits) -> AlbumInput:
    """An album from a folder (photos in it and its subfolders), a zip file, one photo, or a list of
    photo and zip files (uploads). Every file is either read into memory or refused with a reason;
    AlbumError when a zip as a whole cannot be read."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    collector = _Collector(limits)
    for item in items:
        path = Path(item)
        # A path the caller names is theirs to follow; links inside folders and zips are refused.
        if path.is_dir():
            _read_folder(path, collector)
        elif path.suffix.lower() == ".zip" and path.is_file():
            read_zip(path, limits, collector)
        else:
            _read_file(path, path.name, collector, follow=True)
    return collector.result()


def _read_folder(root: Path, collector: _Collector) -> None:
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(folder, d))):
            path = Path(folder, name)
            _read_file(path, str(path.relative_to(root)), collector, follow=False)


def _read_file(path: Path, shown: str, collector: _Collector, follow: bool) -> None:
    try:
        if not follow and path.is_symlink():
            raise _Refused("a link: not followed")
        if not os.path.lexists(path):
            raise _Refused("file not found")
        _photo_name(shown)
        collector.check_room()
        # O_NONBLOCK: opening a FIFO named like a photo would otherwise wait for a writer forever.
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise _Refused("file not found") from None
        except OSError as exc:  # ELOOP: it became a link since it was looked at
            raise _Refused(f"cannot be read ({exc.strerror or exc})") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _Refused("not a regular file")
            collector.check_size(info.st_size)
            # Bounded even though the size was checked: the file may grow between fstat and read.
            data = f.read(min(collector.limits.image_max_bytes, collector.limits.max_bytes - collector.bytes) + 1)
        collector.check_size(len(data))
        if data.startswith(ZIP_MAGIC):
            raise _Refused("a zip file named like a photo: not opened")
    except _Refused as refusal:
        collector.refuse(shown, str(refusal))
        return
    collector.add(shown, data)


def _photo_name(name: str) -> None:
    """Refuse a file that is not a photo by its name: what the zip or folder holds beside the photos."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if "__MACOSX/" in name.replace("\\", "/") or base.startswith("._") or base == ".DS_Store":
        raise _Refused("macOS metadata, not a photo")
    suffix = os.path.splitext(base)[1].lower()
    if suffix == ".zip":
        raise _Refused("a zip inside the album: not opened (put its photos in the album itself)")
    if suffix not in PHOTO_SUFFIXES:
        raise _Refused("not a photo by its name (JPEG, PNG, WebP, GIF, BMP, TIFF and PGM/PPM files are read)")


def read_zip(file: str | os.PathLike | BinaryIO, limits: AlbumLimits, collector: _Collector | None = None) -> AlbumInput:
    """The photos of a zip file (a path or a seekable binary file) read into memory, each hostile or
    unusable member refused with its reason; AlbumError when the zip as a whole cannot be read."""
    collector = collector or _Collector(limits)
    try:
        with open(file, "rb") if isinstance(file, (str, os.PathLike)) else contextlib.nullcontext(file) as f:
            _check_directory(f, limits)
            with zipfile.ZipFile(f) as archive:
                members = archive.infolist()
                most = max(1000, ENTRIES_PER_PHOTO * limits.max_photos)
                if len(members) > most:
                    raise AlbumError(f"the zip lists {len(members):,} files; at most {most:,} are read "
                                     f"(the album's limit is {limits.max_photos} photos)")
                seen: set[str] = set()
                for info in members:
                    try:
                        data = _member(archive, info, seen, collector)
                    except _Refused as refusal:
                        collector.refuse(info.filename, str(refusal))
                        continue
                    collector.add(info.filename, data)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error) as exc:
        raise AlbumError(f"not a zip file we can read ({exc})") from None
    except OSError as exc:
        raise AlbumError(f"the zip cannot be read ({exc.strerror or exc})") from None
    return collector.result()


def _check_directory(f: BinaryIO, limits: AlbumLimits) -> None:
    """Refuse a zip whose central directory (which zipfile parses whole, into memory) is too large,
    reading only the end-of-directory records (and their Zip64 form)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    tail_length = min(size, 22 + 65535)  # the end record, and a comment of at most 64 KiB after it
    f.seek(size - tail_length)
    tail = f.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise AlbumError("not a zip file (no end of central directory)")
    directory = struct.unpack("<I", tail[at + 12:at + 16])[0]
    if directory == 0xFFFFFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        offset = struct.unpack("<Q", tail[at - 12:at - 4])[0]
        f.seek(offset)
        record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise AlbumError("not a zip file we can read (a damaged Zip64 record)")
        directory = struct.unpack("<Q", record[40:48])[0]
    if directory > MAX_DIRECTORY_BYTES:
        raise AlbumError(f"the zip's list of files takes {directory / 2**20:.1f} MB; at most "
                         f"{MAX_DIRECTORY_BYTES / 2**20:.0f} MB is read (about 10,000 files)")
    f.seek(0)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, seen: set[str], collector: _Collector) -> bytes:
    """One member's bytes, or _Refused with the reason."""
    name = info.filename
    if info.is_dir():
        raise _Refused("a folder: skipped (the photos in it are read)")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise _Refused("its name points outside the album (an absolute path or '..'): refused")
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # Unix mode bits, when the zip has them
        if stat.S_ISLNK(mode):
            raise _Refused("a symbolic link: refused")
        if not stat.S_ISREG(mode):
            raise _Refused("not a regular file: refused")
    if name in seen:
        raise _Refused("a second file of the same name in the zip: refused")
    seen.add(name)
    _photo_name(name)
    if info.flag_bits & 0x1:
        raise _Refused("encrypted: password-protected files are not read")
    collector.check_room()
    collector.check_size(info.file_size, info.compress_size)
    chunks: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as f:
            while chunk := f.read(CHUNK):
                if not chunks and chunk.startswith(ZIP_MAGIC):
                    raise _Refused("a zip inside the zip (named like a photo): not opened")
                total += len(chunk)
                # The headers' sizes may lie: the inflated bytes are what count.
                collector.check_size(total, info.compress_size)
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise _Refused(f"damaged in the zip ({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
    return b"".join(chunks)


def _megabytes(size: int) -> str:
    """'1,024 MB', '0.2 MB': a byte limit in MiB, with a decimal when under 10."""
    mb = size / 2**20
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.1f} MB"
