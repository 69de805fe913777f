"""Tamper-evident audit log kept in the vault database: events with ids and counts only, chained by HMAC.

Entry n carries mac_n = HMAC(audit key, mac_{n-1} || JSON[seq, at, event, fields]), with mac_0 all
zeros; the meta row `audit_head` holds an HMAC over the last (seq, mac), so that removing entries
at the end is detected as well as editing, removing or reordering entries in the middle. Entries are
appended inside the caller's transaction, so an event and the data change it records commit together.
"""
from __future__ import annotations

import hmac
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from privacy import VaultError
from privacy.keys import mac

EVENTS = frozenset(
    {
        "create",
        "enrol",
        "describe_refused",
        "export",
        "export_refused",
        "forget",
        "forget_refused",
        "purge",
        "rotate_key",
        "list_subjects",
    }
)
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


def verify(conn: sqlite3.Connection, key: bytes) -> AuditReport:
    """Recompute the chain from the first entry; report the first entry that does not verify.

    A missing entry shows as a break at the entry after the gap; entries missing at the end show as
    a break at position `entries` (one past the last entry present).
    """
    rows = conn.execute("SELECT seq, at, event, fields, mac FROM audit ORDER BY seq").fetchall()
    previous = _GENESIS
    for index, (seq, at, event, fields_json, entry_mac) in enumerate(rows):
        if seq != index + 1:
            reason = f"entry {index} has sequence number {seq}, expected {index + 1}"
            return AuditReport(False, len(rows), index, reason)
        expected = mac(key, _payload(previous, seq, at, event, fields_json))
        if not hmac.compare_digest(expected, bytes(entry_mac)):
            reason = f"entry {index} (seq {seq}) was altered, moved or follows a removed entry"
            return AuditReport(False, len(rows), index, reason)
        previous = expected
    head = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    if not rows or head is None or not hmac.compare_digest(_head(key, len(rows), previous), bytes(head[0])):
        return AuditReport(False, len(rows), len(rows), "entries after the last one present were removed")
    return AuditReport(True, len(rows), None, None)


def entries(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Every entry, oldest first: seq, at (ISO 8601 UTC), event and fields (ids and counts)."""
    return [
        {"seq": seq, "at": at, "event": event, "fields": json.loads(fields_json)}
        for seq, at, event, fields_json in conn.execute("SELECT seq, at, event, fields FROM audit ORDER BY seq")
    ]
