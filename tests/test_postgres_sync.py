"""The app's stacked gallery kept in step with the vault change by change, as replicas need it: `Gallery.with_subjects`
and `without_subjects` give exactly what stacking every subject again gives, and `FaceDemo.gallery` applies another
replica's enrolments and erasures without restacking (on both backends; PostgreSQL skips when it is not installed)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from facedemo.app.config import Config
from facedemo.app.service import FaceDemo
from facedemo.matching import Gallery
from privacy.gallery import StoredSubject
from privacy.keys import generate_master_key
from tests.privacy_helpers import BACKENDS, no_probe, random_templates, vault_place

MODEL = "test_model"
KEY = generate_master_key()


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """Where this test's vault lives: once on SQLite, once on PostgreSQL (see tests.privacy_helpers.vault_place)."""
    yield from vault_place(request.param, tmp_path)


def subject(number: int, rows: int, dim: int = 8) -> StoredSubject:
    templates = np.random.default_rng(number).standard_normal((rows, dim)).astype(np.float32)
    return StoredSubject(f"s{number}", f"Person {number}", templates)


def assert_same(gallery: Gallery, subjects: list[StoredSubject], probes: np.ndarray) -> None:
    expected = Gallery.from_subjects(subjects, MODEL)
    assert gallery.subject_ids == expected.subject_ids and gallery.names == expected.names
    if subjects:
        np.testing.assert_array_equal(gallery.templates, expected.templates)
        np.testing.assert_array_equal(gallery.owner, expected.owner)
    for metric in ("euclidean", "cosine"):
        for templates in ("nearest", "mean"):
            np.testing.assert_allclose(gallery.subject_distances(probes, metric, templates),
                                       expected.subject_distances(probes, metric, templates), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", ["one", "several"])
def test_adding_and_removing_subjects_gives_what_stacking_them_all_again_gives(rows):
    probes = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    for trial in range(60):
        rng = np.random.default_rng(trial)
        size = (lambda: 1) if rows == "one" else (lambda: int(rng.integers(1, 4)))
        live = [subject(1000 * trial + i, size()) for i in range(int(rng.integers(0, 20)))]
        gallery = Gallery.from_subjects(live, MODEL)
        for step in range(8):
            if live and rng.random() < 0.5:
                gone = set(rng.choice([s.subject_id for s in live], size=int(rng.integers(1, min(3, len(live)) + 1)),
                                      replace=False))
                gallery = gallery.without_subjects(gone | {"not enrolled"})
                live = [s for s in live if s.subject_id not in gone]
            else:
                added = [subject(10**6 + 1000 * trial + 10 * step + j, size()) for j in range(int(rng.integers(1, 3)))]
                gallery = gallery.with_subjects(added)
                live += added
            assert_same(gallery, live, probes)


def test_a_gallery_stays_unchanged_when_others_are_made_from_it():
    probes = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    base = [subject(i, 1 + i % 2) for i in range(5)]
    first = Gallery.from_subjects(base, MODEL).with_subjects([subject(10, 2)])
    before = first.subject_distances(probes, "euclidean").copy()
    one, two = first.with_subjects([subject(11, 1)]), first.with_subjects([subject(12, 3)])  # both from `first`
    fewer = first.without_subjects({"s0"})
    np.testing.assert_array_equal(first.subject_distances(probes, "euclidean"), before)
    assert_same(one, [*base, subject(10, 2), subject(11, 1)], probes)
    assert_same(two, [*base, subject(10, 2), subject(12, 3)], probes)
    assert_same(fewer, [*base[1:], subject(10, 2)], probes)


@dataclass
class ModelOnly:
    """Stands in for the pipeline: `FaceDemo.gallery` needs only the active model's id."""

    model_id: str = MODEL


def test_app_gallery_follows_another_replicas_enrolments_and_erasures_without_restacking(place, monkeypatch):
    config = Config(data_dir=place.data_dir, master_key=KEY, database_url=place.database_url)
    app = FaceDemo(config, pipeline=ModelOnly())
    other = place.open(master_key=KEY)  # the other replica, or a CLI process
    early = [other.enroll(f"Early {i}", {MODEL: random_templates(i, k=1 + i % 2)}, "v1", True) for i in range(4)]
    assert len(app.gallery()) == 4  # stacked once
    stacked = []
    monkeypatch.setattr(Gallery, "from_subjects", classmethod(lambda cls, *a: stacked.append(a) or pytest.fail()))
    late = other.enroll("Late", {MODEL: random_templates(9, k=2)}, "v1", True)
    other.forget(early[1].subject_id, early[1].deletion_token, no_probe)
    gallery = app.gallery()
    assert late.subject_id in gallery.subject_ids and early[1].subject_id not in gallery.subject_ids
    assert gallery is app.gallery()  # nothing changed since: the same object
    mine = app.vault.enroll("Mine", {MODEL: random_templates(11)}, "v1", True)
    assert app.gallery().subject_ids[-1] == mine.subject_id
    assert stacked == []
    monkeypatch.undo()
    expected = Gallery.from_subjects(other.subjects(MODEL), MODEL)
    assert set(app.gallery().subject_ids) == set(expected.subject_ids) and len(app.gallery()) == 5
    other.close()
    app.close()

