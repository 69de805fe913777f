"""The decrypted in-memory copy of every enrolled subject, kept current with the database by incremental sync.

Decrypted once at open; afterwards this process's own changes are applied directly, and changes
committed by other processes are found through `Storage.change_marker` and read subject by subject
(only the subjects added are decrypted). Not thread-safe: the vault calls it under its lock.
"""
from __future__ import annotations

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


class Gallery:
    """Subject id -> decrypted `Subject`, in enrolment order, with per-model views and a version number."""

    def __init__(self) -> None:
        self._subjects: dict[str, Subject] = {}
        self._views: dict[str, list[StoredSubject]] = {}
        self._version = 0
        self._seen_marker: object = None  # the store's change marker when last in step with it

    @property
    def version(self) -> int:
        """Grows whenever the subjects held change."""
        return self._version

    def _changed(self) -> None:
        self._version += 1
        self._views.clear()

    def load(self, store: Storage, guard: KeyGuard) -> None:
        """Decrypt every subject (at open), read in one snapshot."""
        with store.snapshot():
            self._seen_marker = store.change_marker()
            sealed = store.read_subjects()
            orphans = store.orphan_rows()
        if orphans:
            raise VaultError("the vault holds keys or templates of no subject: it has been tampered with or corrupted")
        self._subjects = {s.subject_id: open_subject(guard.master, s) for s in sealed}
        self._changed()

    def sync(self, store: Storage, guard: KeyGuard) -> None:
        """Apply what other processes committed since the last look: drop erased subjects, decrypt new ones."""
        guard.check_not_rotated()
        if store.change_marker() == self._seen_marker:
            return
        with store.snapshot():
            seen = store.change_marker()
            guard.assert_current(store)
            in_db = store.subject_ids()
            removed = self._subjects.keys() - in_db
            added = {
                sid: load_subject(store, guard.master, sid) for sid in sorted(in_db - self._subjects.keys())
            }
        self._seen_marker = seen  # only once the changes were read: a failure is retried next time
        for subject_id in removed:
            del self._subjects[subject_id]
        self._subjects.update(added)
        if removed or added:
            self._changed()

    def add(self, subject_id: str, subject: Subject) -> None:
        """A subject this process enrolled."""
        self._subjects[subject_id] = subject
        self._changed()

    def discard(self, subject_ids: Iterable[str]) -> None:
        """Subjects this process erased (those not held are ignored)."""
        removed = [sid for sid in subject_ids if self._subjects.pop(sid, None) is not None]
        if removed:
            self._changed()

    def items(self) -> Iterator[tuple[str, Subject]]:
        """(subject id, decrypted subject), in enrolment order."""
        return iter(list(self._subjects.items()))

    def subjects(self, model_id: str) -> list[StoredSubject]:
        """The subjects with templates of `model_id`, in enrolment order (a new list; the view is cached)."""
        view = self._views.get(model_id)
        if view is None:
            view = [
                StoredSubject(sid, s.name, s.templates[model_id])
                for sid, s in self._subjects.items()
                if model_id in s.templates
            ]
            self._views[model_id] = view
        return list(view)

    def clear(self) -> None:
        """Drop every decrypted subject (at close)."""
        self._subjects.clear()
        self._views.clear()
