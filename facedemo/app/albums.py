"""The app's albums: read, analyse against the enrolled people, anonymise; the originals only ever in memory.

How the page can let someone mark a cluster as themself and then download, without a photo on disk:
`hold` keeps an album's original bytes (an AlbumInput) in this process's memory under a random
token, which the page keeps in its per-session state beside the Album (boxes and names, no pixels,
no embeddings). `held(token)` gives them back for the download. They are dropped KEEP_SECONDS after
analysis, at `drop`, or earlier when newer albums need the room: all albums held together stay
under HELD_ALBUMS times the album byte limit, the oldest dropped first. One thread drops them as
they expire. A dropped album is asked for again ("add the photos again"); nothing of it was ever
written anywhere.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from facedemo.album import Album, OnPhoto, Progress, Refusal, analyse_album
from facedemo.anonymise import PublishedPhoto, anonymise_album
from facedemo.app.album_input import AlbumError, AlbumInput, read_album
from facedemo.app.service import FaceDemo

# Minutes for someone to look at the clusters, mark one and download, before the photos are dropped.
KEEP_SECONDS = 15 * 60
# Albums held at once, in album byte limits (Config.album_max_bytes): two full albums, or many small ones.
HELD_ALBUMS = 2

Sources = str | os.PathLike | Sequence[str | os.PathLike]


class AlbumGone(Exception):
    """The album's photos are no longer held (KEEP_SECONDS passed, or newer albums needed the room)."""

    def __init__(self) -> None:
        super().__init__(
            f"the album's photos are no longer in memory (they are kept {KEEP_SECONDS // 60} minutes, "
            "and fewer when many albums arrive): add them again"
        )


@dataclass(frozen=True)
class Anonymised:
    """An anonymised album: the zip (bytes: photos and manifest.json) and what was done to each photo."""

    zip: bytes
    photos: tuple[PublishedPhoto, ...]
    album: Album

    @property
    def hidden(self) -> int:
        return sum(p.hidden for p in self.photos)


class Albums:
    """Albums over one FaceDemo: its pipeline, its vault's gallery and its album limits (Config.album_limits)."""

    def __init__(self, demo: FaceDemo, keep_seconds: float = KEEP_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """keep_seconds: how long `hold` keeps an album; clock: seconds, for tests of expiry."""
        self.demo = demo
        self.limits = demo.config.album_limits()
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._held: OrderedDict[str, tuple[float, AlbumInput]] = OrderedDict()  # token -> (expiry, photos)
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a new album, or close: the expiry thread looks again
        self._sweeper: threading.Thread | None = None
        self._closed = False

    def read(self, sources: Sources) -> AlbumInput:
        """The album's photos read into memory (facedemo.app.album_input.read_album), each unusable file
        refused with its reason. AlbumError when not one photo could be read."""
        photos = read_album(sources, self.limits)
        if not photos.files:
            raise _nothing_read(photos.refused)
        return photos

    def analyse(self, sources: Sources | AlbumInput, progress: Progress | None = None,
                on_photo: OnPhoto | None = None) -> Album:
        """Every photo analysed against the people enrolled now, at the configured threshold, and the
        unknown faces grouped. Album.refused lists the files not read, then those not analysed.
        progress, on_photo: as facedemo.album.analyse_album."""
        photos = sources if isinstance(sources, AlbumInput) else self.read(sources)
        album = analyse_album(self.demo.pipeline, photos.photos(), self.demo.gallery(), limits=self.limits,
                              progress=progress, on_photo=on_photo)
        album = replace(
            album, refused=photos.refused + album.refused,
            photos=tuple(replace(p, given=photos.files[p.source].given) for p in album.photos),
        )
        if not album.photos:  # files named like photos, none of which decoded
            raise _nothing_read(album.refused)
        return album

    def anonymise(self, album_or_sources: Album | Sources, keep_cluster: int | None = None,
                  photos: AlbumInput | None = None) -> Anonymised:
        """Every face hidden except those of enrolled people, and of cluster `keep_cluster` (from 1) when
        given; as a zip. An Album needs the `photos` it was analysed from; sources are read and analysed
        first. People erased since the analysis are hidden too: consent is checked again now.
        AnonymiseError for a cluster the album does not have."""
        if isinstance(album_or_sources, Album):
            if photos is None:
                raise ValueError("an analysed album needs the photos it was analysed from")
            album = album_or_sources
        else:
            photos = self.read(album_or_sources)
            album = self.analyse(photos)
        album = album.restricted_to(set(self.demo.gallery(album.model_id).subject_ids))
        data, published = anonymise_album(album, [f.data for f in photos.files], keep_cluster, self.limits)
        return Anonymised(data, tuple(published), album)

    # ------------------------------------------------------------------ originals kept in memory

    def hold(self, photos: AlbumInput) -> str:
        """Keep `photos` in memory for `keep_seconds`; the token that `held` and `drop` take."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._held[token] = (self._clock() + self.keep_seconds, photos)
            budget = HELD_ALBUMS * self.limits.max_bytes
            while len(self._held) > 1 and sum(p.size for _, p in self._held.values()) > budget:
                self._held.popitem(last=False)
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep, name="album-expiry", daemon=True)
                self._sweeper.start()
        self._wake.set()
        return token

    def held(self, token: str) -> AlbumInput:
        """The photos kept under `token`; AlbumGone when they were dropped or have expired."""
        with self._lock:
            entry = self._held.get(token)
            if entry is not None and self._clock() < entry[0]:
                return entry[1]
            self._held.pop(token, None)
        raise AlbumGone()

    def drop(self, token: str) -> None:
        """Forget the photos kept under `token` now (nothing happens when they are gone already)."""
        with self._lock:
            self._held.pop(token, None)

    def held_bytes(self) -> int:
        """Bytes of original photos held now, all albums together."""
        with self._lock:
            return sum(p.size for _, p in self._held.values())

    def close(self) -> None:
        """Drop every album held and stop the expiry thread."""
        with self._lock:
            self._held.clear()
            self._closed = True
        self._wake.set()

    def _sweep(self) -> None:
        """Drop albums as they expire, so that their bytes leave memory even when nobody asks for them."""
        while True:
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                now = self._clock()
                for token in [t for t, (expires, _) in self._held.items() if expires <= now]:
                    del self._held[token]
                soonest = min((expires for expires, _ in self._held.values()), default=None)
            self._wake.wait(None if soonest is None else max(0.0, soonest - now))


def _nothing_read(refused: Sequence[Refusal]) -> AlbumError:
    """The refusal of an album of which not one photo could be read, with the first reasons."""
    reasons = "; ".join(f"{r.name}: {r.reason}" for r in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    return AlbumError(f"no photo could be read ({reasons or 'the album is empty'}{more})")
