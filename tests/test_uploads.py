"""facedemo.app.uploads: the instance's private upload folder, claims that delete used photos, the
sweeper, crash clean-up with real locks held by other processes, and the upload guard in front of
gradio's own upload route."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from facedemo.app import uploads
from facedemo.app.uploads import (
    LOCK_NAME,
    UploadFolder,
    UploadFolderError,
    UploadGone,
    UploadGuard,
    remove_dead_instances,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    with UploadFolder.create(tmp_path / "base") as f:
        yield f


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def gradio_upload(folder: UploadFolder, name: str, data: bytes, content_dir: str = "ab" * 32) -> Path:
    """A file where gradio's upload route stores it: a folder named by the content's hash."""
    directory = folder.path / content_dir
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def uploaded(folder: UploadFolder, name: str = "photo.jpg", data: bytes = b"pixels") -> Path:
    """A file as a handler receives it: stored by gradio, then moved to its own folder by the guard."""
    return Path(folder.adopt_upload(str(gradio_upload(folder, name, data))))


# ----------------------------------------------------------------------------- the folder


def test_the_instance_folder_is_0700_and_holds_a_lock_that_others_cannot_take(folder):
    assert mode(folder.path) == 0o700 and mode(folder.path.parent) == 0o700
    assert (folder.path / LOCK_NAME).is_file() and mode(folder.path / LOCK_NAME) == 0o600
    # Another clean-up (another instance starting) sees the lock held and leaves the folder alone.
    assert remove_dead_instances(folder.path.parent) == [] and folder.path.is_dir()


def test_close_removes_the_folder_and_everything_in_it(tmp_path):
    f = UploadFolder.create(tmp_path / "base")
    photo = uploaded(f)
    f.close()
    assert not photo.exists() and not f.path.exists()


def test_two_instances_get_two_folders_in_one_base(tmp_path):
    with UploadFolder.create(tmp_path / "base") as a, UploadFolder.create(tmp_path / "base") as b:
        assert a.path != b.path and a.path.parent == b.path.parent
        assert a.removed_stale == [] and b.removed_stale == []


@pytest.mark.parametrize("problem", ["link", "file", "open to others", "another owner"])
def test_a_default_base_that_is_not_ours_alone_is_refused(tmp_path, problem):
    base = tmp_path / "facedemo-0"
    if problem == "link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        base.symlink_to(tmp_path / "elsewhere")
    elif problem == "file":
        base.write_text("")
    else:
        base.mkdir(mode=0o700)
        if problem == "open to others":
            base.chmod(0o755)
        else:
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(base, 65534, 65534)
    with pytest.raises(UploadFolderError, match=re.escape(str(base))):
        uploads._private_base(base)


def test_a_hostile_default_base_is_skipped_for_the_next_one(tmp_path, monkeypatch):
    hostile, good = tmp_path / "planted", tmp_path / "good"
    hostile.mkdir(mode=0o777)
    hostile.chmod(0o777)
    monkeypatch.setattr(uploads, "default_bases", lambda env: [(hostile, False), (good, False)])
    with UploadFolder.create(None, env={}) as f:
        assert f.path.parent == good and mode(good) == 0o700
    monkeypatch.setattr(uploads, "default_bases", lambda env: [(hostile, False)])
    with pytest.raises(UploadFolderError, match="planted.*open to other users"):
        UploadFolder.create(None, env={})


def test_a_ram_base_is_used_only_with_room_to_spare(tmp_path, monkeypatch):
    ram, disk = tmp_path / "shm" / "facedemo-0", tmp_path / "disk" / "facedemo-0"
    ram.parent.mkdir()
    disk.parent.mkdir()
    monkeypatch.setattr(uploads, "default_bases", lambda env: [(ram, True), (disk, False)])
    with UploadFolder.create(None, env={}, ram_min_free=1) as f:
        assert f.path.parent == ram and f.in_ram
    with UploadFolder.create(None, env={}, ram_min_free=1 << 62) as f:
        assert f.path.parent == disk and not f.in_ram


def test_the_default_bases_are_per_user(monkeypatch):
    uid = os.geteuid()
    bases = [path for path, _ in uploads.default_bases({"XDG_RUNTIME_DIR": f"/run/user/{uid}"})]
    assert bases[0] == Path(f"/run/user/{uid}/facedemo") and bases[1] == Path(f"/dev/shm/facedemo-{uid}")
    assert all(str(uid) in str(b) for b in bases)


def test_an_operators_gradio_temp_dir_gets_an_instance_folder_inside(tmp_path):
    operator = tmp_path / "operator"
    operator.mkdir(mode=0o755)
    operator.chmod(0o755)  # others may list it: the instance folder inside is 0700
    with UploadFolder.create(operator) as f:
        assert f.path.parent == operator and mode(f.path) == 0o700
    operator.chmod(0o777)
    with pytest.raises(UploadFolderError, match="writable by other users"):
        UploadFolder.create(operator)


def test_an_operators_shared_sticky_temp_dir_gets_a_private_base_inside(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp or /dev/shm
    with UploadFolder.create(shared) as f:
        assert f.path.parent == shared / f"facedemo-{os.geteuid()}" and mode(f.path.parent) == 0o700


# ----------------------------------------------------------------------- crash clean-up


def start_instance(base: Path) -> tuple[subprocess.Popen, Path]:
    """Another process holding an instance folder in `base` (its flock) until killed."""
    code = ("import sys, time\nfrom facedemo.app.uploads import UploadFolder\n"
            "f = UploadFolder.create(sys.argv[1])\n(f.path / 'x').mkdir()\n(f.path / 'x' / 'photo.jpg').write_bytes(b'face')\n"
            "print(f.path, flush=True)\ntime.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(base)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, Path(process.stdout.readline().strip())


def test_folders_of_dead_instances_are_removed_at_start_and_live_ones_kept(tmp_path):
    base = tmp_path / "base"
    dead, dead_path = start_instance(base)
    alive, alive_path = start_instance(base)
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        assert (dead_path / "x" / "photo.jpg").exists()  # a crash leaves the photos behind
        with UploadFolder.create(base) as f:
            assert f.removed_stale == [dead_path]
            assert not dead_path.exists()
            assert (alive_path / "x" / "photo.jpg").exists()
    finally:
        alive.kill()
        alive.wait()
        dead.stdout.close()
        alive.stdout.close()


def test_a_folder_without_its_lock_is_removed_only_after_the_start_up_grace(tmp_path):
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    starting = base / "instance-starting"
    starting.mkdir()
    assert remove_dead_instances(base) == [] and starting.exists()
    later = time.time() + uploads.STARTING_GRACE_S + 1
    assert remove_dead_instances(base, now=later) == [starting] and not starting.exists()


def test_clean_up_touches_only_instance_folders(tmp_path):
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    (base / "operators-own").mkdir()
    (base / "notes.txt").write_text("keep")
    assert remove_dead_instances(base, now=time.time() + 3600) == []
    assert (base / "operators-own").is_dir() and (base / "notes.txt").exists()


# ---------------------------------------------------------------------------- claims


def test_a_claimed_upload_is_deleted_with_its_folder_when_the_request_ends(folder):
    photo = uploaded(folder)
    with folder.claim(str(photo)):
        assert photo.read_bytes() == b"pixels"
    assert not photo.exists() and not photo.parent.exists()


def test_a_claimed_upload_is_deleted_when_the_request_fails(folder):
    photo = uploaded(folder)
    with pytest.raises(RuntimeError):
        with folder.claim(photo):
            raise RuntimeError("the handler failed")
    assert not photo.exists()


def test_a_file_held_by_two_requests_goes_when_the_second_ends(folder):
    photo = uploaded(folder)
    first, second = folder.claim(photo), folder.claim([photo, None])
    first.__enter__()
    second.__enter__()
    assert folder.held() == {str(photo): 2}
    first.__exit__(None, None, None)
    assert photo.exists()
    second.__exit__(None, None, None)
    assert not photo.exists() and folder.held() == {}


def test_a_list_of_photos_is_claimed_and_deleted_together(folder):
    photos = [uploaded(folder, f"{n}.jpg", bytes([n])) for n in range(3)]
    with folder.claim([str(p) for p in photos]):
        assert all(p.exists() for p in photos)
    assert not any(p.exists() for p in photos)


def test_files_outside_the_folder_are_never_touched(folder, tmp_path):
    own = tmp_path / "my-photo.jpg"
    own.write_bytes(b"mine")
    with folder.claim(own, str(own), [own]):
        pass
    assert own.read_bytes() == b"mine" and folder.held() == {}


def test_files_present_at_keep_present_are_never_deleted(folder):
    example = gradio_upload(folder, "astronaut.jpg", b"example", "cd" * 32)
    assert folder.keep_present() >= 1
    with folder.claim(example):
        pass
    assert folder.sweep(now=time.time() + 10 * uploads.UPLOAD_MAX_AGE_S) == 0
    assert example.exists()


def test_an_upload_already_deleted_is_reported_as_gone(folder):
    photo = uploaded(folder)
    with folder.claim(photo):
        pass
    with pytest.raises(UploadGone, match="upload it again") as caught:
        with folder.claim(photo):
            pass
    assert caught.value.path == str(photo) and folder.held() == {}


def test_a_file_stays_while_any_request_holds_it_however_many_come_and_go(folder):
    photos = [uploaded(folder, f"{n}.jpg", bytes([n])) for n in range(20)]
    barrier = threading.Barrier(4)

    def request():
        barrier.wait()
        for _ in range(50):
            with folder.claim(photos):
                pass

    threads = [threading.Thread(target=request) for _ in range(4)]
    with folder.claim(photos):  # a long request holds them throughout
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(p.exists() for p in photos)
    assert not any(p.exists() for p in photos) and folder.held() == {}


# ----------------------------------------------------------------------- new uploads


def test_an_upload_moves_from_the_shared_content_folder_to_a_random_one_of_its_own(folder):
    stored = gradio_upload(folder, "photo.jpg", b"pixels")
    adopted = Path(folder.adopt_upload(str(stored)))
    assert adopted.name == "photo.jpg" and adopted.read_bytes() == b"pixels"
    assert adopted.parent.parent == folder.path and adopted.parent.name.startswith(uploads.UPLOAD_PREFIX)
    assert len(adopted.parent.name) == len(uploads.UPLOAD_PREFIX) + 32  # 128 random bits
    assert not stored.exists() and not stored.parent.exists()


def test_two_identical_uploads_get_two_files(folder):
    first = Path(folder.adopt_upload(str(gradio_upload(folder, "photo.jpg", b"same"))))
    second = Path(folder.adopt_upload(str(gradio_upload(folder, "photo.jpg", b"same"))))
    assert first != second and first.read_bytes() == second.read_bytes() == b"same"
    with folder.claim(first):
        pass
    assert not first.exists() and second.read_bytes() == b"same"


def test_identical_uploads_stored_together_still_get_their_own_files(folder):
    # Both requests stored the same bytes at the same path before either answer was rewritten.
    stored = gradio_upload(folder, "photo.jpg", b"same")
    first = folder.adopt_upload(str(stored))
    second = folder.adopt_upload(str(stored))
    assert first != second and Path(second).read_bytes() == b"same"


def test_an_upload_of_an_example_photos_bytes_leaves_the_example_in_place(folder):
    example = gradio_upload(folder, "astronaut.jpg", b"example", "cd" * 32)
    folder.keep_present()
    adopted = Path(folder.adopt_upload(str(example)))
    with folder.claim(adopted):
        pass
    assert example.read_bytes() == b"example" and not adopted.exists()


def test_paths_outside_the_folder_are_not_adopted(folder, tmp_path):
    own = tmp_path / "x" / "photo.jpg"
    own.parent.mkdir()
    own.write_bytes(b"mine")
    assert folder.adopt_upload(str(own)) == str(own) and own.exists()


# --------------------------------------------------------------------------- sweeping


def test_the_sweeper_deletes_unused_uploads_and_rendered_images_by_age(folder):
    photo = uploaded(folder, "unused.jpg")
    held = uploaded(folder, "in-use.jpg", b"other")
    rendered = gradio_upload(folder, "image.webp", b"boxes", "ef" * 32)
    half_written = folder.path / "tmpabc123"
    half_written.write_bytes(b"partial")
    now = time.time()
    with folder.claim(held):
        assert folder.sweep(now) == 0
        # Rendered images go after output_max_age_s; uploads not yet used get longer.
        assert folder.sweep(now + uploads.OUTPUT_MAX_AGE_S + 1) == 1
        assert not rendered.exists() and photo.exists() and half_written.exists()
        assert folder.sweep(now + uploads.UPLOAD_MAX_AGE_S + 1) == 2
        assert not photo.exists() and not photo.parent.exists() and not half_written.exists()
        assert held.exists()  # a request is reading it
    assert (folder.path / LOCK_NAME).exists()
    # The emptied content folder goes once it has been left alone as long.
    folder.sweep(time.time() + uploads.OUTPUT_MAX_AGE_S + 1)
    assert sorted(p.name for p in folder.path.iterdir()) == [LOCK_NAME]


def test_the_sweeper_thread_runs_until_close(tmp_path):
    f = UploadFolder.create(tmp_path / "base", output_max_age_s=0.0)
    rendered = gradio_upload(f, "image.webp", b"boxes")
    f.start_sweeper(every_s=0.05)
    deadline = time.time() + 10
    while rendered.exists() and time.time() < deadline:
        time.sleep(0.05)
    f.close()
    assert not rendered.exists() and not f._sweeper.is_alive()


# -------------------------------------------------------------------------- the guard


@pytest.fixture
def gradio_app(folder, monkeypatch):
    """gradio's real app (its upload route and multipart parser) storing into `folder`, behind an
    UploadGuard with a 10 kB request limit; the guard is returned too, to change its margins."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder.path))
    import gradio as gr
    from gradio.routes import App
    from starlette.middleware import Middleware

    with gr.Blocks() as page:
        gr.File()
    page.max_file_size = None  # launch() sets it
    app = App.create_app(page, app_kwargs={"middleware": [
        Middleware(UploadGuard, folder=folder, max_request_bytes=10_000, min_free_bytes=1024)]})
    return app, page


def post(app, chunks: list[bytes], content_length: bool = True) -> tuple[int, bytes]:
    """POST /gradio_api/upload to the ASGI app, the body in these chunks; status and body."""
    body = b"".join(chunks)
    headers = [(b"content-type", b"multipart/form-data; boundary=zz")]
    if content_length:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/gradio_api/upload", "raw_path": b"/gradio_api/upload",
             "root_path": "", "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    pending = list(chunks)
    sent: list[dict] = []

    async def receive():
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def multipart(name: str, data_chunks: list[bytes]) -> list[bytes]:
    head = f'--zz\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n\r\n'.encode()
    return [head, *data_chunks, b"\r\n--zz--\r\n"]


def test_the_guard_gives_each_upload_of_the_real_route_a_random_path(gradio_app, folder):
    app, page = gradio_app
    status, body = post(app, multipart("photo.jpg", [b"pixels"]))
    assert status == 200
    (path,) = json.loads(body)
    assert Path(path).parent.name.startswith(uploads.UPLOAD_PREFIX) and Path(path).read_bytes() == b"pixels"
    assert mode(Path(path)) == 0o600
    assert page.upload_file_set == set()  # gradio's record of the moved path, which no longer exists
    assert sorted(p.name for p in folder.path.iterdir() if p.name != "vibe_edit_history") == [
        LOCK_NAME, Path(path).parent.name]


def test_the_guard_refuses_a_request_over_the_limit_before_reading_it(gradio_app, folder):
    app, _ = gradio_app
    before = set(folder.path.rglob("*"))
    status, body = post(app, multipart("big.bin", [b"x" * 20_000]))
    assert status == 413 and b"size limit is 10000 bytes" in body
    assert set(folder.path.rglob("*")) == before


def test_the_guard_stops_a_streamed_upload_at_the_limit_and_gradio_deletes_the_part_written(gradio_app, folder):
    app, _ = gradio_app
    before = set(folder.path.rglob("*"))
    status, body = post(app, multipart("big.bin", [b"x" * 4000] * 5), content_length=False)
    assert status == 413 and b"maximum allowed size" in body
    assert set(folder.path.rglob("*")) == before


def test_the_guard_refuses_with_507_when_free_space_is_short(gradio_app, folder, monkeypatch):
    app, _ = gradio_app
    monkeypatch.setattr(folder, "free_bytes", lambda: 1000)
    status, body = post(app, multipart("photo.jpg", [b"pixels"]))
    assert status == 507 and b"short of space" in body


def test_the_guard_refuses_with_507_when_space_runs_short_during_an_upload(gradio_app, folder, monkeypatch):
    app, _ = gradio_app
    monkeypatch.setattr(uploads, "CHECK_EVERY_BYTES", 1000)
    free = iter([1 << 40] + [0] * 100)  # room when the request arrives, none a moment later
    monkeypatch.setattr(folder, "free_bytes", lambda: next(free))
    before = set(folder.path.rglob("*"))
    status, body = post(app, multipart("photo.jpg", [b"x" * 800] * 5))
    assert status == 507 and b"short of space" in body
    assert set(folder.path.rglob("*")) == before  # gradio deleted what it had written


def test_the_free_space_of_a_ram_folder_is_capped_by_available_memory(folder, monkeypatch):
    monkeypatch.setattr(uploads, "_free_bytes", lambda path: 1 << 40)
    monkeypatch.setattr(uploads, "_mem_available", lambda: 1 << 20)
    folder.in_ram = False
    assert folder.free_bytes() == 1 << 40
    folder.in_ram = True
    assert folder.free_bytes() == 1 << 20


def test_the_filesystem_of_a_folder_is_read_from_the_mount_table():
    if not Path("/proc/self/mounts").exists():
        pytest.skip("no /proc here")
    assert uploads.filesystem_type(Path("/proc/self")) == "proc"
    assert uploads._unescape_mount("/mnt/my\\040disk") == "/mnt/my disk"
