"""The album tab's handlers and the /anonymize and /album endpoints: plain data in (uploaded file paths), plain data out.

An album is a list of photos or one zip (gr.File(file_count="multiple", type="filepath")). The
uploads are read into memory and deleted when the request ends (UploadFolder.claim); the originals
stay only in this process's memory, under a token in the page's state (facedemo.app.albums), until
the download or KEEP_SECONDS. Refusals are messages in the page, and gr.Error for the API.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from facedemo import render
from facedemo.album import Album, AlbumPhoto, FaceRef, printable
from facedemo.anonymise import AnonymiseError
from facedemo.app.album_input import AlbumError, AlbumInput
from facedemo.app.albums import KEEP_SECONDS, AlbumGone, Albums, Anonymised
from facedemo.app.handlers import UPLOAD_GONE, USER_ERRORS, for_people, refusal
from facedemo.app.service import FaceDemo
from facedemo.app.uploads import UploadFolder, UploadGone

ALBUM_ERRORS = (*USER_ERRORS, AlbumError, AlbumGone, AnonymiseError)
PHOTO_HEADERS = ["photo", "file", "faces", "enrolled people", "unknown", "unknown people"]
PEOPLE_HEADERS = ["name", "photos", "faces", "files"]
# Long side of each contact-sheet picture, in pixels: boxes and names readable, 200 of them light to send.
CONTACT_SIDE = 320
# Face thumbnails of an unknown person: side in pixels, and how many are shown.
THUMB_SIDE = 64
STRIP_FACES = 8
# Refusal reasons listed in the summary; the rest are counted.
LISTED_REFUSALS = 20
ZIP_NAME = "anonymised-album.zip"
NOBODY = 0  # the "mark as me" choice that marks no cluster


@dataclass(frozen=True)
class AlbumState:
    """What the page keeps per browser session after an analysis: the album (boxes, names, cluster
    numbers; no pixels, no embeddings) and the token of its originals held in memory (Albums.hold)."""

    token: str
    album: Album


def _sentence(exc: BaseException) -> str:
    text = UPLOAD_GONE if isinstance(exc, UploadGone) else for_people(str(exc))
    return text if text.endswith((".", "!", "?", ")")) else text + "."


def _code(text: str) -> str:
    """`text` as Markdown inline code that no file name can break out of."""
    return "`" + text.replace("`", "'") + "`"


def _files(files: str | list[str] | None) -> list[str]:
    if files is None:
        return []
    return [files] if isinstance(files, str) else [f for f in files if f]


class AlbumHandlers:
    """Every handler of the album tab and its endpoints, bound to one FaceDemo.

    uploads: the app's upload folder; each request's uploads are deleted when it ends, and the
    download's zip is written in it (gradio serves it from its own copy, and the folder's sweeper
    deletes both within about OUTPUT_MAX_AGE_S). None (tests): uploads are left alone and zips go to
    a new private folder in the system's temporary folder.
    """

    def __init__(self, demo: FaceDemo, uploads: UploadFolder | None = None, albums: Albums | None = None) -> None:
        self.demo = demo
        self.uploads = uploads
        self.albums = albums or Albums(demo)

    def _read(self, files: list[str]) -> AlbumInput:
        """The uploads read into memory, and deleted from disk when this returns (or fails)."""
        if not files:
            raise AlbumError("add photos, or one zip file of photos, first")
        claim = self.uploads.claim(files) if self.uploads is not None else contextlib.nullcontext()
        with claim:
            return self.albums.read(files)

    # ---------------------------------------------------------------------------- the page

    def analyse(
        self, files: str | list[str] | None, state: AlbumState | None = None, progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[np.ndarray, str]], list[list], list[list], np.ndarray | None, str, Any,
               AlbumState | None]:
        """Analyse an album: photo files and/or zip files (paths from gr.File(file_count="multiple")).

        Returns, for the page: the contact sheet (gr.Gallery: each photo at most CONTACT_SIDE px with
        boxes and names, captioned), one row per photo (gr.Dataframe, PHOTO_HEADERS), one row per
        enrolled person found (PEOPLE_HEADERS), a picture with a row of face thumbnails per unknown
        person, captioned "unknown person N: ..." (gr.Image; None when there is none), a summary in Markdown with every file not used
        and why, the choices of "these faces are me" (a gr.Dropdown update: NOBODY, then each unknown
        person's number) and the new state (gr.State). The previous `state`'s photos are dropped.
        Refused: empty outputs, the reason in the summary, state None.
        """
        if state is not None:
            self.albums.drop(state.token)
        sheets: list[tuple[np.ndarray, str]] = []
        thumbs: dict[FaceRef, np.ndarray] = {}

        def report(done: int, total: int, faces: int) -> None:
            progress((done, total), desc=f"Analysing photos ({faces} faces so far)", unit="photos")

        def look(number: int, image: np.ndarray, photo: AlbumPhoto) -> None:
            sheets.append((self._sheet(image, photo), self._caption(photo)))
            for f, fa in enumerate(photo.analysis.faces):
                if not fa.decision.accepted:
                    thumbs[FaceRef(number, f)] = _thumbnail(image, fa.face.box)

        try:
            photos = self._read(_files(files))
            album = self.albums.analyse(photos, progress=report, on_photo=look)
        except (*ALBUM_ERRORS, UploadGone) as exc:
            return [], [], [], None, f"**Not analysed.** {_sentence(exc)}", gr.update(choices=[], value=None), None
        new_state = AlbumState(self.albums.hold(photos), album) if album.photos else None
        unknown = render.face_rows([
            (f"unknown person {c.number}: {len(c.faces)} face{'s' if len(c.faces) != 1 else ''} in "
             f"{len(c.photos())} photo{'s' if len(c.photos()) != 1 else ''}",
             [thumbs[r] for r in c.faces[:STRIP_FACES] if r in thumbs])
            for c in album.clusters
        ]) if album.clusters else None
        return (sheets, self.photo_rows(album), self.people_rows(album), unknown, self.summary(album),
                gr.update(choices=self.me_choices(album), value=NOBODY), new_state)

    @staticmethod
    def _sheet(image: np.ndarray, photo: AlbumPhoto) -> np.ndarray:
        size = (photo.analysis.width, photo.analysis.height)
        return render.draw_recognition(render.fit(image, CONTACT_SIDE), photo.analysis.faces, max_side=None,
                                       source_size=size)

    @staticmethod
    def _caption(photo: AlbumPhoto) -> str:
        named = sum(fa.decision.accepted for fa in photo.analysis.faces)
        unknown = len(photo.analysis.faces) + len(photo.unanalysed) - named
        return f"{photo.name}: {named} enrolled, {unknown} unknown"

    @staticmethod
    def photo_rows(album: Album) -> list[list]:
        """One row per analysed photo (PHOTO_HEADERS): number from 1, file, faces, the enrolled people
        named, unknown faces, and the unknown people's numbers ("2, 5")."""
        rows = []
        for number, photo in enumerate(album.photos, 1):
            faces = photo.analysis.faces
            names = ", ".join(fa.decision.identity for fa in faces if fa.decision.accepted)
            unknown = len(faces) + len(photo.unanalysed) - sum(fa.decision.accepted for fa in faces)
            clusters = ", ".join(str(c) for c in sorted({c for c in photo.clusters if c is not None}))
            rows.append([number, photo.name, len(faces) + len(photo.unanalysed), names or "–", unknown,
                         clusters or "–"])
        return rows

    @staticmethod
    def people_rows(album: Album) -> list[list]:
        """One row per enrolled person found (PEOPLE_HEADERS): name, photos, faces, the first files."""
        rows = []
        for person in album.people():
            photos = person.photos()
            files = ", ".join(album.photos[i].name for i in photos[:5]) + (" …" if len(photos) > 5 else "")
            rows.append([person.name, len(photos), len(person.faces), files])
        return rows

    @staticmethod
    def me_choices(album: Album) -> list[tuple[str, int]]:
        """(label, value) choices for "these faces are me": NOBODY first, then each unknown person."""
        return [("nobody: hide every unknown face", NOBODY)] + [
            (f"unknown person {c.number} ({len(c.faces)} face{'s' if len(c.faces) != 1 else ''})", c.number)
            for c in album.clusters
        ]

    @staticmethod
    def summary(album: Album) -> str:
        """What the album holds in a few Markdown sentences, then every file not used and why."""
        faces = album.faces
        people = album.people()
        named = sum(len(p.faces) for p in people)
        clustered = sum(len(c.faces) for c in album.clusters)
        ungrouped = faces - named - clustered
        lines = [
            f"**{len(album.photos)} photo{'s' if len(album.photos) != 1 else ''} analysed** in {album.seconds:.1f} s: "
            f"{faces} face{'s' if faces != 1 else ''} found."
        ]
        if people:
            who = ", ".join(f"{_code(p.name)} ({len(p.photos())} photo{'s' if len(p.photos()) != 1 else ''})"
                            for p in people)
            lines.append(f"**Enrolled people** (their faces stay sharp: enrolment is their consent): {who}.")
        if faces - named:
            lines.append(
                f"**Unknown:** {faces - named} face{'s' if faces - named != 1 else ''}, "
                f"{len(album.clusters)} different {'people' if len(album.clusters) != 1 else 'person'} by "
                f"appearance" + (f" ({ungrouped} not grouped: too small, blurred or turned, or beyond the "
                                 "faces analysed per photo)" if ungrouped else "") +
                ". They are hidden in the download; choose which unknown person is you to keep your own face.")
        if album.refused:
            listed = "\n".join(f"- {_code(r.name)}: {r.reason}" for r in album.refused[:LISTED_REFUSALS])
            more = len(album.refused) - LISTED_REFUSALS
            lines.append(f"**Not used ({len(album.refused)}):**\n{listed}" + (f"\n- … and {more} more" if more > 0 else ""))
        lines.append(f"The photos are kept in this server's memory for {KEEP_SECONDS // 60} minutes for the "
                     "download, then dropped; they are never written to disk.")
        return "\n\n".join(lines)

    def download(self, state: AlbumState | None, me: int | float | str | None = None) -> tuple[str | None, str]:
        """The anonymised album as a zip file for gr.File / gr.DownloadButton (a path), and a line of
        Markdown saying what was hidden. `me`: the chosen unknown person's number (NOBODY or None: none).
        Refused (no album analysed, photos dropped, an unknown person the album lacks): None and why."""
        if state is None:
            return None, "**Nothing to download.** Analyse an album first."
        try:
            keep = _cluster_number(me)
            result = self.albums.anonymise(state.album, keep, photos=self.albums.held(state.token))
        except ALBUM_ERRORS as exc:
            return None, f"**Not ready.** {_sentence(exc)}"
        return self._write(result.zip), self.ready_text(result, keep)

    @staticmethod
    def ready_text(result: Anonymised, keep: int | None) -> str:
        """What the download holds, in one Markdown line."""
        kept = sum(p.kept_enrolled for p in result.photos)
        marked = sum(p.kept_marked for p in result.photos)
        mine = f", {marked} of unknown person {keep} (you)" if keep is not None else ""
        return (f"**Ready:** {len(result.photos)} photos, {result.hidden} faces hidden, "
                f"{kept} kept sharp as enrolled people{mine}. Photos were re-encoded without their metadata "
                "(camera, time, GPS). Check them before publishing: a face the detector missed is not hidden.")

    def forget(self, state: AlbumState | None) -> tuple[None, str]:
        """Drop the album's photos from memory now (the page's "clear"): the new state (None) and a line."""
        if state is not None:
            self.albums.drop(state.token)
        return None, "The album's photos were dropped from memory."

    def _write(self, data: bytes) -> str:
        """The zip as a file of its own folder (0700) for gradio to serve; the sweeper removes it."""
        base = self.uploads.path if self.uploads is not None else None
        folder = Path(tempfile.mkdtemp(prefix="album-", dir=base))
        path = folder / ZIP_NAME
        with open(path, "xb") as f:
            f.write(data)
        return str(path)

    # ---------------------------------------------------------------------------- the API

    def api_anonymize(self, files: str | list[str] | None, keep_cluster: int | float | str | None = None) -> str:
        """/anonymize: photos or one zip in, the anonymised zip out (a file: photos re-encoded with every
        face hidden except enrolled people's, and manifest.json with per-photo counts and the files
        left out). keep_cluster: one unknown person to keep sharp (the uploader), numbered as /album
        numbers them for the same photos and enrolled people; None or 0: nobody. gr.Error when nothing
        could be used, or for an unknown person the album does not have."""
        def work(photos: AlbumInput) -> str:
            keep = _cluster_number(keep_cluster)
            return self._write(self.albums.anonymise(self.albums.analyse(photos), keep, photos=photos).zip)

        return self._api(work, files)

    def api_album(self, files: str | list[str] | None) -> dict:
        """/album: photos or one zip in; per photo its faces (box, identity, cluster), the enrolled people
        found, the clusters of unknown faces and the files not used (facedemo.album.Album.to_dict; no
        subject ids, no embeddings)."""
        return self._api(lambda photos: self.albums.analyse(photos).to_dict(), files)

    def _api(self, work: Callable[[AlbumInput], Any], files: str | list[str] | None) -> Any:
        try:
            return work(self._read(_files(files)))
        except (*ALBUM_ERRORS, UploadGone) as exc:
            raise refusal(_sentence(exc)) from None


def _cluster_number(value: int | float | str | None) -> int | None:
    """The dropdown's value as a cluster number; None for NOBODY or nothing chosen."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, bool) and float(value).is_integer():
            number = int(float(value))
            return None if number == NOBODY else number
    except (TypeError, ValueError, OverflowError):
        pass
    # A value from a client, not the page's dropdown: 1.5, inf, True or a list name nobody.
    raise AnonymiseError(f"{printable(repr(value), 40)} is not an unknown person's number")


def _thumbnail(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """THUMB_SIDE x THUMB_SIDE x 3: the face with a margin of a fifth of its size."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * 1.4
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = Image.fromarray(image).crop((round(cx - side / 2), round(cy - side / 2),
                                        round(cx + side / 2), round(cy + side / 2)))
    return np.asarray(crop.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS))
