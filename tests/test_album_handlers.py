"""The album tab's handlers, the /anonymize and /album endpoints and the Albums service, called as plain
functions against a real FaceDemo (models and an encrypted vault) and a real upload folder; no browser."""
from __future__ import annotations

import io
import json
import secrets
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from facedemo.app.album_handlers import NOBODY, PEOPLE_HEADERS, PHOTO_HEADERS, AlbumHandlers
from facedemo.app.album_input import AlbumFile, AlbumInput
from facedemo.app.albums import HELD_ALBUMS, AlbumGone, Albums
from facedemo.app.config import Config
from facedemo.app.service import FaceDemo
from facedemo.app.uploads import UploadFolder
from privacy.keys import generate_master_key

# Public domain (tests/data/faces-pd/PROVENANCE.csv).
HOPPER = "grace_hopper/hopper_us_navy_portrait.jpg"
COLLINS = ("eileen_collins/collins_nasa_portrait_a.jpg", "eileen_collins/collins_nasa_portrait_b.jpg")
CREW = "_groups/expedition_1_crew.jpg"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, pipeline, faces_pd):
    """A FaceDemo with Grace Hopper enrolled."""
    service = FaceDemo(Config(data_dir=tmp_path_factory.mktemp("vault"), master_key=generate_master_key()),
                       pipeline=pipeline)
    service.enroll("Grace Hopper", [faces_pd / HOPPER], consent=True)
    yield service
    service.close()


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    with UploadFolder.create(tmp_path_factory.mktemp("gradio")) as folder:
        yield folder


@pytest.fixture(scope="module")
def handlers(demo, uploads):
    h = AlbumHandlers(demo, uploads)
    yield h
    h.albums.close()


def upload(uploads: UploadFolder, name: str, data: bytes) -> str:
    """A file where the app's upload guard puts each upload."""
    folder = uploads.path / f"up-{secrets.token_hex(8)}"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return str(folder / name)


def zipped(faces_pd: Path, files: list[str], extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in files:
            archive.write(faces_pd / file, f"event/{Path(file).name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def unzip(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# --------------------------------------------------------------------------------- the API


def test_anonymize_endpoint_turns_a_zip_into_a_zip_of_hidden_faces_and_deletes_the_upload(handlers, uploads, faces_pd):
    sent = upload(uploads, "event.zip", zipped(faces_pd, [HOPPER, CREW], {"../evil.jpg": b"x"}))
    path = handlers.api_anonymize([sent])
    assert not Path(sent).exists() and uploads.inside(path) and Path(path).name == "anonymised-album.zip"
    files = unzip(path)
    manifest = json.loads(files["manifest.json"])
    assert sorted(files) == ["expedition_1_crew.jpg", "hopper_us_navy_portrait.jpg", "manifest.json"]
    assert (manifest["faces"], manifest["hidden"], manifest["kept_enrolled"]) == (4, 3, 1)
    assert manifest["left_out"] == [{"file": "../evil.jpg", "reason": "its name points outside the album "
                                                                      "(an absolute path or '..'): refused"}]


def test_anonymize_endpoint_refuses_an_album_without_a_photo_with_a_message(handlers, uploads):
    sent = upload(uploads, "notes.zip", zipped(Path("."), [], {"notes.txt": b"hello"}))
    with pytest.raises(gr.Error) as refused:
        handlers.api_anonymize(sent)
    assert refused.value.message.startswith("No photo could be read (notes.txt: not a photo by its name")
    assert not Path(sent).exists()


def test_album_endpoint_gives_faces_people_and_clusters_without_subject_ids(handlers, uploads, faces_pd):
    sent = [upload(uploads, Path(f).name, (faces_pd / f).read_bytes()) for f in (HOPPER, *COLLINS)]
    data = handlers.api_album(sent)
    assert data["people"] == [{"name": "Grace Hopper", "photos": ["hopper_us_navy_portrait.jpg"], "faces": 1}]
    assert [c["faces"] for c in data["clusters"]] == [[{"file": "collins_nasa_portrait_a.jpg", "face": 1},
                                                       {"file": "collins_nasa_portrait_b.jpg", "face": 1}]]
    assert "subject_id" not in json.dumps(data) and not any(Path(p).exists() for p in sent)


# -------------------------------------------------------------------------------- the page


@pytest.fixture
def analysed(handlers, uploads, faces_pd):
    """The page's analysis of Collins twice, Grace Hopper and the crew of three."""
    sent = [upload(uploads, Path(f).name, (faces_pd / f).read_bytes()) for f in (*COLLINS, HOPPER, CREW)]
    return handlers.analyse(sent)


def test_page_analysis_gives_contact_sheet_rows_unknown_people_summary_and_state(analysed):
    sheets, photo_rows, people_rows, unknown, summary, choices, state = analysed
    assert len(sheets) == 4 and all(max(image.shape[:2]) <= 320 for image, _ in sheets)
    assert sheets[3][1] == "expedition_1_crew.jpg: 0 enrolled, 3 unknown"
    assert len(photo_rows[0]) == len(PHOTO_HEADERS) and photo_rows[2][:5] == [3, "hopper_us_navy_portrait.jpg", 1, "Grace Hopper", 0]
    assert len(people_rows[0]) == len(PEOPLE_HEADERS) and people_rows[0][:3] == ["Grace Hopper", 1, 1]
    assert unknown.shape == (4 * (26 + 64 + 8), 960, 3)  # a row per unknown person
    assert summary.startswith("**4 photos analysed**") and "`Grace Hopper` (1 photo)" in summary
    assert choices["choices"][0] == ("nobody: hide every unknown face", NOBODY) and choices["value"] == NOBODY
    assert state.album.photos[0].name == "collins_nasa_portrait_a.jpg"


def test_page_download_keeps_the_unknown_person_marked_as_me(handlers, analysed):
    state = analysed[-1]
    path, message = handlers.download(state, 1)
    manifest = json.loads(unzip(path)["manifest.json"])
    assert (manifest["kept_marked"], manifest["kept_enrolled"], manifest["hidden"]) == (2, 1, 3)
    assert message.startswith("**Ready:** 4 photos, 3 faces hidden, 1 kept sharp as enrolled people, 2 of unknown person 1 (you)")


def test_page_download_without_a_choice_hides_every_unknown_face(handlers, analysed):
    path, _ = handlers.download(analysed[-1], NOBODY)
    assert json.loads(unzip(path)["manifest.json"])["hidden"] == 5


def test_page_refusal_is_a_message_in_the_summary(handlers):
    sheets, photo_rows, _, _, summary, _, state = handlers.analyse(None)
    assert (sheets, photo_rows, state) == ([], [], None)
    assert summary == "**Not analysed.** Add photos, or one zip file of photos, first."


def test_download_after_the_photos_were_dropped_asks_for_them_again(handlers, analysed):
    state = analysed[-1]
    handlers.forget(state)
    path, message = handlers.download(state, NOBODY)
    assert path is None and message.startswith("**Not ready.** The album's photos are no longer in memory")


def test_analysing_again_drops_the_previous_albums_photos(handlers, uploads, analysed, faces_pd):
    first = analysed[-1]
    again = handlers.analyse([upload(uploads, "a.jpg", (faces_pd / HOPPER).read_bytes())], first)
    with pytest.raises(AlbumGone):
        handlers.albums.held(first.token)
    handlers.albums.held(again[-1].token)


def test_a_person_erased_after_the_analysis_is_hidden_in_the_download(demo, handlers, uploads, faces_pd):
    receipt = demo.enroll("Eileen Collins", [faces_pd / COLLINS[0]], consent=True).receipt
    state = handlers.analyse([upload(uploads, "b.jpg", (faces_pd / COLLINS[1]).read_bytes())])[-1]
    assert state.album.people()[0].name == "Eileen Collins"
    demo.forget(receipt.subject_id, receipt.deletion_token)
    path, _ = handlers.download(state, NOBODY)
    manifest = json.loads(unzip(path)["manifest.json"])
    assert (manifest["kept_enrolled"], manifest["hidden"]) == (0, 1)


# ------------------------------------------------------------------- originals in memory


def album_input(size: int) -> AlbumInput:
    return AlbumInput((AlbumFile("a.jpg", bytes(size)),), ())


def test_held_photos_expire_after_keep_seconds(demo):
    now = [0.0]
    albums = Albums(demo, keep_seconds=900, clock=lambda: now[0])
    token = albums.hold(album_input(10))
    now[0] = 899.0
    assert albums.held(token).size == 10
    now[0] = 900.0
    with pytest.raises(AlbumGone):
        albums.held(token)
    albums.close()


def test_held_albums_stay_within_their_memory_budget_oldest_dropped_first(demo):
    albums = Albums(demo)
    albums.limits = replace(albums.limits, max_bytes=1000)
    tokens = [albums.hold(album_input(600)) for _ in range(HELD_ALBUMS + 2)]
    assert albums.held_bytes() <= HELD_ALBUMS * 1000
    albums.held(tokens[-1])
    with pytest.raises(AlbumGone):
        albums.held(tokens[0])
    albums.close()


def test_the_expiry_thread_drops_photos_nobody_asks_for_again(demo):
    albums = Albums(demo, keep_seconds=0.05)
    albums.hold(album_input(10))
    deadline = time.monotonic() + 10
    while albums.held_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert albums.held_bytes() == 0
    albums.close()


def test_the_contact_sheet_shows_the_photo_small_with_its_boxes(analysed, faces_pd):
    sheet = analysed[0][2][0]
    assert sheet.shape == (320, 273, 3) and sheet.dtype == np.uint8
    green = (np.abs(sheet.astype(int) - (0, 150, 70)).sum(axis=2) < 30).sum()
    assert green > 100  # the enrolled person's box and label


@pytest.mark.parametrize("me", [1.5, float("inf"), float("nan"), True, [1], "one"])
def test_a_marked_person_that_is_not_a_whole_number_is_refused_with_a_message(handlers, analysed, me):
    path, message = handlers.download(analysed[-1], me)
    assert path is None and message.startswith("**Not ready.**") and "is not an unknown person's number" in message
