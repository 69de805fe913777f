"""The page's layout promises, checked on the built Blocks (no browser): what is offered and what is off."""
from __future__ import annotations

import gradio as gr
import pytest

from facedemo.app import ui
from facedemo.app.config import Config
from facedemo.app.handlers import Handlers
from facedemo.app.service import FaceDemo
from privacy.keys import generate_master_key


@pytest.fixture(scope="module")
def page(tmp_path_factory, pipeline):
    demo = FaceDemo(Config(data_dir=tmp_path_factory.mktemp("page"), master_key=generate_master_key()), pipeline=pipeline)
    yield ui.build(Handlers(demo))
    demo.close()


def by_id(page: gr.Blocks, elem_id: str):
    return next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_without_an_operator_token_the_operator_fields_and_buttons_are_off(page):
    for elem_id in ("admin-token", "list-button", "admin-subject", "admin-forget-button"):
        assert by_id(page, elem_id).interactive is False, elem_id


def test_the_enrolment_picker_offers_photo_formats_and_not_svg_or_pdf(page):
    offered = by_id(page, "enrol-photos").file_types
    assert {".jpg", ".png", ".webp"} <= set(offered)
    assert ".svg" not in offered and ".pdf" not in offered


def test_the_model_card_is_collapsed_and_the_threshold_stops_at_the_ceiling(page):
    assert by_id(page, "model-card").open is False
    assert by_id(page, "threshold").maximum == 0.63
