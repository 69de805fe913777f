"""Vault benchmark, SQLite and PostgreSQL side by side: enrolment and erasure latency, replica sync, gallery load and
identification at 10,000 and 100,000 enrolled subjects.

    python -m facedemo.tools.bench_vault [--sizes 10000,100000] [--backends sqlite,postgresql]
                                         [--database-url postgresql://...] [--json OUT.json]

Without --database-url a throwaway PostgreSQL server is started on a Unix socket in a temporary folder
(Debian's postgresql package; as the `postgres` user when run as root) and removed afterwards; with
it, one database per size is created there (the role needs CREATEDB) and dropped afterwards.
Per backend and size:
- load_s: opening the vault, which decrypts every subject (what a replica does at start-up);
  stack_s: stacking the app's gallery of the default model from them (`Gallery.from_subjects`);
- identify_ms: the app's matching of one probe against that gallery (`nearest`, median);
- enrol_ms p50/p95 and forget_ms p50: `Vault.enroll` (two models, one template each, as the app stores
  one photo) and `Vault.forget` (with its VACUUM or WAL checkpoint) against the full vault;
- sync_ms p50/p95: after a commit by replica A, what replica B's next request spends bringing its
  decrypted gallery and the app's stacked gallery up to date (`Vault.changes_since` and
  `Gallery.with_subjects` / `without_subjects`); rebuild_ms: the full restack it replaces.
The vault is filled by sealing subjects exactly as enrolment does, in bulk transactions without a
per-subject audit entry (enrolling 100,000 people one by one would take an hour of fsyncs).
A benchmark, not a test: the figures depend on the machine (README: "Running several replicas").
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from facedemo.matching import Gallery, nearest
from models.registry import DEFAULT_MODEL, MODELS
from privacy import erasure, keys, records
from privacy.keys import generate_master_key
from privacy.storage import NewSubject, iso_utc
from privacy.vault import Vault

MODEL_IDS = tuple(MODELS)  # the app stores a template per installed model
BATCH = 5000  # subjects per bulk transaction


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _templates(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for model_id in MODEL_IDS:
        v = rng.standard_normal((1, MODELS[model_id].embedding_dim)).astype(np.float32)
        out[model_id] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def fill(vault: Vault, count: int, seed: int = 0) -> None:
    """Add `count` subjects sealed as `Vault.enroll` seals them, BATCH per transaction (bench only: it reaches
    into the vault's parts, and writes no audit entry per subject)."""
    ctx = vault._ctx
    rng = np.random.default_rng(seed)
    master, token_key = ctx.keys.master, ctx.secrets.token
    done = 0
    while done < count:
        batch = min(BATCH, count - done)
        rows = []
        now = ctx.now()
        for i in range(done, done + batch):
            subject_id = keys.random_id(16)
            sealed = records.seal_subject(subject_id, f"Person {i}", _templates(rng))
            rows.append(NewSubject(
                subject_id=subject_id, record_ct=sealed.record_ct, created=iso_utc(now),
                expires=iso_utc(erasure.expiry(now, ctx.retention_days)), consent_version="bench",
                consent_at=iso_utc(now), token_digest=erasure.token_digest(token_key, subject_id, keys.random_id(32)),
                key_id=master.key_id, wrapped_key=keys.seal_subject_key(master, subject_id, sealed.data_key),
                templates=sealed.templates,
            ))
        with ctx.session() as store, store.write():
            for row in rows:
                store.insert_subject(row)
        done += batch


class TemporaryPostgres:
    """A PostgreSQL server on a Unix socket in a temporary folder, for this benchmark only."""

    def __init__(self) -> None:
        found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
        if found is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql), and no --database-url was given")
        self.bin = Path(os.path.realpath(found)).parent
        self.root = Path(tempfile.mkdtemp(prefix="facedemo-bench-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        self._run("initdb", "-D", str(self.root / "data"), "-U", "bench", "--auth=trust", "--encoding=UTF8",
                  "--no-instructions")
        with open(self.root / "data" / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.root}'\n")
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "start")
        self.url = f"postgresql://bench@/postgres?host={self.root}"

    def _run(self, tool: str, *args: str) -> None:
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.root)}
        subprocess.run([*self.prefix, str(self.bin / tool), *args], check=True, capture_output=True, env=env,
                       cwd=self.root)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database `name` on the server of `admin_url`; its URL; dropped afterwards."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(backend: str, size: int, data_dir: Path, url: str | None, repeat: int) -> dict:
    """Every figure for one backend and vault size."""
    key = generate_master_key()
    seed_vault = Vault.open(data_dir, master_key=key, database_url=url)
    started = time.perf_counter()
    fill(seed_vault, size)
    fill_s = time.perf_counter() - started
    seed_vault.close()

    started = time.perf_counter()
    a = Vault.open(data_dir, master_key=key, database_url=url)
    load_s = time.perf_counter() - started
    b = Vault.open(data_dir, master_key=key, database_url=url)  # the other replica
    spec = MODELS[DEFAULT_MODEL]
    started = time.perf_counter()
    changes = b.changes_since(spec.model_id, None)
    stacked = Gallery.from_subjects(changes.added, spec.model_id)
    stack_s = time.perf_counter() - started
    version = changes.version

    rng = np.random.default_rng(1)
    probe = _templates(rng)[spec.model_id]
    identify = []
    for _ in range(repeat):
        t = time.perf_counter()
        nearest(probe, stacked, spec)
        identify.append((time.perf_counter() - t) * 1000)

    enrol, forget, sync, receipts = [], [], [], []
    for i in range(repeat):
        templates = _templates(rng)
        t = time.perf_counter()
        receipts.append(a.enroll(f"Bench {i}", templates, "bench", True))
        enrol.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        changes = b.changes_since(spec.model_id, version)
        stacked = stacked.updated(changes.removed, changes.added)
        sync.append((time.perf_counter() - t) * 1000)
        version = changes.version
        assert stacked.subject_ids[-1] == receipts[-1].subject_id
    for r in receipts:
        t = time.perf_counter()
        a.forget(r.subject_id, r.deletion_token, lambda m, x: [None] * len(x))
        forget.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        changes = b.changes_since(spec.model_id, version)
        stacked = stacked.updated(changes.removed, changes.added)
        sync.append((time.perf_counter() - t) * 1000)
        version = changes.version
    assert len(stacked) == size
    started = time.perf_counter()
    Gallery.from_subjects(b.subjects(spec.model_id), spec.model_id)
    rebuild_ms = (time.perf_counter() - started) * 1000
    assert a.audit_verify(full=True).ok
    a.close()
    b.close()
    return {
        "backend": backend,
        "subjects": size,
        "fill_s": round(fill_s, 1),
        "load_s": round(load_s, 2),
        "stack_s": round(stack_s, 2),
        "identify_ms_p50": round(statistics.median(identify), 2),
        "enrol_ms_p50": round(statistics.median(enrol), 2),
        "enrol_ms_p95": round(percentile(enrol, 0.95), 2),
        "forget_ms_p50": round(statistics.median(forget), 2),
        "sync_ms_p50": round(statistics.median(sync), 2),
        "sync_ms_p95": round(percentile(sync, 0.95), 2),
        "rebuild_ms": round(rebuild_ms, 1),
    }


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facedemo.tools.bench_vault", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="enrolled subjects, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--database-url", help="a PostgreSQL server to use (default: start a throwaway one)")
    parser.add_argument("--repeat", type=int, default=30, help="enrolments, erasures and probes timed per size")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    server = TemporaryPostgres() if "postgresql" in backends and not args.database_url else None
    admin_url = args.database_url or (server.url if server else None)
    results = []
    try:
        for backend in backends:
            for size in sizes:
                with tempfile.TemporaryDirectory(prefix="facedemo-bench-vault-") as tmp:
                    if backend == "sqlite":
                        row = measure(backend, size, Path(tmp), None, args.repeat)
                    else:
                        with database(admin_url, f"facedemo_bench_{size}") as url:
                            row = measure(backend, size, Path(tmp), url, args.repeat)
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if server is not None:
            server.close()
    report = {"machine": machine(), "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
