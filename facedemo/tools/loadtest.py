"""Load test of the web app over loopback: concurrent gradio_client clients mixing detect, recognize, enroll and forget.

    python -m facedemo.tools.loadtest [--requests 200] [--clients 8] [--url URL] [--json OUT.json]
                                      [--replicas 2 [--database-url postgresql://...]]

Without --url it starts `python app.py` on a free 127.0.0.1 port with a fresh data directory,
master key and admin token, and afterwards opens that vault to check it is consistent: every
subject enrolled during the run and then forgotten is gone, nothing else is stored, and the audit
chain verifies with one enrol and one forget entry per subject. With --replicas N it starts N apps
sharing one vault on PostgreSQL (--database-url, an empty database; by default a throwaway server
as in `facedemo.tools.bench_vault`), with the same master key, and the clients take turns between
them, so a subject enrolled on one replica is often forgotten through another. Prints the median and 95th
percentile latency (seconds, from sending a request until its answer) per operation and overall,
and the errors. A benchmark, not a test: the figures depend on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from facedemo.tools.launch import running_app

ADMIN_TOKEN = secrets.token_urlsafe(32)  # a fresh operator token each run, strong enough for the vault
# The mix of operations, by weight. Each forget erases a subject this run enrolled; when none is
# waiting, the slot enrols instead, so the run never forgets what it did not create.
MIX = {"detect": 0.35, "recognize": 0.35, "enroll": 0.15, "forget": 0.15}


@dataclass(frozen=True)
class Sample:
    """One request: operation, latency in seconds, and the error message when it failed."""

    operation: str
    seconds: float
    error: str | None = None


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(samples: list[Sample], wall_s: float) -> dict:
    """Counts, errors and latency figures (seconds) per operation and overall."""
    def figures(chosen: list[Sample]) -> dict:
        seconds = [s.seconds for s in chosen]
        return {
            "requests": len(chosen),
            "errors": sum(s.error is not None for s in chosen),
            "median_s": round(statistics.median(seconds), 3) if seconds else None,
            "p95_s": round(percentile(seconds, 0.95), 3) if seconds else None,
        }

    by_operation = {op: figures([s for s in samples if s.operation == op]) for op in MIX}
    return {
        "overall": figures(samples),
        "operations": by_operation,
        "wall_s": round(wall_s, 1),
        "requests_per_s": round(len(samples) / wall_s, 2) if wall_s else None,
        "error_messages": dict(Counter(s.error for s in samples if s.error)),
    }


class Workload:
    """The shared plan all clients draw from, and the subjects enrolled and not yet forgotten."""

    def __init__(self, requests: int, photos: dict[str, str], seed: int = 6) -> None:
        rng = random.Random(seed)
        self._plan = rng.choices(list(MIX), weights=list(MIX.values()), k=requests)
        self._photos = photos
        self._lock = threading.Lock()
        self.waiting: list[dict] = []  # receipts of subjects enrolled and not yet forgotten
        self.enrolled: list[str] = []
        self.forgotten: list[str] = []
        self.samples: list[Sample] = []
        self._copies = 0

    def next_operation(self) -> tuple[str, dict | None] | None:
        """The next operation, with the receipt to forget for "forget"; None when the plan is done."""
        with self._lock:
            if not self._plan:
                return None
            operation = self._plan.pop()
            if operation == "forget":
                if not self.waiting:
                    return "enroll", None
                return operation, self.waiting.pop(0)
            return operation, None

    def record(self, sample: Sample, enrolled: dict | None = None, forgotten: str | None = None,
               still_enrolled: dict | None = None) -> None:
        """Note a request; `enrolled`: its new receipt; `forgotten`: the subject it erased;
        `still_enrolled`: the receipt of a subject a failed forget left in place."""
        with self._lock:
            self.samples.append(sample)
            if enrolled is not None:
                self.waiting.append(enrolled)
                self.enrolled.append(enrolled["subject_id"])
            if forgotten is not None:
                self.forgotten.append(forgotten)
            if still_enrolled is not None:
                self.waiting.append(still_enrolled)

    def photo(self, name: str) -> str:
        return self._photos[name]

    def own_copy(self, name: str) -> str:
        """A copy of a photo that no other request sends: same pixels, a JPEG comment that differs.

        Visitors do not upload byte-identical files at the same moment, and gradio stores uploads
        by content, so identical files would share one upload across concurrent requests.
        """
        from PIL import Image

        with self._lock:
            self._copies += 1
            number = self._copies
        source = Path(self._photos[name])
        copy = source.with_name(f"{source.stem}-{number}.jpg")
        with Image.open(source) as image:
            image.save(copy, quality=92, comment=f"load test copy {number}".encode())
        return str(copy)


def run_client(url: str, workload: Workload, number: int) -> None:
    """One gradio_client client sending requests until the plan is exhausted."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    try:
        while (step := workload.next_operation()) is not None:
            operation, receipt = step
            if operation == "enroll":
                photo = workload.own_copy("astronaut" if number % 2 else "grace_hopper")
            started = time.perf_counter()
            enrolled, forgotten, error = None, None, None
            try:
                if operation == "detect":
                    client.predict(handle_file(workload.photo("group")), api_name="/detect")
                elif operation == "recognize":
                    client.predict(handle_file(workload.photo("group")), None, api_name="/recognize")
                elif operation == "enroll":
                    enrolled = client.predict(f"Load Test {number}", [handle_file(photo)], True, api_name="/enroll")
                else:
                    client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")
                    forgotten = receipt["subject_id"]
            except Exception as exc:  # every failure is counted and reported, whatever its kind
                error = f"{operation}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            sample = Sample(operation, time.perf_counter() - started, error)
            workload.record(sample, enrolled=enrolled, forgotten=forgotten,
                            still_enrolled=receipt if operation == "forget" and error else None)
    finally:
        client.close()


def forget_remaining(url: str, workload: Workload) -> int:
    """Forget the subjects still enrolled when the plan ends (not timed); how many failed."""
    from gradio_client import Client

    failures = 0
    client = Client(url, verbose=False, download_files=False)
    try:
        for receipt in workload.waiting:
            try:
                client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")
                workload.forgotten.append(receipt["subject_id"])
            except Exception:
                failures += 1
    finally:
        client.close()
    workload.waiting.clear()
    return failures


def check_vault(data_dir: Path, master_key: str, workload: Workload, database_url: str | None = None) -> dict:
    """Open the app's vault after the run: what is left, and whether the audit log matches the run."""
    from privacy.vault import Vault

    with Vault.open(data_dir, master_key=master_key, admin_token=ADMIN_TOKEN, database_url=database_url) as vault:
        left = {row["subject_id"] for row in vault.list_subjects(ADMIN_TOKEN)}
        report = vault.audit_verify()
        events = Counter(entry["event"] for entry in vault.audit_entries())
    expected_left = set(workload.enrolled) - set(workload.forgotten)
    return {
        "subjects_left": len(left),
        "subjects_expected": len(expected_left),
        "left_as_expected": left == expected_left,
        "audit_chain_intact": report.ok,
        "audit_enrol_entries": events["enrol"],
        "audit_forget_entries": events["forget"],
        "consistent": left == expected_left and report.ok and events["enrol"] == len(workload.enrolled)
        and events["forget"] == len(workload.forgotten),
    }


def load_test(url: str | list[str], photos: dict[str, str], requests: int, clients: int) -> tuple[dict, Workload]:
    """`clients` concurrent clients sending `requests` in all; with several URLs (replicas) client n talks to
    url n mod len(urls)."""
    urls = [url] if isinstance(url, str) else list(url)
    workload = Workload(requests, photos)
    threads = [
        threading.Thread(target=run_client, args=(urls[n % len(urls)], workload, n), daemon=True)
        for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = summarise(workload.samples, time.perf_counter() - started)
    summary["clients"] = clients
    summary["cleanup_forget_failures"] = forget_remaining(urls[-1], workload)
    summary["enrolled"], summary["forgotten"] = len(workload.enrolled), len(workload.forgotten)
    return summary, workload


def _replicated(args, workdir: Path, photos: dict[str, str]) -> dict:
    """The load test across `args.replicas` apps sharing one PostgreSQL vault, and the vault's check afterwards."""
    from privacy.keys import generate_master_key

    server = None
    url = args.database_url
    if url is None:
        from facedemo.tools.bench_vault import TemporaryPostgres

        server = TemporaryPostgres()
        url = server.url
    key = generate_master_key()
    try:
        for n in range(args.replicas):
            (workdir / f"replica-{n}").mkdir()
        with contextlib.ExitStack() as apps:
            running = [
                apps.enter_context(running_app(workdir / f"replica-{n}", key, ADMIN_TOKEN,
                                               env_extra={"FACEDEMO_DATABASE_URL": url}))
                for n in range(args.replicas)
            ]
            summary, workload = load_test([app.url for app in running], photos, args.requests, args.clients)
        summary["replicas"] = args.replicas
        summary["vault"] = check_vault(workdir / "replica-0" / "data", key, workload, database_url=url)
    finally:
        if server is not None:
            server.close()
    return summary


def _print(summary: dict) -> None:
    o = summary["overall"]
    replicas = f" across {summary['replicas']} replicas" if summary.get("replicas", 1) > 1 else ""
    print(f"{o['requests']} requests from {summary['clients']} clients{replicas} in {summary['wall_s']} s "
          f"({summary['requests_per_s']} requests/s), {o['errors']} errors")
    print(f"{'operation':<10} {'requests':>8} {'errors':>6} {'median s':>9} {'p95 s':>7}")
    for name, f in [*summary["operations"].items(), ("overall", o)]:
        if f["requests"]:
            print(f"{name:<10} {f['requests']:>8} {f['errors']:>6} {f['median_s']:>9.3f} {f['p95_s']:>7.3f}")
    for message, count in summary["error_messages"].items():
        print(f"error x{count}: {message}")
    if "vault" in summary:
        v = summary["vault"]
        print(f"vault afterwards: {v['subjects_left']} subject(s) left (expected {v['subjects_expected']}), "
              f"audit chain {'intact' if v['audit_chain_intact'] else 'BROKEN'}, "
              f"{v['audit_enrol_entries']} enrol / {v['audit_forget_entries']} forget entries for "
              f"{summary['enrolled']} enrolled / {summary['forgotten']} forgotten: "
              f"{'consistent' if v['consistent'] else 'INCONSISTENT'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facedemo.tools.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--url", help="a running app (default: start python app.py on loopback)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--replicas", type=int, default=1,
                        help="start this many apps sharing one vault on PostgreSQL (default 1: one app, SQLite)")
    parser.add_argument("--database-url", help="with --replicas: an empty PostgreSQL database for the shared vault "
                                               "(default: a throwaway server started for the run)")
    args = parser.parse_args(argv)
    if args.replicas < 1 or (args.replicas > 1 and args.url):
        parser.error("--replicas takes a number >= 1 and starts the apps itself (no --url)")

    from facedemo.app import examples
    from privacy.keys import generate_master_key

    with tempfile.TemporaryDirectory(prefix="facedemo-loadtest-") as tmp:
        workdir = Path(tmp)
        photos = {p.stem: str(p) for p in examples.write(workdir / "photos")}
        if args.url:
            summary, _ = load_test(args.url, photos, args.requests, args.clients)
        elif args.replicas > 1:
            summary = _replicated(args, workdir, photos)
        else:
            key = generate_master_key()
            with running_app(workdir, key, ADMIN_TOKEN) as app:
                summary, workload = load_test(app.url, photos, args.requests, args.clients)
            summary["vault"] = check_vault(workdir / "data", key, workload)
    _print(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    failed = summary["overall"]["errors"] or summary["cleanup_forget_failures"]
    return 1 if failed or not summary.get("vault", {"consistent": True})["consistent"] else 0


if __name__ == "__main__":
    sys.exit(main())
