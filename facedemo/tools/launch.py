"""Run `python app.py` as a child process on 127.0.0.1 and a free port: for the tests and the load test."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# How app.py names its upload folder in its log.
UPLOADS_LINE = "facedemo: uploads in "
# Debian's chromium, as the browser tests and the page benchmark drive it (Playwright).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no DNS lookups: everything is local
]


@dataclass(frozen=True)
class RunningApp:
    url: str  # http://127.0.0.1:PORT/
    startup_s: float  # from starting `python app.py` until the page answered 200
    log: Path  # the app's stdout and stderr
    data_dir: Path
    pid: int = 0  # the `python app.py` process
    temp_dir: Path | None = None  # its GRADIO_TEMP_DIR: the app makes its own instance folder inside

    def upload_folder(self) -> Path | None:
        """The instance folder the app keeps its uploads in, as its log names it ("uploads in PATH")."""
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith(UPLOADS_LINE):
                return Path(line[len(UPLOADS_LINE):].rsplit(" (", 1)[0])
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before app.py runs: Linux sends it SIGTERM when the parent dies, however it
    dies, so a killed test run leaves no server (1 GB of models) behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running_app(
    workdir: Path, master_key: str, admin_token: str, timeout_s: float = 300.0,
    temp_dir: Path | None = None, env_extra: dict[str, str] | None = None,
) -> Iterator[RunningApp]:
    """`python app.py` with its own data directory and Gradio cache under `workdir`, offline.

    temp_dir: its GRADIO_TEMP_DIR (default `workdir/gradio`); the app keeps its uploads in an
    instance folder of its own inside, so two apps may share one. env_extra: more settings.
    """
    port = _free_port()
    temp_dir = workdir / "gradio" if temp_dir is None else temp_dir
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(temp_dir),
        "FACEDEMO_DATA_DIR": str(workdir / "data"),
        "FACEDEMO_MASTER_KEY": master_key,
        "FACEDEMO_ADMIN_TOKEN": admin_token,
        **(env_extra or {}),
    }
    url = f"http://127.0.0.1:{port}/"
    log = workdir / "app.log"
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            while not _answers(url):
                if process.poll() is not None:
                    raise RuntimeError(f"app.py exited with code {process.returncode}:\n{log.read_text()}")
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"app.py did not answer within {timeout_s:.0f} s:\n{log.read_text()}")
                time.sleep(0.2)
            yield RunningApp(url, time.perf_counter() - started, log, workdir / "data", process.pid, temp_dir)
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
