"""Tamper-evident audit log kept in the vault database: events with ids and counts only, chained by HMAC.

Entry n carries mac_n = HMAC(audit key, mac_{n-1} || JSON[seq, at, event, fields]), with mac_0 all
zeros; the meta row `audit_head` holds an HMAC over the last (seq, mac), so that removing entries
at the end is detected as well as editing, removing or reordering entries in the middle. Entries are
appended inside the caller's transaction, so an event and the data change it records commit together.

Refusals (wrong or malformed tokens, throttled attempts) are coalesced by `Coalescer`: at most one
entry per event kind and interval is written at once, its repeats are counted and written later as
one entry, so an attacker's thousands of attempts add a few entries a minute, not thousands.
Verification can be incremental (`check` with a `Checkpoint`): after one full pass, only the
checkpoint entry and the entries after it are recomputed.
"""
from __future__ import annotations

import copy
import hmac
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from privacy import VaultError
from privacy.keys import mac

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


def append(conn: sqlite3.Connection, key: bytes, at: datetime, event: str, fields: dict[str, object]) -> int:
    """Add one entry (inside the caller's open transaction); return its sequence number.

    `fields` maps names to ids and counts; anything that could be free text is refused.
    """
    if event not in EVENTS:
        raise VaultError(f"unknown audit event {event!r}")
    for name, value in fields.items():
        _check_value(name, depth=1)
        _check_value(value)
    fields_json = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    last = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, previous = (last[0] + 1, bytes(last[1])) if last else (1, _GENESIS)
    at_text = at.isoformat(timespec="microseconds")
    entry_mac = mac(key, _payload(previous, seq, at_text, event, fields_json))
    conn.execute(
        "INSERT INTO audit (seq, at, event, fields, mac) VALUES (?, ?, ?, ?, ?)",
        (seq, at_text, event, fields_json, entry_mac),
    )
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('audit_head', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_head(key, seq, entry_mac),),
    )
    return seq


@dataclass(frozen=True)
class Checkpoint:
    """The last entry a verification found intact: its sequence number and MAC. Kept in memory only."""

    seq: int
    mac: bytes


def _row_mac(key: bytes, previous: bytes, row: tuple) -> bytes:
    seq, at, event, fields_json, _ = row
    return mac(key, _payload(previous, seq, at, event, fields_json))


def _check_rows(
    key: bytes, rows: list[tuple], previous: bytes, first_seq: int, total: int
) -> tuple[AuditReport | None, bytes]:
    """Recompute rows expected to carry sequence numbers first_seq, first_seq + 1, ...; a failure report or None."""
    for offset, row in enumerate(rows):
        seq, index = row[0], first_seq - 1 + offset
        if seq != index + 1:
            return AuditReport(False, total, index, f"entry {index} has sequence number {seq}, expected {index + 1}"), previous
        expected = _row_mac(key, previous, row)
        if not hmac.compare_digest(expected, bytes(row[4])):
            reason = f"entry {index} (seq {seq}) was altered, moved or follows a removed entry"
            return AuditReport(False, total, index, reason), previous
        previous = expected
    return None, previous


def _head_ok(conn: sqlite3.Connection, key: bytes, last_seq: int, last_mac: bytes) -> bool:
    head = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    return last_seq > 0 and head is not None and hmac.compare_digest(_head(key, last_seq, last_mac), bytes(head[0]))


_COLUMNS = "SELECT seq, at, event, fields, mac FROM audit"


def _check_full(conn: sqlite3.Connection, key: bytes) -> tuple[AuditReport, Checkpoint | None]:
    rows = conn.execute(f"{_COLUMNS} ORDER BY seq").fetchall()
    report, previous = _check_rows(key, rows, _GENESIS, 1, len(rows))
    if report is not None:
        return report, None
    if not _head_ok(conn, key, len(rows), previous):
        return AuditReport(False, len(rows), len(rows), "entries after the last one present were removed"), None
    return AuditReport(True, len(rows), None, None), Checkpoint(len(rows), previous)


def _check_since(conn: sqlite3.Connection, key: bytes, checkpoint: Checkpoint) -> tuple[AuditReport, Checkpoint] | None:
    """The incremental check; None when anything is off (the caller then runs the full check to locate it)."""
    total, last_seq = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM audit").fetchone()
    if total != last_seq or last_seq < checkpoint.seq:
        return None
    # The checkpoint entry itself: unchanged MAC, and its content still gives that MAC.
    anchor = conn.execute(f"{_COLUMNS} WHERE seq = ?", (checkpoint.seq,)).fetchone()
    before = conn.execute("SELECT mac FROM audit WHERE seq = ?", (checkpoint.seq - 1,)).fetchone()
    previous = bytes(before[0]) if before is not None else _GENESIS
    if anchor is None or (before is None and checkpoint.seq != 1):
        return None
    if not hmac.compare_digest(bytes(anchor[4]), checkpoint.mac) or not hmac.compare_digest(
        _row_mac(key, previous, anchor), checkpoint.mac
    ):
        return None
    rows = conn.execute(f"{_COLUMNS} WHERE seq > ? ORDER BY seq", (checkpoint.seq,)).fetchall()
    report, last_mac = _check_rows(key, rows, checkpoint.mac, checkpoint.seq + 1, total)
    if report is not None or not _head_ok(conn, key, last_seq, last_mac):
        return None
    return AuditReport(True, total, None, None), Checkpoint(last_seq, last_mac)


def check(
    conn: sqlite3.Connection, key: bytes, checkpoint: Checkpoint | None = None
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
        result = _check_since(conn, key, checkpoint)
        if result is not None:
            return result
    return _check_full(conn, key)


def verify(conn: sqlite3.Connection, key: bytes) -> AuditReport:
    """Recompute the chain from the first entry; report the first entry that does not verify.

    A missing entry shows as a break at the entry after the gap; entries missing at the end show as
    a break at position `entries` (one past the last entry present).
    """
    return _check_full(conn, key)[0]


def entries(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Every entry, oldest first: seq, at (ISO 8601 UTC), event and fields (ids and counts)."""
    return [
        {"seq": seq, "at": at, "event": event, "fields": json.loads(fields_json)}
        for seq, at, event, fields_json in conn.execute("SELECT seq, at, event, fields FROM audit ORDER BY seq")
    ]


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

    def flush_due(self, conn: sqlite3.Connection, key: bytes, now: datetime) -> None:
        """Inside the caller's transaction: write the counted entries of the intervals that have passed."""
        self._flush(conn, key, now, self._due(now))

    def flush_all(self, conn: sqlite3.Connection, key: bytes, now: datetime) -> None:
        """Inside the caller's transaction: write every counted entry now (at close)."""
        self._flush(conn, key, now, list(self._open))

    def pending(self) -> bool:
        """Whether repeats are counted that no entry records yet."""
        return any(span.repeats for span in self._open.values())

    def _flush(self, conn: sqlite3.Connection, key: bytes, now: datetime, events: list[str]) -> None:
        for event in events:
            span = self._open.pop(event)
            if span.repeats:
                append(conn, key, now, event, {
                    "count": span.repeats, "repeats_of": span.first_seq, "subjects_known": span.subjects_known,
                })

    def record(
        self, conn: sqlite3.Connection, key: bytes, now: datetime, event: str, fields: dict[str, object],
        subject_known: bool,
    ) -> None:
        """Inside the caller's transaction: write due counted entries, then write or count this refusal."""
        self.flush_due(conn, key, now)
        span = self._open.get(event)
        if span is not None:
            span.repeats += 1
            span.subjects_known += int(subject_known)
            return
        seq = append(conn, key, now, event, {**fields, "count": 1})
        self._open[event] = _Interval(now, seq)
