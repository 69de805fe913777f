"""Tamper-evident audit log kept in the vault database: events with ids and counts only, chained by HMAC.

Entry n carries mac_n = HMAC(audit key, mac_{n-1} || JSON[seq, at, event, fields]), with mac_0 all
zeros; the meta row `audit_head` holds an HMAC over the last (seq, mac), so that removing entries
at the end is detected as well as editing, removing or reordering entries in the middle. Entries are
appended inside the caller's transaction, so an event and the data change it records commit together.

Refusals (wrong or malformed tokens, throttled attempts) are coalesced by `Coalescer`: at most one
entry per event kind and interval is written at once, its repeats are counted and written later as
one entry, so an attacker's thousands of attempts add a few entries a minute, not thousands.
Verification can be incremental (`check` with a `Checkpoint`): after one full pass, only the
checkpoint entry and the entries after it are recomputed. `AuditLog` ties these together for one
open vault: its transactions, appends, coalesced refusals and verification.
"""
from __future__ import annotations

import contextlib
import copy
import hmac
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from privacy import VaultError
from privacy.keys import mac
from privacy.storage import AuditRow, Storage, translated_errors

EVENTS = frozenset(
    {
        "create",
        "enrol",
        "describe_refused",
        "describe_throttled",
        "export",
        "export_refused",
        "export_throttled",
        "forget",
        "forget_refused",
        "forget_throttled",
        "purge",
        "rotate_key",
        "list_subjects",
        "list_subjects_refused",
        "list_subjects_throttled",
    }
)
# Refusals of one kind within this interval are written as one entry plus one counted entry.
COALESCE_INTERVAL = timedelta(seconds=60)
_GENESIS = bytes(32)
# Field values are restricted to what cannot carry a name, a template or a token: numbers, booleans
# and short identifiers (subject ids, model ids, key ids), possibly in lists or one level of mapping.
# At most 40 characters: subject ids are 22, key ids 16, while deletion tokens are 43.
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{0,40}")


@dataclass(frozen=True)
class AuditReport:
    """Result of checking the chain: `first_broken` is the 0-based position of the first bad entry."""

    ok: bool
    entries: int
    first_broken: int | None
    reason: str | None


def _check_value(value: object, depth: int = 0) -> None:
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, str):
        if _IDENTIFIER.fullmatch(value):
            return
        raise VaultError("audit fields take only identifiers of at most 40 characters (never names or tokens)")
    if depth == 0 and isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
        return
    if depth == 0 and isinstance(value, dict):
        for key, item in value.items():
            _check_value(key, depth + 1)
            _check_value(item, depth + 1)
        return
    raise VaultError(f"audit fields cannot hold {type(value).__name__} values")


def _payload(previous: bytes, seq: int, at: str, event: str, fields_json: str) -> bytes:
    return previous + json.dumps([seq, at, event, fields_json], separators=(",", ":")).encode("utf-8")


def _head(key: bytes, seq: int, entry_mac: bytes) -> bytes:
    return mac(key, b"head" + seq.to_bytes(8, "big") + entry_mac)


def append(store: Storage, key: bytes, at: datetime, event: str, fields: dict[str, object]) -> int:
    """Add one entry (inside the caller's write transaction); return its sequence number.

    `fields` maps names to ids and counts; anything that could be free text is refused.
    """
    if event not in EVENTS:
        raise VaultError(f"unknown audit event {event!r}")
    for name, value in fields.items():
        _check_value(name, depth=1)
        _check_value(value)
    fields_json = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    last = store.audit_tail()
    seq, previous = (last[0] + 1, last[1]) if last else (1, _GENESIS)
    at_text = at.isoformat(timespec="microseconds")
    entry_mac = mac(key, _payload(previous, seq, at_text, event, fields_json))
    store.insert_audit(AuditRow(seq, at_text, event, fields_json, entry_mac))
    store.put_meta({"audit_head": _head(key, seq, entry_mac)})
    return seq


@dataclass(frozen=True)
class Checkpoint:
    """The last entry a verification found intact: its sequence number and MAC. Kept in memory only."""

    seq: int
    mac: bytes


def _row_mac(key: bytes, previous: bytes, row: AuditRow) -> bytes:
    return mac(key, _payload(previous, row.seq, row.at, row.event, row.fields))


def _check_rows(
    key: bytes, rows: list[AuditRow], previous: bytes, first_seq: int, total: int
) -> tuple[AuditReport | None, bytes]:
    """Recompute rows expected to carry sequence numbers first_seq, first_seq + 1, ...; a failure report or None."""
    for offset, row in enumerate(rows):
        seq, index = row.seq, first_seq - 1 + offset
        if seq != index + 1:
            return AuditReport(False, total, index, f"entry {index} has sequence number {seq}, expected {index + 1}"), previous
        expected = _row_mac(key, previous, row)
        if not hmac.compare_digest(expected, row.mac):
            reason = f"entry {index} (seq {seq}) was altered, moved or follows a removed entry"
            return AuditReport(False, total, index, reason), previous
        previous = expected
    return None, previous


def _head_ok(store: Storage, key: bytes, last_seq: int, last_mac: bytes) -> bool:
    head = store.get_meta("audit_head")
    return last_seq > 0 and head is not None and hmac.compare_digest(_head(key, last_seq, last_mac), head)


def _check_full(store: Storage, key: bytes) -> tuple[AuditReport, Checkpoint | None]:
    rows = store.audit_rows()
    report, previous = _check_rows(key, rows, _GENESIS, 1, len(rows))
    if report is not None:
        return report, None
    if not _head_ok(store, key, len(rows), previous):
        return AuditReport(False, len(rows), len(rows), "entries after the last one present were removed"), None
    return AuditReport(True, len(rows), None, None), Checkpoint(len(rows), previous)


def _check_since(store: Storage, key: bytes, checkpoint: Checkpoint) -> tuple[AuditReport, Checkpoint] | None:
    """The incremental check; None when anything is off (the caller then runs the full check to locate it)."""
    total, last_seq = store.audit_extent()
    if total != last_seq or last_seq < checkpoint.seq:
        return None
    # The checkpoint entry itself: unchanged MAC, and its content still gives that MAC.
    anchor = store.audit_row(checkpoint.seq)
    before = store.audit_row(checkpoint.seq - 1)
    previous = before.mac if before is not None else _GENESIS
    if anchor is None or (before is None and checkpoint.seq != 1):
        return None
    if not hmac.compare_digest(anchor.mac, checkpoint.mac) or not hmac.compare_digest(
        _row_mac(key, previous, anchor), checkpoint.mac
    ):
        return None
    rows = store.audit_rows(after_seq=checkpoint.seq)
    report, last_mac = _check_rows(key, rows, checkpoint.mac, checkpoint.seq + 1, total)
    if report is not None or not _head_ok(store, key, last_seq, last_mac):
        return None
    return AuditReport(True, total, None, None), Checkpoint(last_seq, last_mac)


def check(
    store: Storage, key: bytes, checkpoint: Checkpoint | None = None
) -> tuple[AuditReport, Checkpoint | None]:
    """Verify the chain; the report and a checkpoint for the next call (None when the chain is broken).

    Without a checkpoint every entry is recomputed (a full check). With one, only the checkpoint
    entry (unchanged MAC, recomputed from its predecessor) and the entries after it are, which
    detects any change to entries added since and to the checkpoint entry, entries removed at the
    end, and a changed count of entries; an edit to an older entry that keeps the count is found
    only by a full check. When the incremental check finds anything wrong, the full check runs
    and its report (naming the first broken entry) is returned. Run it in one read snapshot.
    """
    if checkpoint is not None:
        result = _check_since(store, key, checkpoint)
        if result is not None:
            return result
    return _check_full(store, key)


def verify(store: Storage, key: bytes) -> AuditReport:
    """Recompute the chain from the first entry; report the first entry that does not verify.

    A missing entry shows as a break at the entry after the gap; entries missing at the end show as
    a break at position `entries` (one past the last entry present).
    """
    return _check_full(store, key)[0]


def entries(store: Storage) -> list[dict[str, object]]:
    """Every entry, oldest first: seq, at (ISO 8601 UTC), event and fields (ids and counts)."""
    return [{"seq": r.seq, "at": r.at, "event": r.event, "fields": json.loads(r.fields)} for r in store.audit_rows()]


@dataclass
class _Interval:
    started: datetime
    first_seq: int
    repeats: int = 0
    subjects_known: int = 0


class Coalescer:
    """Writes refusals of each event kind at most once per interval, counting the repeats in between.

    The first refusal of a kind is written at once, with its fields and "count": 1. Further
    refusals of that kind within `interval` are only counted; when the interval has passed, the
    next audit write (or `flush_all`, at close) adds one entry of the same kind with fields
    {"count": repeats, "repeats_of": seq of the first entry, "subjects_known": how many of them
    named an enrolled subject}. Summing "count" over a kind's entries gives every refusal.
    Repeats not yet written are lost if the process dies: at most one interval's worth.
    Not thread-safe by itself: the vault calls it under its lock.
    """

    def __init__(self, interval: timedelta = COALESCE_INTERVAL) -> None:
        self.interval = interval
        self._open: dict[str, _Interval] = {}

    def _due(self, now: datetime) -> list[str]:
        return [event for event, span in self._open.items() if now - span.started >= self.interval]

    def absorb(self, event: str, now: datetime, subject_known: bool) -> bool:
        """Count a refusal without writing, when nothing needs writing now; False when `record` must run."""
        if any(self._open[e].repeats for e in self._due(now)):
            return False
        for due in self._due(now):
            del self._open[due]  # nothing to write for an interval without repeats
        span = self._open.get(event)
        if span is None:
            return False
        span.repeats += 1
        span.subjects_known += int(subject_known)
        return True

    def state(self) -> dict[str, _Interval]:
        """A copy of the open intervals (to restore when the transaction that wrote them rolls back)."""
        return copy.deepcopy(self._open)

    def restore(self, state: dict[str, _Interval]) -> None:
        self._open = state

    def flush_due(self, store: Storage, key: bytes, now: datetime) -> None:
        """Inside the caller's transaction: write the counted entries of the intervals that have passed."""
        self._flush(store, key, now, self._due(now))

    def flush_all(self, store: Storage, key: bytes, now: datetime) -> None:
        """Inside the caller's transaction: write every counted entry now (at close)."""
        self._flush(store, key, now, list(self._open))

    def pending(self) -> bool:
        """Whether repeats are counted that no entry records yet."""
        return any(span.repeats for span in self._open.values())

    def _flush(self, store: Storage, key: bytes, now: datetime, events: list[str]) -> None:
        for event in events:
            span = self._open.pop(event)
            if span.repeats:
                append(store, key, now, event, {
                    "count": span.repeats, "repeats_of": span.first_seq, "subjects_known": span.subjects_known,
                })

    def record(
        self, store: Storage, key: bytes, now: datetime, event: str, fields: dict[str, object],
        subject_known: bool,
    ) -> None:
        """Inside the caller's transaction: write due counted entries, then write or count this refusal."""
        self.flush_due(store, key, now)
        span = self._open.get(event)
        if span is not None:
            span.repeats += 1
            span.subjects_known += int(subject_known)
            return
        seq = append(store, key, now, event, {**fields, "count": 1})
        self._open[event] = _Interval(now, seq)


class AuditLog:
    """The audit log of one open vault: write transactions that keep the coalesced counts consistent, appends,
    refusals, and verification with a checkpoint kept in memory.

    Not thread-safe except `verify`: the vault calls the rest under its lock. `verify` runs on its
    own read-only connection (`Storage.reader`) under a lock of its own, so the vault's other
    operations do not wait for it.
    """

    def __init__(self, store: Storage, key: bytes, coalescer: Coalescer | None = None) -> None:
        self._store = store
        self._key = key
        self._coalescer = coalescer if coalescer is not None else Coalescer()
        self._verify_lock = threading.Lock()
        self._checkpoint: Checkpoint | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """`Storage.write`, restoring the coalescer's counts when the transaction rolls back."""
        saved = self._coalescer.state()
        try:
            with self._store.write():
                yield
        except BaseException:
            self._coalescer.restore(saved)
            raise

    def append(self, now: datetime, event: str, fields: dict[str, object]) -> None:
        """Add an entry (inside `transaction`), after any counted refusals whose interval has passed."""
        self._coalescer.flush_due(self._store, self._key, now)
        append(self._store, self._key, now, event, fields)

    def refusal(self, now: datetime, event: str, fields: dict[str, object], subject_known: bool) -> None:
        """Audit a refusal, coalesced: written at once in a transaction of its own, or counted for a later entry."""
        if self._coalescer.absorb(event, now, subject_known):
            return
        with self.transaction():
            self._coalescer.record(self._store, self._key, now, event, fields, subject_known)

    def pending(self) -> bool:
        """Whether refusals are counted that no entry records yet."""
        return self._coalescer.pending()

    def flush_all(self, now: datetime) -> None:
        """Inside `transaction`: write every counted refusal now (at close)."""
        self._coalescer.flush_all(self._store, self._key, now)

    def entries(self) -> list[dict[str, object]]:
        """Every entry, oldest first (see `entries`)."""
        return entries(self._store)

    def verify(self, full: bool = False) -> AuditReport:
        """Check the chain in one snapshot of its own connection: fully the first time and when `full`, else
        incrementally from the last checkpoint (see `check`)."""
        with self._verify_lock:
            with translated_errors(self._store):
                with self._store.reader() as reader:
                    report, checkpoint = check(reader, self._key, None if full else self._checkpoint)
            self._checkpoint = checkpoint
            return report
