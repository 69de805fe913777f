"""The whole flow: photo -> faces -> chips -> embeddings -> decisions, with the real models."""
from dataclasses import replace

import numpy as np
import pytest

from facedemo.app.config import Config, ConfigError
from facedemo.embedding import model_spec
from facedemo.matching import Gallery, Subject, ThresholdError, distances
from facedemo.pipeline import MAX_FACES, Pipeline
from models.registry import MODELS
from tests.engine import augment, compose


@pytest.fixture(scope="module", params=sorted(MODELS))
def pipeline(request, pipelines):
    """Every behaviour below holds for each embedding model (the session's pipeline of each)."""
    return pipelines[request.param]


def embedding(pipeline, photo):
    faces = pipeline.detect(photo)
    assert len(faces) == 1
    return pipeline.embed(photo, faces)[0]


def dist(pipeline, a, b):
    return distances(a[None], b[None], model_spec(pipeline.model_id).metric)[0, 0]


@pytest.fixture(scope="module")
def gallery(pipeline, astronaut, grace_hopper):
    return Gallery.from_subjects([
        Subject("s-collins", "Eileen Collins", embedding(pipeline, astronaut)[None]),
        Subject("s-hopper", "Grace Hopper", embedding(pipeline, grace_hopper)[None]),
    ], pipeline.model_id)


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_same_person_across_an_augmented_copy_is_under_threshold(pipeline, photo, request):
    image = request.getfixturevalue(photo)
    assert dist(pipeline, embedding(pipeline, image), embedding(pipeline, augment(image))) < pipeline.threshold


def test_different_people_are_over_threshold(pipeline, astronaut, grace_hopper):
    assert dist(pipeline, embedding(pipeline, astronaut), embedding(pipeline, grace_hopper)) > pipeline.threshold


def test_embeddings_have_the_models_shape(pipeline, astronaut):
    e = pipeline.embed(astronaut, pipeline.detect(astronaut))
    assert e.shape == (1, 128) and e.dtype == np.float32 and np.isfinite(e).all()


def test_group_photo_finds_and_identifies_every_face(pipeline, gallery, astronaut, grace_hopper):
    group = compose(augment(grace_hopper), augment(astronaut))
    analysis = pipeline.analyse(group, gallery)
    assert [fa.decision.identity for fa in analysis.faces] == ["Grace Hopper", "Eileen Collins"]
    assert all(fa.decision.margin > 0 for fa in analysis.faces)


def test_two_copies_of_one_person_get_one_identity_and_one_unknown(pipeline, gallery, astronaut):
    analysis = pipeline.analyse(compose(astronaut, augment(astronaut)), gallery)
    identities = [fa.decision.identity for fa in analysis.faces]
    assert sorted(identities, key=str) == ["Eileen Collins", None]  # str(None) == "None" sorts after "E"


def test_without_a_gallery_every_face_is_unknown(pipeline, astronaut):
    analysis = pipeline.analyse(astronaut)
    assert len(analysis.faces) == 1 and analysis.faces[0].decision.identity is None


def test_changing_the_threshold_redecides_without_the_models(pipeline, gallery, astronaut):
    analysis = pipeline.analyse(augment(astronaut), gallery)
    assert analysis.faces[0].decision.identity == "Eileen Collins"
    strict = analysis.with_threshold(0.0)
    assert strict.faces[0].decision.identity is None and strict.threshold == 0.0
    assert strict.with_threshold(analysis.threshold).faces[0].decision == analysis.faces[0].decision


def test_faces_over_the_limit_are_counted_as_skipped(pipeline, astronaut, grace_hopper, monkeypatch):
    monkeypatch.setattr(pipeline, "max_faces", 1)  # as Pipeline(max_faces=1), without loading the models again
    analysis = pipeline.analyse(compose(astronaut, grace_hopper))
    assert len(analysis.faces) == 1 and analysis.faces_skipped == 1


def test_the_face_limit_is_a_setting_of_the_pipeline():
    assert Pipeline(max_faces=1).max_faces == 1 and Pipeline().max_faces == MAX_FACES


def test_analysis_serialises_the_cli_keys(pipeline, gallery, astronaut):
    face = pipeline.analyse(astronaut, gallery).to_dict(include_subject_id=True)["faces"][0]
    assert {"box", "score", "landmarks", "identity", "subject_id", "distance", "margin"} <= set(face)
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5


def test_analysis_leaves_the_subject_id_out_unless_asked(pipeline, gallery, astronaut):
    assert "subject_id" not in pipeline.analyse(astronaut, gallery).to_dict()["faces"][0]


@pytest.mark.parametrize("threshold", [-0.1, 5.0, float("nan"), float("inf"), "0.5", [0.5], True])
def test_analyse_refuses_a_threshold_that_is_not_a_number_up_to_the_ceiling(pipeline, astronaut, threshold):
    with pytest.raises(ThresholdError, match="threshold must be"):
        pipeline.analyse(astronaut, None, threshold)


def test_a_configured_threshold_above_the_ceiling_is_refused_at_start(astronaut):
    spec = MODELS[Config.model]
    with pytest.raises(ConfigError, match="FACEDEMO_THRESHOLD"):
        replace(Config(), threshold=spec.max_threshold + 0.01).pipeline()
