"""The parts of one open vault that its operations share, the lock they take, and the vault's clock."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from privacy import VaultError
from privacy.access import Access
from privacy.audit import AuditLog
from privacy.gallery import Gallery
from privacy.keys import VaultKeys
from privacy.rotation import KeyGuard
from privacy.storage import Storage, translated_errors


def utc_now() -> datetime:
    """The default vault clock."""
    return datetime.now(UTC)


def checked_now(clock: Callable[[], datetime]) -> datetime:
    """`clock()` in UTC; VaultError when the clock returns anything but a timezone-aware datetime."""
    now = clock()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise VaultError("the vault's clock must return timezone-aware datetimes")
    return now.astimezone(UTC)


@dataclass
class VaultContext:
    """Everything an operation on an open vault works with. Operations take `session()` first.

    retention_days: days from enrolment to expiry; key_rotation_days: the operator's rotation
    schedule (only stated in receipts) or None.
    """

    store: Storage
    keys: KeyGuard
    secrets: VaultKeys
    audit: AuditLog
    access: Access
    gallery: Gallery
    clock: Callable[[], datetime]
    retention_days: int
    key_rotation_days: int | None
    lock: threading.RLock = field(default_factory=threading.RLock)
    closed: bool = False

    def now(self) -> datetime:
        return checked_now(self.clock)

    @contextlib.contextmanager
    def session(self) -> Iterator[Storage]:
        """Hold the lock on an open vault; the store's errors become VaultError."""
        with self.lock:
            if self.closed:
                raise VaultError("the vault is closed")
            with translated_errors(self.store):
                yield self.store

    def sync(self) -> None:
        """Inside `session`: bring the gallery up to date with what other processes committed."""
        self.gallery.sync(self.store, self.keys)
