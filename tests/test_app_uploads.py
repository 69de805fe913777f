"""Uploads of the running app (`python app.py`) as an anonymous client and a local user meet them:
a private folder of the instance's own, a random path per upload, photos gone when their request
ends, every file 0600, oversized uploads refused before they are stored, and what a killed
instance left behind removed when the app starts again.

One app for the module, in an operator's GRADIO_TEMP_DIR that other users may list (so that the
folder's own mode is what keeps them out); the last test kills it with SIGKILL.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from gradio_client import handle_file
from PIL import Image

from facedemo.tools.launch import running_app
from privacy.keys import generate_master_key
from tests.app_server import ADMIN_TOKEN

pytestmark = pytest.mark.e2e

# Below the 19 MB upload sent by the size test (the default limit, 20 MiB, is above it).
MAX_IMAGE_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def temp_dir():
    """An operator's GRADIO_TEMP_DIR that every user can list: only the instance folder's mode protects it."""
    parent = Path(tempfile.mkdtemp(prefix="facedemo-uploads-test-"))
    parent.chmod(0o755)
    base = parent / "gradio"
    base.mkdir()
    base.chmod(0o755)
    yield base
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory, temp_dir):
    with running_app(tmp_path_factory.mktemp("app"), generate_master_key(), ADMIN_TOKEN, 180.0, temp_dir=temp_dir,
                     env_extra={"FACEDEMO_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES)}) as running:
        yield running


@pytest.fixture(scope="module")
def folder(app) -> Path:
    path = app.upload_folder()
    assert path is not None, app.log.read_text()
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory, grace_hopper) -> Path:
    path = tmp_path_factory.mktemp("photos") / "grace.jpg"
    Image.fromarray(grace_hopper).save(path, quality=90)
    return path


def upload(base_url: str, name: str, data: bytes) -> tuple[int, str]:
    """POST /gradio_api/upload as the browser does: status and body."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base_url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def uploaded(base_url: str, name: str, data: bytes) -> str:
    status, body = upload(base_url, name, data)
    assert status == 200, body
    return json.loads(body)[0]


def file_data(path: str) -> dict:
    return {"path": path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def call(base_url: str, event: str, data: list) -> dict:
    """Run an event (API name or, for the page's private events, function name) through the queue
    as the browser does; the final message."""
    config = json.loads(urllib.request.urlopen(base_url + "config", timeout=30).read())
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == event)
    session = uuid.uuid4().hex[:10]
    join = urllib.request.Request(
        base_url + "gradio_api/queue/join", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"data": data, "fn_index": fn_index, "session_hash": session}).encode(),
    )
    urllib.request.urlopen(join, timeout=30).read()
    with urllib.request.urlopen(base_url + f"gradio_api/queue/data?session_hash={session}", timeout=120) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event stream ended without a result")


def served(base_url: str, path: str) -> int:
    try:
        with urllib.request.urlopen(base_url + "gradio_api/file=" + urllib.parse.quote(path), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def upload_dirs(folder: Path) -> set[Path]:
    return {p for p in folder.iterdir() if p.name.startswith("up-")}


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------------------------- tests


def test_the_app_keeps_uploads_in_a_private_folder_of_its_own(folder, temp_dir):
    assert folder.parent == temp_dir.resolve()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and (folder / ".lock").is_file()


def test_each_upload_gets_a_random_path_of_its_own(app, folder, photo):
    first = Path(uploaded(app.url, "grace.jpg", photo.read_bytes()))
    second = Path(uploaded(app.url, "grace.jpg", photo.read_bytes()))
    assert first != second
    for path in (first, second):
        assert path.parent.parent == folder and path.parent.name.startswith("up-")
        assert path.read_bytes() == photo.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_photo_is_deleted_when_the_detect_request_that_used_it_ends(app, folder, client, photo):
    before = upload_dirs(folder)
    result = client.predict(handle_file(str(photo)), api_name="/detect")
    assert len(result["faces"]) == 1
    assert upload_dirs(folder) == before


def test_the_photos_of_a_refused_enrolment_are_deleted_when_it_ends(app, folder, photo):
    path = uploaded(app.url, "grace.jpg", photo.read_bytes())
    message = call(app.url, "enroll", ["Grace Hopper", [file_data(path)], False])  # no consent
    assert "consent" in json.dumps(message).lower()
    assert not Path(path).exists() and not Path(path).parent.exists()
    assert served(app.url, path) != 200


def test_everything_the_app_writes_is_for_its_own_user_only(app, folder, photo):
    path = uploaded(app.url, "grace.jpg", photo.read_bytes())
    message = call(app.url, "analyse", [file_data(path), None, False, "mtcnn"])  # the page's own event: draws two images
    assert message["success"], message
    images = [Path(item["path"]) for item in message["output"]["data"][:2]]
    assert all(p.is_relative_to(folder) and p.exists() for p in images)
    modes = {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folder.rglob("*")}
    wrong = {name: m for name, m in modes.items()
             if m != (oct(0o700) if (folder / name).is_dir() else oct(0o600))}
    assert not wrong, f"files the app wrote open to others: {wrong}"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="switching to another user needs root and setpriv (util-linux)")
def test_another_local_user_cannot_list_or_read_the_upload_folder(app, folder, temp_dir, photo):
    path = uploaded(app.url, "grace.jpg", photo.read_bytes())
    # The folders above are open to everyone: what stops the other user is the instance folder itself.
    listed = as_nobody("ls", str(temp_dir))
    assert listed.returncode == 0 and folder.name in listed.stdout
    refused = as_nobody("ls", str(folder))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    read = as_nobody("cat", path)
    assert read.returncode != 0 and read.stdout == ""
    example = next(folder.rglob("grace_hopper.jpg"))  # gradio's copy of an example photo
    assert as_nobody("cat", str(example)).returncode != 0


def test_example_photos_stay_after_a_request_uses_them(app, folder):
    example = next(folder.rglob("astronaut.jpg"))
    message = call(app.url, "analyse", [file_data(str(example)), None, False, "mtcnn"])
    assert message["success"], message
    assert example.exists() and served(app.url, str(example)) == 200


def test_an_upload_over_the_byte_limit_is_refused_with_413_and_nothing_is_stored(app, folder):
    before = set(folder.rglob("*"))
    status, body = upload(app.url, "archive.zip", os.urandom(19_000_000))
    assert status == 413 and "maximum allowed size" in body
    assert set(folder.rglob("*")) <= before  # not even the part gradio had written


def test_after_kill_9_the_restarted_app_removes_the_dead_instances_files(app, folder, photo, tmp_path, temp_dir):
    """Last: it kills the module's app."""
    path = uploaded(app.url, "grace.jpg", photo.read_bytes())
    assert served(app.url, path) == 200
    os.kill(app.pid, signal.SIGKILL)
    os.waitpid(app.pid, 0)
    assert Path(path).exists()  # a killed process cleans nothing up
    with running_app(tmp_path, generate_master_key(), ADMIN_TOKEN, 180.0, temp_dir=temp_dir) as again:
        assert again.upload_folder() != folder
        assert not folder.exists() and not Path(path).exists()
        assert served(again.url, path) != 200
        assert "removed 1 upload folder(s) left by instances that stopped without cleaning up" in again.log.read_text()
