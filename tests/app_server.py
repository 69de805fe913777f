"""The live app for the tests that need one: `python app.py` on loopback with its own data and keys."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from facedemo.tools.launch import RunningApp
from facedemo.tools.launch import running_app as _running_app
from privacy.keys import generate_master_key

ADMIN_TOKEN = "T4Q9iOnp_iEskNGy0gtYUvpnh0PWZ8lYBZX-6yCNRmw"  # secrets.token_urlsafe(32), generated once


@contextlib.contextmanager
def running_app(workdir: Path, timeout_s: float = 180.0) -> Iterator[RunningApp]:
    """The app with a fresh master key and the tests' admin token."""
    with _running_app(workdir, generate_master_key(), ADMIN_TOKEN, timeout_s) as app:
        yield app
