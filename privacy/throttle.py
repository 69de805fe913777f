"""Slows down token guessing: a thread-safe, in-memory limit on wrong tokens per subject id, per client and overall.

Policy (the numbers are `ThrottlePolicy`'s defaults):

- Every key (a subject id, the operator account, a client such as an IP address) gets
  FREE_FAILURES = 5 wrong tokens without delay: a person copying a 43-character token from paper
  may mistype it a few times and should not wait for that.
- Each further wrong token locks the key for 2 s, then 4, 8, ... doubling, capped at 900 s
  (15 minutes): BASE_DELAY_S * 2 ** (failures - FREE_FAILURES - 1). A guesser on one key gets
  about 17 tries in its first hour and 4 an hour after that (96 a day), while the real owner of
  an attacked subject id waits at most 15 minutes.
- While a key is locked, every attempt naming it is refused without looking at the token, so the
  right token is refused too: otherwise "locked" vs "wrong" would tell a guesser when a guess was
  right, and the lock would slow nothing.
- Decay: for every full DECAY_S = 900 s without a failure, a key's count drops by one (and a key
  at zero is forgotten). At the 15-minute cap a guesser who waits out every lock gains nothing by
  it (one step decayed, one step added), and waiting longer only buys back free tries at the same
  rate of about 4 an hour.
- Global cap: at most GLOBAL_FAILURES_PER_MINUTE = 60 wrong tokens per calendar minute (of the
  throttle's clock) across all keys; beyond it every token check is refused until the minute ends.
  That bounds guessing by clients that rotate addresses or subject ids (86,400 tries a day against
  tokens of at least 128 bits) and the work and audit entries an attack can cause, while letting
  a busy demo's typing mistakes (a few an hour) through. Refused attempts do not count as
  failures, so a locked client cannot push the whole vault into the global cap by itself.
- A success clears only the subject id's or operator's count (the caller proved it holds that
  token). It never clears a client's count: a client holding one valid token of its own could
  otherwise interleave it with guesses at other subjects.
- At most MAX_KEYS = 10,000 keys are remembered; beyond that the key with the oldest failure is
  forgotten first (filling the table takes 10,000 failures, i.e. at least 2.8 hours under the
  global cap).

The state is per process: several processes sharing one vault each keep their own counts (the
global cap then applies per process). Keys are opaque strings built by the caller; client
identities are kept only as a hash and never written anywhere.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from privacy import VaultError


class TooManyAttempts(VaultError):
    """Too many wrong tokens: the attempt was refused without checking the token.

    retry_after_s: whole seconds until an attempt naming the same keys may be checked again.
    limit: "key" (a subject id, the operator account or a client is locked) or "global" (the
    vault-wide cap per minute was reached).
    """

    def __init__(self, message: str, retry_after_s: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit


@dataclass(frozen=True)
class ThrottlePolicy:
    """The numbers of the policy described in the module docstring."""

    free_failures: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 900.0
    decay_s: float = 900.0
    global_failures_per_minute: int = 60
    max_keys: int = 10_000

    def delay_s(self, failures: int) -> float:
        """How long a key with `failures` counted failures stays locked after the last one."""
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        # min() on the exponent first: 2 ** 10_000 would overflow a float.
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(extra - 1, 64))


@dataclass
class _Key:
    failures: int
    last_failure: float


def client_key(client: object) -> str | None:
    """The throttle key of a caller identity (an IP address, ...): a hash, so the identity itself is not kept."""
    if client is None:
        return None
    text = client if isinstance(client, str) else repr(client)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"client:{digest}"


class Throttle:
    """Counts wrong tokens per key and refuses attempts on locked keys; safe to share between threads.

    clock: seconds from a monotonic clock (time.monotonic by default; tests inject one).
    Use: `check(keys)` before looking at a token (raises TooManyAttempts), then `failure(keys)`
    or `success(keys)` once the token was checked.
    """

    def __init__(self, policy: ThrottlePolicy | None = None, clock: Callable[[], float] | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _Key] = OrderedDict()  # oldest last failure first
        self._minute = -1
        self._minute_failures = 0

    def _decayed(self, entry: _Key, now: float) -> int:
        if self.policy.decay_s <= 0:
            return entry.failures
        steps = int(max(0.0, now - entry.last_failure) // self.policy.decay_s)
        return max(0, entry.failures - steps)

    def _global_window(self, now: float) -> tuple[int, float]:
        minute = math.floor(now / 60.0)
        if minute != self._minute:
            self._minute, self._minute_failures = minute, 0
        return self._minute_failures, (minute + 1) * 60.0 - now

    def retry_after_s(self, keys: Iterable[str]) -> tuple[float, str | None]:
        """Seconds until `keys` may be checked again (0.0 when now) and which limit applies ("key"/"global")."""
        with self._lock:
            return self._retry_after(list(keys), self._clock())

    def _retry_after(self, keys: list[str], now: float) -> tuple[float, str | None]:
        failures, rest_of_minute = self._global_window(now)
        if failures >= self.policy.global_failures_per_minute:
            return rest_of_minute, "global"
        wait = 0.0
        for key in keys:
            entry = self._keys.get(key)
            if entry is not None:
                # The lock runs from the last failure, with the count as it stood then (not decayed).
                wait = max(wait, entry.last_failure + self.policy.delay_s(entry.failures) - now)
        return (wait, "key") if wait > 0 else (0.0, None)

    def check(self, keys: Iterable[str], what: str = "subject id") -> None:
        """Refuse (TooManyAttempts) when any of `keys` is locked or the global cap is reached.

        what: how the message names the non-client key ("subject id", "operator account").
        """
        wait, limit = self.retry_after_s(keys)
        if limit is None:
            return
        seconds = max(1, math.ceil(wait))
        if limit == "global":
            message = f"too many wrong tokens were tried on this vault in the last minute; try again in {seconds} s"
        else:
            message = f"too many wrong tokens for this {what} or from this client; try again in {seconds} s"
        raise TooManyAttempts(message, seconds, limit)

    def failure(self, keys: Iterable[str]) -> None:
        """Count one wrong token against each of `keys` and against the global cap."""
        with self._lock:
            now = self._clock()
            self._global_window(now)
            self._minute_failures += 1
            for key in keys:
                entry = self._keys.pop(key, None)
                failures = self._decayed(entry, now) if entry is not None else 0
                self._keys[key] = _Key(failures + 1, now)  # re-inserted at the end: newest failure last
            while len(self._keys) > self.policy.max_keys:
                self._keys.popitem(last=False)

    def success(self, keys: Iterable[str]) -> None:
        """Forget the counts of `keys` (never pass a client key: see the module docstring)."""
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)

    def failures(self, key: str) -> int:
        """The count of `key` now, decay applied (for tests and diagnostics)."""
        with self._lock:
            entry = self._keys.get(key)
            return self._decayed(entry, self._clock()) if entry is not None else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)
