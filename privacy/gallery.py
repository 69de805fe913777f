"""The decrypted in-memory copy of every enrolled subject, kept current with the database by incremental sync.

Decrypted once at open; afterwards this process's own changes are applied directly, and changes
committed by other processes are found through `Storage.change_marker` and read subject by subject
(only the subjects added are decrypted; the backend names the changed subjects where it can, see
`Storage.changed_subjects`). The per-model views are updated in place, and a journal of recent
changes lets a caller that built something from the views (the app's stacked gallery) apply just
the changes (`changes_since`). Not thread-safe: the vault calls it under its lock.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from privacy import VaultError
from privacy.records import Subject, load_subject, open_subject
from privacy.rotation import KeyGuard
from privacy.storage import Storage


@dataclass(frozen=True)
class StoredSubject:
    """One enrolled person as the matcher sees it: templates is (k x D) float32, read-only, one row per photo."""

    subject_id: str
    name: str = field(repr=False)
    templates: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class GalleryChanges:
    """What changed for one model since a gallery version: the subjects added (with templates of the model) and
    the ids of subjects removed (ids the caller does not hold may be among them: ignore those).

    complete: `added` is every subject of the model, in enrolment order, and `removed` is empty: start again
    from nothing (the caller had no version, or the journal no longer reaches back to it).
    """

    version: int
    added: list[StoredSubject]
    removed: set[str]
    complete: bool = False


# How many subject changes the journal keeps; a caller further behind rebuilds from `subjects()`.
JOURNAL_LENGTH = 10_000


class Gallery:
    """Subject id -> decrypted `Subject`, in enrolment order, with per-model views and a version number."""

    def __init__(self) -> None:
        self._subjects: dict[str, Subject] = {}
        self._views: dict[str, dict[str, StoredSubject]] = {}
        self._version = 0
        self._seen_marker: object = None  # the store's change marker when last in step with it
        self._journal: deque[tuple[int, str]] = deque()  # (version, subject id) of each change, oldest first
        self._journal_floor = 0  # the journal holds every change after this version

    @property
    def version(self) -> int:
        """Grows whenever the subjects held change."""
        return self._version

    def _changed(self, added: dict[str, Subject], removed: Iterable[str]) -> None:
        """Apply a change to the subjects and their views, as one new version."""
        removed = [sid for sid in removed if sid in self._subjects]
        if not added and not removed:
            return
        self._version += 1
        for subject_id in removed:
            del self._subjects[subject_id]
            for view in self._views.values():
                view.pop(subject_id, None)
            self._journal.append((self._version, subject_id))
        for subject_id, subject in added.items():
            self._subjects[subject_id] = subject
            for model_id, view in self._views.items():
                if model_id in subject.templates:
                    view[subject_id] = StoredSubject(subject_id, subject.name, subject.templates[model_id])
            self._journal.append((self._version, subject_id))
        while len(self._journal) > JOURNAL_LENGTH:
            self._journal_floor = self._journal.popleft()[0]

    def _reset(self, subjects: dict[str, Subject]) -> None:
        self._subjects = subjects
        self._views.clear()
        self._journal.clear()
        self._version += 1
        self._journal_floor = self._version  # nothing before this version can be replayed

    def load(self, store: Storage, guard: KeyGuard) -> None:
        """Decrypt every subject (at open), read in one snapshot."""
        with store.snapshot():
            self._seen_marker = store.change_marker()
            sealed = store.read_subjects()
            orphans = store.orphan_rows()
        if orphans:
            raise VaultError("the vault holds keys or templates of no subject: it has been tampered with or corrupted")
        self._reset({s.subject_id: open_subject(guard.master, s) for s in sealed})

    def sync(self, store: Storage, guard: KeyGuard) -> None:
        """Apply what other processes committed since the last look: drop erased subjects, decrypt new ones."""
        guard.check_not_rotated()
        if store.change_marker() == self._seen_marker:
            return
        with store.snapshot():
            seen = store.change_marker()
            guard.assert_current(store)
            changed = store.changed_subjects(self._seen_marker)
            if changed is None:
                in_db = store.subject_ids()
                removed = self._subjects.keys() - in_db
                new_ids = in_db - self._subjects.keys()
            else:
                removed = {sid for sid, exists in changed.items() if not exists and sid in self._subjects}
                new_ids = {sid for sid, exists in changed.items() if exists and sid not in self._subjects}
            added = {sid: load_subject(store, guard.master, sid) for sid in sorted(new_ids)}
        self._seen_marker = seen  # only once the changes were read: a failure is retried next time
        self._changed(added, removed)

    def add(self, subject_id: str, subject: Subject) -> None:
        """A subject this process enrolled."""
        self._changed({subject_id: subject}, ())

    def discard(self, subject_ids: Iterable[str]) -> None:
        """Subjects this process erased (those not held are ignored)."""
        self._changed({}, subject_ids)

    def changes_since(self, model_id: str, version: int | None) -> GalleryChanges:
        """The subjects of `model_id` added and the ids removed after `version`; every subject (complete) when
        `version` is None, or older than the journal reaches, or not one this gallery had."""
        if version is None or not self._journal_floor <= version <= self._version:
            return GalleryChanges(self._version, self.subjects(model_id), set(), complete=True)
        newest_first: list[str] = []
        for changed_at, subject_id in reversed(self._journal):
            if changed_at <= version:
                break
            newest_first.append(subject_id)
        touched = list(dict.fromkeys(reversed(newest_first)))  # oldest first, each id once
        view = self._view(model_id)
        added = [view[sid] for sid in touched if sid in view]
        removed = {sid for sid in touched if sid not in self._subjects}
        return GalleryChanges(self._version, added, removed)

    def items(self) -> Iterator[tuple[str, Subject]]:
        """(subject id, decrypted subject), in enrolment order."""
        return iter(list(self._subjects.items()))

    def _view(self, model_id: str) -> dict[str, StoredSubject]:
        view = self._views.get(model_id)
        if view is None:
            view = {
                sid: StoredSubject(sid, s.name, s.templates[model_id])
                for sid, s in self._subjects.items()
                if model_id in s.templates
            }
            self._views[model_id] = view
        return view

    def subjects(self, model_id: str) -> list[StoredSubject]:
        """The subjects with templates of `model_id`, in enrolment order (a new list; the view is kept up to date)."""
        return list(self._view(model_id).values())

    def clear(self) -> None:
        """Drop every decrypted subject (at close)."""
        self._subjects.clear()
        self._views.clear()
        self._journal.clear()
