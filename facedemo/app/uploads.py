"""The app's upload folder: private to one running instance, emptied as soon as photos are used.

Gradio writes every upload, and every image it sends back, into GRADIO_TEMP_DIR and serves any
file there to whoever names its path. So that folder must be this instance's alone and short-lived:

- `UploadFolder.create` makes a per-user base folder (0700; RAM-backed when there is room) and in
  it one folder per running instance (0700), whose `.lock` the instance keeps `flock`ed while it
  lives. Folders of instances that died without cleaning up (kill -9, power loss) have a lock
  anyone can take: they are removed at start-up.
- `UploadGuard` (ASGI middleware on gradio's `POST /gradio_api/upload`) refuses an upload that is
  too large (413) or that would leave too little free space (507), and moves each stored upload
  from gradio's content-named folder (shared by everyone who sends the same bytes) to a folder of
  its own with a random name: one visitor's upload is never another's file.
- `UploadFolder.claim(paths)` is held by a request while it reads its photos; when the last
  request holding a file ends, the file is deleted.
- `UploadFolder.start_sweeper` deletes what no request claims: uploads never used (after
  `upload_max_age_s`) and the images gradio writes for the browser to fetch (after `output_max_age_s`).

Nothing here imports gradio: the folder must exist before gradio is imported (it reads
GRADIO_TEMP_DIR once, at import).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

INSTANCE_PREFIX = "instance-"
UPLOAD_PREFIX = "up-"
LOCK_NAME = ".lock"
# A RAM-backed base is used only with at least this much free (in the tmpfs and in MemAvailable).
RAM_MIN_FREE = 512 * 1024 * 1024
# An instance folder without its lock is either being created (microseconds) or was left by a
# crash during creation: removed once older than this.
STARTING_GRACE_S = 60.0
# Uploads nobody sent to a handler (a visitor who uploaded and left, or is still filling in the
# enrolment form), and gradio's half-written temporary files, live at most this long.
UPLOAD_MAX_AGE_S = 600.0
# Images gradio writes for the browser to fetch right after a response (they can show names):
# deleted after this, so a URL copied from a page stops working within about 40 s.
OUTPUT_MAX_AGE_S = 30.0
SWEEP_EVERY_S = 10.0
# The upload guard looks at free space again after every this many bytes received.
CHECK_EVERY_BYTES = 1024 * 1024
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}


class UploadFolderError(Exception):
    """No safe upload folder could be set up; the message says which folder and why."""


class UploadGone(Exception):
    """A photo the request names is no longer on the server: uploads are deleted once used."""

    def __init__(self, path: str) -> None:
        super().__init__(
            "This photo is no longer on the server (each upload is deleted once it has been used): "
            "please upload it again."
        )
        self.path = path


# --------------------------------------------------------------------------- small helpers


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where there is no such file."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _unescape_mount(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as \040, \011, \012, \134.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path` ('tmpfs', 'ext4', ...); None where unknown."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    path = Path(os.path.realpath(path))
    best, kind = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = Path(_unescape_mount(fields[1]))
        if (path == mount or mount in path.parents) and len(mount.parts) > best:
            best, kind = len(mount.parts), fields[2]
    return kind


def in_memory(path: Path) -> bool:
    """Whether files under `path` live in RAM (tmpfs, ramfs)."""
    return filesystem_type(path) in RAM_FILESYSTEMS


def _ram_has_room(path: Path, min_free: int) -> bool:
    try:
        free = _free_bytes(path)
    except OSError:
        return False
    available = _mem_available()
    return free >= min_free and (available is None or available >= min_free)


def _private_base(path: Path) -> Path:
    """`path` as a folder only we can use: created 0700, or an existing real directory that we own
    with no access for group or others. Raises UploadFolderError saying what is wrong."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UploadFolderError(f"cannot create {path}: {exc.strerror}") from None
    st = os.lstat(path)  # never follows a link: a link planted by someone else is refused
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UploadFolderError(f"{path} exists and is not a directory (a link or a file): refusing to use it")
    if st.st_uid != os.geteuid():
        raise UploadFolderError(f"{path} belongs to another user (uid {st.st_uid}): refusing to use it")
    if st.st_mode & 0o077:
        raise UploadFolderError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}, must be 700): refusing to use it"
        )
    return path


def _operator_base(path: Path) -> Path:
    """The base folder in an operator's own GRADIO_TEMP_DIR (created 0700 when missing; links are
    their choice and followed): the folder itself when we own it and others cannot write to it
    (others may list it: the instance folders inside are 0700); in a shared sticky folder such as
    /tmp, a private `facedemo-UID` inside it; anything else is refused."""
    path = path.expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UploadFolderError(f"cannot create GRADIO_TEMP_DIR {path}: {exc.strerror}") from None
    path = Path(os.path.realpath(path))
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UploadFolderError(f"GRADIO_TEMP_DIR {path} is not a directory")
    if st.st_mode & stat.S_ISVTX and st.st_mode & 0o002:
        return _private_base(path / f"facedemo-{os.geteuid()}")
    if st.st_uid != os.geteuid():
        raise UploadFolderError(f"GRADIO_TEMP_DIR {path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise UploadFolderError(
            f"GRADIO_TEMP_DIR {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
        )
    return path


def default_bases(env: Mapping[str, str]) -> list[tuple[Path, bool]]:
    """Where a per-user base folder may go, best first, each with whether it is in RAM:
    $XDG_RUNTIME_DIR/facedemo (per-user tmpfs that no one else can create), /dev/shm/facedemo-UID,
    then the system temp folder on disk."""
    uid = os.geteuid()
    bases: list[tuple[Path, bool]] = []
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        bases.append((Path(runtime) / "facedemo", True))
    bases.append((Path("/dev/shm") / f"facedemo-{uid}", True))
    bases.append((Path(tempfile.gettempdir()) / f"facedemo-{uid}", False))
    return bases


def remove_dead_instances(base: Path, now: float | None = None) -> list[Path]:
    """Remove the instance folders in `base` whose owner is gone (its lock can be taken, or it has
    had no lock for STARTING_GRACE_S). Folders of running instances are left alone. Returns those removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(INSTANCE_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                young = now - entry.stat(follow_symlinks=False).st_mtime < STARTING_GRACE_S
            except OSError:
                continue
            if not young:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: its instance is running
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _paths(items: Iterable[Any]) -> Iterator[str]:
    for item in items:
        if item is None:
            continue
        if isinstance(item, (str, os.PathLike)):
            yield os.path.abspath(os.fspath(item))
        elif isinstance(item, (list, tuple, set, frozenset)):
            yield from _paths(item)


# --------------------------------------------------------------------------- the folder


class UploadFolder:
    """One running instance's upload folder (`path`, 0700), held by a `flock` on `path/.lock`.

    Build it with `UploadFolder.create`, point GRADIO_TEMP_DIR at `path` before importing gradio,
    and `close()` it when the app stops (the folder and everything in it is removed).
    """

    def __init__(self, path: Path, lock_fd: int, *, in_ram: bool, removed_stale: list[Path],
                 upload_max_age_s: float = UPLOAD_MAX_AGE_S, output_max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
        self.path = path
        self.in_ram = in_ram
        self.removed_stale = removed_stale  # folders of dead instances removed at start-up
        self.upload_max_age_s = upload_max_age_s
        self.output_max_age_s = output_max_age_s
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._kept: set[str] = set()  # files and folders that were here at keep_present: never deleted
        self._moved: OrderedDict[str, str] = OrderedDict()  # gradio's path -> where adopt_upload moved it
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @classmethod
    def create(cls, operator_dir: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
               ram_min_free: int = RAM_MIN_FREE, **ages: float) -> UploadFolder:
        """A new instance folder: in `operator_dir` (an operator's GRADIO_TEMP_DIR) when given, else
        in the first usable per-user base of `default_bases` (a RAM one only with `ram_min_free`
        bytes free). Folders left there by dead instances are removed first.

        Raises UploadFolderError when no base is safe to use (each refusal is in the message).
        """
        env = os.environ if env is None else env
        if operator_dir:
            base = _operator_base(Path(operator_dir))
            chosen = (base, in_memory(base))
        else:
            refusals = []
            chosen = None
            for candidate, ram in default_bases(env):
                if ram and (not candidate.parent.is_dir() or not _ram_has_room(candidate.parent, ram_min_free)):
                    continue
                try:
                    chosen = (_private_base(candidate), ram)
                    break
                except UploadFolderError as exc:
                    refusals.append(str(exc))
            if chosen is None:
                raise UploadFolderError("no private folder for uploads: " + "; ".join(refusals))
        base, ram = chosen
        removed = remove_dead_instances(base)
        path = Path(tempfile.mkdtemp(prefix=INSTANCE_PREFIX, dir=base))  # 0700
        # The lock appears under its name already held, so that no other instance's clean-up can
        # take it between its creation and our flock.
        fd, staging = tempfile.mkstemp(prefix=LOCK_NAME + "-", dir=path)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, path / LOCK_NAME)
        return cls(path.resolve(), fd, in_ram=ram, removed_stale=removed, **ages)

    # ------------------------------------------------------------------- what a request uses

    def inside(self, path: str | os.PathLike) -> bool:
        """Whether `path` is in this folder (and so is deleted after use)."""
        return self.path in Path(os.path.abspath(os.fspath(path))).parents

    @contextlib.contextmanager
    def claim(self, *items: Any) -> Iterator[None]:
        """Hold the files a request uses; when the last request holding one ends (normally or with
        an error) it is deleted.

        items: paths (str, Path), None, or lists/tuples of them: `claim(photo)`, `claim(photos)`.
        Files outside this folder (a test's own photos, example photos) are never touched; so are
        the files that were here when `keep_present` ran (gradio's copies of the example photos).
        Raises UploadGone when a file of this folder is missing: a request that used the same
        upload has ended and deleted it, or the sweeper removed it as unused.
        """
        paths = [p for p in _paths(items) if self.inside(p)]
        with self._lock:
            for path in paths:
                if path not in self._kept and not os.path.lexists(path):
                    raise UploadGone(path)
            held = [p for p in paths if p not in self._kept]
            self._held.update(held)
        try:
            yield
        finally:
            with self._lock:
                for path in held:
                    self._held[path] -= 1
                    if self._held[path] <= 0:
                        del self._held[path]
                        self._delete(path)

    def _delete(self, path: str) -> None:
        # Under self._lock.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        parent = os.path.dirname(path)
        if os.path.dirname(parent) == str(self.path) and os.path.basename(parent).startswith(UPLOAD_PREFIX):
            with contextlib.suppress(OSError):
                os.rmdir(parent)

    def held(self) -> dict[str, int]:
        """Files in use now -> how many requests hold each."""
        with self._lock:
            return dict(self._held)

    def keep_present(self) -> int:
        """Mark every file and folder now in the folder as the app's own (gradio's cached copies of the
        example photos, written while the page is built): never deleted. Returns how many."""
        with self._lock:
            for root, dirs, files in os.walk(self.path):
                self._kept.update(os.path.join(root, f) for f in files if f != LOCK_NAME)
                self._kept.update(os.path.join(root, d) for d in dirs)
            return len(self._kept)

    # ------------------------------------------------------------------------ new uploads

    def adopt_upload(self, path: str) -> str:
        """Move an upload gradio just stored (in a folder named by its content, shared by all who
        send the same bytes) into a folder of its own with a random name; the new path.

        Runs on the event loop, as gradio's own upload code does, so the move and the removal of the
        emptied content folder cannot interleave with gradio storing the same content again.
        A path outside this folder, or one already gone, is returned unchanged.
        """
        source = os.path.abspath(path)
        if not self.inside(source) or os.path.dirname(os.path.dirname(source)) != str(self.path):
            return path
        with self._lock:
            target_dir = self.path / f"{UPLOAD_PREFIX}{secrets.token_hex(16)}"
            os.mkdir(target_dir, 0o700)
            target = str(target_dir / os.path.basename(source))
            try:
                # The same bytes under the same name as a file the app keeps (an example photo sent
                # back): gradio stored the upload over it; it must stay where the page points.
                (os.link if source in self._kept else os.rename)(source, target)
            except FileNotFoundError:
                # Two identical uploads finished together and the other one's move took the file:
                # same bytes, same name, so share them under a second name.
                earlier = self._moved.get(source)
                try:
                    if earlier is None:
                        raise FileNotFoundError(source)
                    os.link(earlier, target)
                except OSError:
                    os.rmdir(target_dir)
                    return path
            self._moved[source] = target
            self._moved.move_to_end(source)
            while len(self._moved) > 256:
                self._moved.popitem(last=False)
            if os.path.dirname(source) not in self._kept:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(source))
            return target

    def free_bytes(self) -> int:
        """Bytes that uploads may still use here: the filesystem's free space, and for a folder in
        RAM also the machine's available memory, whichever is less."""
        free = _free_bytes(self.path)
        if self.in_ram:
            available = _mem_available()
            if available is not None:
                free = min(free, available)
        return free

    # --------------------------------------------------------------------------- sweeping

    def sweep(self, now: float | None = None, output_max_age_s: float | None = None) -> int:
        """Delete what no request holds and is past its age (by ctime): files in upload folders and
        loose files (gradio's half-written uploads) after `upload_max_age_s`, everything else
        gradio wrote (images sent to the browser) after `output_max_age_s` (this call's value, when
        given, else the folder's); then the emptied folders. Returns how many files were deleted."""
        now = time.time() if now is None else now
        output_age = self.output_max_age_s if output_max_age_s is None else output_max_age_s
        deleted = 0
        for entry in os.scandir(self.path):
            if entry.name == LOCK_NAME or entry.name.startswith(LOCK_NAME + "-"):
                continue
            if entry.is_dir(follow_symlinks=False):
                upload = entry.name.startswith(UPLOAD_PREFIX)
                deleted += self._sweep_tree(Path(entry.path), self.upload_max_age_s if upload else
                                            output_age, now, upload)
            elif self._delete_if_stale(entry.path, self.upload_max_age_s, now):
                deleted += 1
        return deleted

    def _sweep_tree(self, top: Path, max_age: float, now: float, upload: bool) -> int:
        deleted = 0
        for root, dirs, files in os.walk(top, topdown=False):
            for name in files:
                deleted += self._delete_if_stale(os.path.join(root, name), max_age, now)
            for name in dirs:
                self._remove_empty_dir(os.path.join(root, name), max_age, now)
        # An upload folder is only ever written by adopt_upload, under the lock: empty means done.
        self._remove_empty_dir(str(top), 0.0 if upload else max_age, now)
        return deleted

    def _delete_if_stale(self, path: str, max_age: float, now: float) -> bool:
        with self._lock:
            if path in self._held or path in self._kept:
                return False
            try:
                if now - os.lstat(path).st_ctime <= max_age:
                    return False
                os.unlink(path)
            except FileNotFoundError:
                return False
            return True

    def _remove_empty_dir(self, path: str, max_age: float, now: float) -> None:
        # Gradio creates a content folder and writes into it without a lock of ours; a folder whose
        # last change is older than max_age is not being written to.
        with self._lock:
            if path in self._kept:
                return
            try:
                if max_age and now - os.lstat(path).st_mtime <= max_age:
                    return
                os.rmdir(path)
            except OSError:
                pass

    def drop_outputs(self) -> int:
        """Delete every image gradio wrote for browsers now, whatever its age (after an erasure, no
        picture labelled with the erased person's name may still be served). How many were deleted."""
        return self.sweep(output_max_age_s=0.0)

    def start_sweeper(self, every_s: float = SWEEP_EVERY_S) -> None:
        """Run `sweep` every `every_s` seconds in a daemon thread until `close`."""
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.sweep()
                except OSError:
                    pass  # the next round tries again

        self._sweeper = threading.Thread(target=loop, name="facedemo-upload-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper, delete the folder and everything in it, release the lock."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> UploadFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------- the upload guard


def _too_large_message(limit: int) -> str:
    # gradio's own wording for its per-file limit ("maximum allowed size"), which makes its upload
    # route answer 413; the client shows this text.
    return f"Upload too large: the size limit is {limit} bytes per upload (File size exceeded maximum allowed size)."


NO_SPACE_MESSAGE = "The server is short of space for uploads right now; please try again in a few minutes."


def _upload_refusal(message: str) -> Exception:
    # A MultiPartException raised while gradio reads the body makes its parser delete the temporary
    # files it has written so far, and its upload route answer with the message.
    from starlette.formparsers import MultiPartException

    return MultiPartException(message)


class UploadGuard:
    """ASGI middleware for gradio's upload route (`POST .../gradio_api/upload`).

    - refuses with 413 a request whose body exceeds `max_request_bytes` (by Content-Length at
      once, or while it streams), before gradio stores anything;
    - refuses with 507 when the folder would keep less than `min_free_bytes` free (checked when
      the request arrives and every CHECK_EVERY_BYTES while it streams), so that an anonymous
      client cannot fill the RAM that holds the folder;
    - gives each stored upload a path of its own (`UploadFolder.adopt_upload`) in gradio's answer.

    Install it with `launch(app_kwargs={"middleware": [Middleware(UploadGuard, folder=..., ...)]})`.
    """

    def __init__(self, app, folder: UploadFolder, max_request_bytes: int, min_free_bytes: int) -> None:
        self.app = app
        self.folder = folder
        self.max_request_bytes = max_request_bytes
        self.min_free_bytes = min_free_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/gradio_api/upload"):
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                with contextlib.suppress(ValueError):
                    length = int(value)
        if length is not None and length > self.max_request_bytes:
            await _respond(send, 413, _too_large_message(self.max_request_bytes))
            return
        if self.folder.free_bytes() - (length or 0) < self.min_free_bytes:
            await _respond(send, 507, NO_SPACE_MESSAGE)
            return

        received = 0
        next_check = CHECK_EVERY_BYTES
        short_of_space = False

        async def guarded_receive():
            nonlocal received, next_check, short_of_space
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    raise _upload_refusal(_too_large_message(self.max_request_bytes))
                if received >= next_check:
                    next_check = received + CHECK_EVERY_BYTES
                    if self.folder.free_bytes() < self.min_free_bytes:
                        short_of_space = True
                        raise _upload_refusal(NO_SPACE_MESSAGE)
            return message

        start: dict | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = start["status"], b"".join(chunks)
            if status == 200:
                body = self._adopt(scope, body)
            elif short_of_space:
                status = 507
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, guarded_receive, rewriting_send)

    def _adopt(self, scope, body: bytes) -> bytes:
        try:
            stored = json.loads(body)
        except ValueError:
            return body
        if not isinstance(stored, list) or not all(isinstance(p, str) for p in stored):
            return body
        adopted = [self.folder.adopt_upload(p) for p in stored]
        # gradio remembers the paths it stored for its own delete_cache; they no longer exist.
        blocks = getattr(scope.get("app"), "blocks", None)
        upload_set = getattr(blocks, "upload_file_set", None)
        if isinstance(upload_set, set):
            upload_set.difference_update(p for p, q in zip(stored, adopted) if p != q)
        return json.dumps(adopted).encode()


async def _respond(send, status: int, text: str) -> None:
    body = text.encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})
