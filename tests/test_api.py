"""The plain-function Python API (`import facedemo`): photos as paths, bytes or arrays; distances in the
model's unit (SFace, the default: 1 - cosine similarity)."""
import numpy as np
import pytest

import facedemo
import facedemo.api
from facedemo.images import ImageError
from models.registry import DEFAULT_MODEL, MODELS


@pytest.fixture(autouse=True)
def session_pipelines(pipelines, monkeypatch):
    """The functions run on the session's pipelines (facedemo.api keeps one per model per process too)."""
    monkeypatch.setattr(facedemo.api, "pipeline", lambda model=DEFAULT_MODEL: pipelines[model])


def test_detect_faces_takes_a_path(tmp_path, astronaut):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    assert len(facedemo.detect_faces(path)) == 1


def test_face_distance_is_small_for_the_same_face_and_large_for_another(astronaut, grace_hopper):
    a = facedemo.face_embeddings(astronaut)
    b = facedemo.face_embeddings(grace_hopper)
    assert a.shape == (1, 128)
    d = facedemo.face_distance(np.vstack([a, b]), a[0])
    # 1 - cosine of unit vectors: a face to itself is 0 up to float32 rounding; these two people
    # are 0.84 apart, beyond the highest threshold the model allows.
    assert d[0] == pytest.approx(0.0, abs=1e-5) and d[1] > MODELS[DEFAULT_MODEL].max_threshold


def test_bad_input_raises_image_error():
    with pytest.raises(ImageError):
        facedemo.detect_faces(b"not an image")


def test_allocator_tuning_applies_on_glibc():
    import platform

    from facedemo.app.runtime import tune_allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator settings are glibc's")
    assert tune_allocator() is True


def test_resident_memory_is_read_in_mib():
    from facedemo.app.runtime import resident_mb

    before = resident_mb()
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    assert resident_mb() - before > 48
    del block


def test_the_idle_memory_release_runs_in_a_daemon_thread_on_glibc():
    import platform

    from facedemo.app.runtime import release_memory_when_idle

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    thread = release_memory_when_idle()
    assert thread is not None and thread.daemon and thread.is_alive()
