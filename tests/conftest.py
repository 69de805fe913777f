"""Shared test set-up: offline settings, package-shipped photos and the public-domain faces set."""
from __future__ import annotations

import os

# Set before anything imports gradio or huggingface_hub: both otherwise try to reach the internet.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import numpy as np
import pytest

# Public domain (NASA, US Navy, CC0; see its PROVENANCE.csv): shipped, so every clone runs every test.
FACES_PD = Path(__file__).resolve().parent / "data" / "faces-pd"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """Eileen Collins, public domain, 512 x 512 x 3 uint8 (shipped with scikit-image)."""
    from facedemo.app import examples

    return examples.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """Grace Hopper, public domain, 600 x 512 x 3 uint8 (shipped with matplotlib)."""
    from facedemo.app import examples

    return examples.grace_hopper()


@pytest.fixture(scope="session")
def faces_pd() -> Path:
    """The public-domain faces set shipped in tests/data/faces-pd."""
    return FACES_PD


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch intra-op thread in the test process (a test may set another and restore it).

    On 2 cores shared with other work, torch's second thread spins waiting for a core that is
    busy: with one other busy process, detection and embedding ran 2.5-3.5 times slower on 2
    threads than on 1, and up to 50 times slower under heavier load; on an idle machine 2 threads
    gain only ~20%. The app (`python app.py` in the end-to-end tests) keeps its own setting.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Pipelines(dict):
    """model id -> the session's Pipeline of that model (default settings), built on first use."""

    def __missing__(self, model_id: str):
        from facedemo.pipeline import Pipeline

        self[model_id] = Pipeline(model_id)
        return self[model_id]


@pytest.fixture(scope="session")
def pipelines() -> Pipelines:
    """One pipeline per model for the whole session: each network loads once, as in the app."""
    return Pipelines()


@pytest.fixture(scope="session")
def pipeline(pipelines):
    """The session's pipeline of the default model."""
    from models.registry import DEFAULT_MODEL

    return pipelines[DEFAULT_MODEL]


@pytest.fixture
def run_cli(pipelines):
    """`python -m facedemo ARGS` run in this process on the session's pipelines: see tests/command_line.py."""
    from tests import command_line

    return lambda *args, env=None: command_line.run(args, pipelines, env)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The real app (`python app.py`) on loopback, one per test module: its vault, throttle and
    upload folder start fresh. A module that needs none of that asks for `shared_app` instead."""
    from tests.app_server import running_app

    with running_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory):
    """One real app for the whole session, for modules that only call the named API and leave the
    vault as they found it (every subject they enrol they also erase)."""
    from tests.app_server import running_app

    with running_app(tmp_path_factory.mktemp("shared_app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    """A gradio_client Client of the module's app."""
    from gradio_client import Client

    client = Client(app.url, verbose=False, download_files=False)
    yield client
    client.close()
