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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread while a module runs: on 2 shared cores, more threads spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pipeline():
    """One pipeline for the whole session: models load once, as in the app."""
    from facedemo.pipeline import Pipeline

    return Pipeline()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The real app (`python app.py`) on loopback, one per test module."""
    from tests.app_server import running_app

    with running_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    """A gradio_client Client of the module's app."""
    from gradio_client import Client

    client = Client(app.url, verbose=False, download_files=False)
    yield client
    client.close()
