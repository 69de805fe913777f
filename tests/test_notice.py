"""What the page tells people: plain words first, technical names after, the model card once."""
from __future__ import annotations

import pytest

from facedemo.app import notice
from facedemo.app.config import Config
from facedemo.app.service import FaceDemo
from privacy.keys import generate_master_key


@pytest.fixture(scope="module")
def demo(tmp_path_factory, pipeline):
    demo = FaceDemo(Config(data_dir=tmp_path_factory.mktemp("notice"), master_key=generate_master_key()), pipeline=pipeline)
    yield demo
    demo.close()


def test_how_it_works_explains_in_plain_words_before_naming_the_techniques(demo):
    text = notice.how_it_works(demo)
    plain, technical = text.split("### The technical names")
    for jargon in ("MTCNN", "Umeyama", "AES-256-GCM", "HMAC"):
        assert jargon not in plain and jargon in technical


def test_the_model_card_is_shown_without_its_own_title(demo):
    card = notice.model_card()
    assert not card.startswith("# ") and "SFace" in card


def test_the_example_figure_is_drawn_by_the_running_models(demo):
    figure = notice.example_figure(demo)
    assert figure is not None and figure.shape[1] == 960 and figure.shape[2] == 3
