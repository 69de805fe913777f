"""Reading an album: zips, folders and uploads into memory; every hostile or unusable file refused with its
own reason while the rest is read. No model runs here."""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from facedemo.album import AlbumLimits, safe_name, unique_name
from facedemo.app import album_input
from facedemo.app.album_input import AlbumError, read_album, read_zip

LIMITS = AlbumLimits()


def jpeg(colour: int = 120, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (colour, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def reasons(album) -> dict[str, str]:
    return {r.name: r.reason for r in album.refused}


def names(album) -> list[str]:
    return [f.name for f in album.files]


def test_zip_photos_are_read_into_memory_and_nothing_is_extracted(tmp_path):
    path = make_zip(tmp_path / "album.zip", [("party/a.jpg", jpeg(1)), ("party/b.jpg", jpeg(2))])
    album = read_zip(path, LIMITS)
    assert names(album) == ["a.jpg", "b.jpg"] and album.refused == ()
    assert album.files[0].data == jpeg(1)
    assert sorted(os.listdir(tmp_path)) == ["album.zip"]


def test_zip_member_named_with_dotdot_is_refused_and_the_rest_read(tmp_path):
    album = read_zip(make_zip(tmp_path / "a.zip", [("../x.jpg", jpeg()), ("ok.jpg", jpeg())]), LIMITS)
    assert names(album) == ["ok.jpg"] and "outside the album" in reasons(album)["../x.jpg"]


def test_zip_member_with_an_absolute_path_is_refused_and_the_rest_read(tmp_path):
    members = [("/abs.jpg", jpeg()), ("C:\\windows\\x.jpg", jpeg()), ("ok.jpg", jpeg())]
    album = read_zip(make_zip(tmp_path / "a.zip", members), LIMITS)
    assert names(album) == ["ok.jpg"]
    assert "absolute path" in reasons(album)["/abs.jpg"] and "absolute path" in reasons(album)["C:\\windows\\x.jpg"]


def test_zip_symlink_member_is_refused_and_the_rest_read(tmp_path):
    link = zipfile.ZipInfo("link.jpg")
    link.create_system = 3  # Unix: the mode bits in external_attr count
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    album = read_zip(make_zip(tmp_path / "a.zip", [(link, b"/etc/passwd"), ("ok.jpg", jpeg())]), LIMITS)
    assert names(album) == ["ok.jpg"] and "symbolic link" in reasons(album)["link.jpg"]


def test_zip_inside_the_zip_is_refused_by_name_and_by_content(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("x.jpg", jpeg())
    members = [("inner.zip", inner.getvalue()), ("disguised.jpg", inner.getvalue()), ("ok.jpg", jpeg())]
    album = read_zip(make_zip(tmp_path / "a.zip", members), LIMITS)
    assert names(album) == ["ok.jpg"]
    assert "zip inside" in reasons(album)["inner.zip"] and "zip inside" in reasons(album)["disguised.jpg"]


def test_zip_members_that_are_not_photos_are_refused_and_the_rest_read(tmp_path):
    members = [("notes.txt", b"hello"), ("__MACOSX/._ok.jpg", b"\x00\x05\x16\x07"), ("ok.jpg", jpeg())]
    album = read_zip(make_zip(tmp_path / "a.zip", members), LIMITS)
    assert names(album) == ["ok.jpg"]
    assert "not a photo" in reasons(album)["notes.txt"] and "macOS" in reasons(album)["__MACOSX/._ok.jpg"]


def test_zip_member_of_a_name_already_read_is_refused(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = make_zip(tmp_path / "a.zip", [("same.jpg", jpeg(1)), ("same.jpg", jpeg(2)), ("ok.jpg", jpeg())])
    album = read_zip(path, LIMITS)
    assert names(album) == ["same.jpg", "ok.jpg"] and album.files[0].data == jpeg(1)
    assert [r.reason for r in album.refused] == ["a second file of the same name in the zip: refused"]


def test_zip_folder_entries_are_skipped_with_a_reason(tmp_path):
    album = read_zip(make_zip(tmp_path / "a.zip", [("party/", b""), ("party/ok.jpg", jpeg())]), LIMITS)
    assert names(album) == ["ok.jpg"] and "folder" in reasons(album)["party/"]


def test_zip_encrypted_member_is_refused(tmp_path):
    path = make_zip(tmp_path / "a.zip", [("locked.jpg", jpeg()), ("ok.jpg", jpeg())])
    patch_directory(path, "locked.jpg", 8, 0x1)  # zipfile cannot write encrypted members: mark one so
    album = read_zip(path, LIMITS)
    assert names(album) == ["ok.jpg"] and "encrypted" in reasons(album)["locked.jpg"]


def test_zip_bomb_by_ratio_is_refused_from_its_header_and_the_rest_read(tmp_path):
    bomb = b"\x00" * (4 * 2**20)  # 4 MB of zeros deflate to about 4 KB: a ratio near 1000
    album = read_zip(make_zip(tmp_path / "a.zip", [("bomb.bmp", bomb), ("ok.jpg", jpeg())]), LIMITS)
    assert names(album) == ["ok.jpg"] and "zip bomb" in reasons(album)["bomb.bmp"]


def test_zip_member_larger_than_one_photo_may_be_is_refused(tmp_path):
    album = read_zip(make_zip(tmp_path / "a.zip", [("big.jpg", os.urandom(50_000)), ("ok.jpg", jpeg())]),
                     AlbumLimits(image_max_bytes=40_000))
    assert names(album) == ["ok.jpg"] and "limit for one photo" in reasons(album)["big.jpg"]


def patch_directory(path: Path, member: str, offset: int, value: int) -> None:
    """Rewrite a 4- or 2-byte field (by its offset: 8 flags, 24 inflated size) of `member`'s entry in
    the zip's central directory, which is what zipfile believes."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while True:
        name_length, extra, comment = struct.unpack("<HHH", data[at + 28:at + 34])
        if data[at + 46:at + 46 + name_length].decode() == member:
            break
        at += 46 + name_length + extra + comment
    fmt = "<H" if offset == 8 else "<I"
    data[at + offset:at + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def test_zip_member_whose_header_understates_its_size_is_cut_off_and_refused(tmp_path):
    path = make_zip(tmp_path / "a.zip", [("liar.bmp", b"\x00" * 2**20), ("ok.jpg", jpeg())])
    patch_directory(path, "liar.bmp", 24, 1000)  # declares a ratio of 1:4; it inflates about 1000 times
    album = read_zip(path, LIMITS)
    assert names(album) == ["ok.jpg"] and "damaged" in reasons(album)["liar.bmp"]


def test_zip_members_past_the_album_byte_limit_are_refused(tmp_path):
    members = [(f"{n}.jpg", os.urandom(3000)) for n in range(4)]
    album = read_zip(make_zip(tmp_path / "a.zip", members), AlbumLimits(max_bytes=7000))
    assert names(album) == ["0.jpg", "1.jpg"]
    assert all("together would pass" in r.reason for r in album.refused) and len(album.refused) == 2


def test_zip_photos_past_the_album_photo_limit_are_refused(tmp_path):
    album = read_zip(make_zip(tmp_path / "a.zip", [(f"{n}.jpg", jpeg(n)) for n in range(3)]), AlbumLimits(max_photos=2))
    assert names(album) == ["0.jpg", "1.jpg"] and "limit is 2 photos" in reasons(album)["2.jpg"]


def test_zip_listing_far_more_files_than_photos_is_refused_whole(tmp_path):
    path = make_zip(tmp_path / "a.zip", [(f"{n}.txt", b"") for n in range(1001)])
    with pytest.raises(AlbumError, match="lists 1,001 files"):
        read_zip(path, AlbumLimits(max_photos=1))


def test_zip_with_an_oversized_list_of_files_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(album_input, "MAX_DIRECTORY_BYTES", 500)
    path = make_zip(tmp_path / "a.zip", [(f"photo-{n:04d}.jpg", b"") for n in range(20)])
    with pytest.raises(AlbumError, match="list of files takes"):
        read_zip(path, LIMITS)


def test_a_file_that_is_not_a_zip_is_an_album_error(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(AlbumError, match="not a zip"):
        read_album(path, LIMITS)


def test_folder_is_read_with_subfolders_and_links_refused(tmp_path):
    root = tmp_path / "album"
    for folder, colour in (("a", 1), ("b", 2)):
        (root / folder).mkdir(parents=True)
        (root / folder / "x.jpg").write_bytes(jpeg(colour))
    (tmp_path / "outside.jpg").write_bytes(jpeg(3))
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "linked").symlink_to(root / "a")
    album = read_album(root, LIMITS)
    assert names(album) == ["x.jpg", "x-2.jpg"] and [f.data for f in album.files] == [jpeg(1), jpeg(2)]
    assert reasons(album) == {"link.jpg": "a link: not followed", "linked": "a link: not followed"}


def test_a_fifo_named_like_a_photo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    album = read_album([tmp_path / "pipe.jpg"], LIMITS)
    assert reasons(album) == {"pipe.jpg": "not a regular file"}


def test_uploaded_photos_and_a_zip_are_read_together(tmp_path):
    photo = tmp_path / "one.jpg"
    photo.write_bytes(jpeg())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    path = make_zip(tmp_path / "more.zip", [("one.jpg", jpeg(9))])
    album = read_album([str(photo), str(text), str(path), str(tmp_path / "gone.jpg")], LIMITS)
    assert names(album) == ["one.jpg", "one-2.jpg"]
    assert "not a photo" in reasons(album)["notes.txt"] and reasons(album)["gone.jpg"] == "file not found"


@pytest.mark.parametrize("given, safe", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\ada\\IMG 0001.JPG", "IMG_0001.jpg"),
    (".hidden.jpg", "hidden.jpg"),
    ("-rf.png", "rf.png"),
    ("Zoë <script>.jpg", "Zoë__script_.jpg"),
    ("..", "photo"),
    ("x" * 300 + ".jpeg", "x" * 80 + ".jpeg"),
    ("con.jpg", "_con.jpg"),
    ("COM1.tar.jpg", "_COM1.tar.jpg"),
    ("console.jpg", "console.jpg"),
])
def test_safe_names_keep_only_the_file_name_in_safe_characters(given, safe):
    assert safe_name(given) == safe


def test_unique_names_differ_ignoring_case():
    taken: set[str] = set()
    assert [unique_name(n, taken) for n in ("A.jpg", "a.jpg", "a.JPG", "b/a.jpg")] == ["A.jpg", "a-2.jpg", "a-3.jpg", "a-4.jpg"]
