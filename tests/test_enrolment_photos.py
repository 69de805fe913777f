"""Which face of an enrolment photo is used: the dominant one, as on the Detect tab; a face of similar size
makes the photo ambiguous."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facedemo.app.config import Config
from facedemo.app.service import FaceDemo
from privacy.keys import generate_master_key
from tests.engine import compose


@pytest.fixture
def demo(tmp_path, pipeline):
    demo = FaceDemo(Config(data_dir=tmp_path, master_key=generate_master_key()), pipeline=pipeline)
    yield demo
    demo.close()


def with_small_bystander(main: np.ndarray, bystander: np.ndarray, scale: float = 0.25) -> np.ndarray:
    """`main` with a small copy of `bystander` pasted in its lower right corner (a face in the background)."""
    canvas = Image.fromarray(main).copy()
    small = Image.fromarray(bystander).resize((int(bystander.shape[1] * scale), int(bystander.shape[0] * scale)))
    canvas.paste(small, (canvas.width - small.width, canvas.height - small.height))
    return np.asarray(canvas)


def test_a_small_face_in_the_background_is_ignored_and_mentioned(demo, astronaut, grace_hopper):
    photo = with_small_bystander(astronaut, grace_hopper)
    assert len(demo.pipeline.detect(photo)) == 2  # the bystander is a real, detected face
    outcome = demo.enroll("Eileen Collins", [photo], consent=True)
    assert outcome.verdicts[0].accepted
    assert outcome.verdicts[0].reason == "accepted (the largest face; 1 smaller face ignored)"


def test_two_faces_of_similar_size_make_the_photo_ambiguous(demo, astronaut):
    twins = compose(astronaut, astronaut[:, ::-1])  # two faces of the same size
    verdicts = demo.enroll("Eileen Collins", [twins, astronaut], consent=True).verdicts
    assert not verdicts[0].accepted
    assert verdicts[0].reason.startswith("2 faces of similar size found; use a photo of you alone, or pick your face")
    assert verdicts[1].accepted
