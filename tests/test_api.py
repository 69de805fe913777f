"""The plain-function Python API."""
import numpy as np

import facedemo
from facedemo.images import ImageError


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
    assert d[0] < 0.01 and d[1] > 0.6  # float32 expansion of |a - b|^2 leaves ~1e-3


def test_bad_input_raises_image_error():
    import pytest

    with pytest.raises(ImageError):
        facedemo.detect_faces(b"not an image")


def test_allocator_tuning_applies_on_glibc():
    import platform

    from facedemo.app.runtime import tune_allocator

    if platform.libc_ver()[0] != "glibc":
        import pytest

        pytest.skip("the allocator settings are glibc's")
    assert tune_allocator() is True
