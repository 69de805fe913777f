"""The album stage (facedemo.album) on real photos and real models: per-photo results, enrolled people,
unknown faces grouped into people, limits, and what an Album keeps (no embeddings)."""
from __future__ import annotations

import json

import pytest

from facedemo.album import AlbumLimits, analyse_album
from facedemo.detection import primary_face
from facedemo.images import load
from facedemo.matching import Gallery, Subject, ThresholdError

# Public domain (tests/data/faces-pd/PROVENANCE.csv): two photos each of Eileen Collins and Catherine
# Coleman, Grace Hopper (enrolled below), a crew of three, and a face turned too far to be grouped.
ALBUM = [
    "eileen_collins/collins_nasa_portrait_a.jpg",
    "catherine_coleman/catherine_coleman_onboard.jpg",
    "grace_hopper/hopper_us_navy_portrait.jpg",
    "eileen_collins/collins_nasa_portrait_b.jpg",
    "_groups/expedition_1_crew.jpg",
    "catherine_coleman/catherine_coleman_portrait.jpg",
    "_other/camera_cc0.jpg",
]


def enrolled(pipeline, faces_pd, people: dict[str, str]) -> Gallery:
    """A gallery of name -> one photo's primary face, subject ids "s-<name>"."""
    subjects = []
    for name, file in people.items():
        image = load(faces_pd / file)
        face = primary_face(pipeline.detect(image))
        subjects.append(Subject(f"s-{name}", name, pipeline.embed(image, [face])))
    return Gallery.from_subjects(subjects, pipeline.model_id)


@pytest.fixture(scope="module")
def photos(faces_pd) -> list[tuple[str, bytes]]:
    return [(path.split("/")[-1], (faces_pd / path).read_bytes()) for path in ALBUM]


@pytest.fixture(scope="module")
def calls() -> list[tuple[int, int, int]]:
    return []


@pytest.fixture(scope="module")
def album(pipeline, faces_pd, photos, calls):
    gallery = enrolled(pipeline, faces_pd, {"Grace Hopper": "grace_hopper/hopper_us_navy_portrait.jpg"})
    damaged = ("notes.jpg", b"this is not a photo")
    return analyse_album(pipeline, photos[:3] + [damaged] + photos[3:], gallery,
                         progress=lambda *args: calls.append(args))


def photo(album, name):
    return next(p for p in album.photos if p.name == name)


def test_every_photo_is_analysed_with_its_faces(album):
    assert [p.name for p in album.photos] == [path.split("/")[-1] for path in ALBUM]
    assert [len(p.analysis.faces) for p in album.photos] == [1, 1, 1, 1, 3, 1, 1]
    assert album.faces == 9


def test_a_photo_that_cannot_be_decoded_is_refused_and_the_rest_analysed(album):
    assert [(r.name, r.reason) for r in album.refused] == [("notes.jpg", "not an image format we can read "
                                                            "(use JPEG, PNG, WebP, GIF, BMP, TIFF or PGM/PPM)")]
    assert photo(album, "collins_nasa_portrait_b.jpg").source == 4  # its place in the list given


def test_the_enrolled_person_is_named_and_counted_in_their_photos(album):
    people = album.people()
    assert [(p.name, p.subject_id, p.photos()) for p in people] == [("Grace Hopper", "s-Grace Hopper", (2,))]
    assert photo(album, "hopper_us_navy_portrait.jpg").clusters == (None,)


def test_unknown_faces_of_one_person_form_one_cluster(album):
    collins = {photo(album, n).clusters[0] for n in ("collins_nasa_portrait_a.jpg", "collins_nasa_portrait_b.jpg")}
    coleman = {photo(album, n).clusters[0] for n in ("catherine_coleman_onboard.jpg", "catherine_coleman_portrait.jpg")}
    assert len(collins) == 1 and len(coleman) == 1 and collins != coleman and None not in collins | coleman
    (number,) = collins
    assert album.cluster(number).photos() == (0, 3) and album.cluster(number).spread < album.threshold


def test_unknown_faces_of_different_people_are_in_different_clusters(album):
    crew = photo(album, "expedition_1_crew.jpg").clusters
    others = {c for p in album.photos if p.name != "expedition_1_crew.jpg" for c in p.clusters}
    assert len(set(crew)) == 3 and not set(crew) & others
    assert len(album.clusters) == 5 and [len(c.faces) for c in album.clusters] == [2, 2, 1, 1, 1]


def test_a_face_too_poor_to_trust_is_in_no_cluster(album):
    turned = photo(album, "camera_cc0.jpg")
    assert not turned.analysis.faces[0].quality.usable and turned.clusters == (None,)


def test_progress_is_reported_after_every_file_with_the_faces_so_far(album, calls):
    assert calls == [(1, 8, 1), (2, 8, 2), (3, 8, 3), (4, 8, 3), (5, 8, 4), (6, 8, 7), (7, 8, 8), (8, 8, 9)]


def test_the_album_as_json_holds_no_embedding_and_no_subject_id_unless_asked(album):
    data = album.to_dict()
    text = json.dumps(data)
    assert "embedding" not in text and "subject_id" not in text and "candidates" not in text
    assert data["photos"][2]["faces"][0]["identity"] == "Grace Hopper"
    assert data["people"] == [{"name": "Grace Hopper", "photos": ["hopper_us_navy_portrait.jpg"], "faces": 1}]
    assert data["clusters"][0]["faces"] == [{"file": "collins_nasa_portrait_a.jpg", "face": 1},
                                            {"file": "collins_nasa_portrait_b.jpg", "face": 1}]
    assert album.to_dict(include_subject_id=True)["people"][0]["subject_id"] == "s-Grace Hopper"


def test_photos_past_the_photo_limit_are_refused(pipeline, photos):
    album = analyse_album(pipeline, [photos[0]] * 3, limits=AlbumLimits(max_photos=2))
    assert [p.name for p in album.photos] == ["collins_nasa_portrait_a.jpg", "collins_nasa_portrait_a-2.jpg"]
    assert [r.reason for r in album.refused] == ["not analysed: the album's limit is 2 photos"]


def test_photos_past_the_pixel_limit_are_refused(pipeline, photos):
    album = analyse_album(pipeline, photos[:3], limits=AlbumLimits(max_pixels=800_000))  # 512 x 512, then 1024 x 699
    assert [p.name for p in album.photos] == ["collins_nasa_portrait_a.jpg"] and album.pixels == 512 * 512
    assert [r.reason for r in album.refused] == ["not analysed: the album's limit of 0.8 megapixels in all was reached"] * 2


def test_photos_not_reached_within_the_time_limit_are_refused(pipeline, photos):
    ticks = iter(range(0, 1000, 10))  # each look at the clock: ten more seconds
    album = analyse_album(pipeline, photos[:3], limits=AlbumLimits(max_seconds=15), clock=lambda: next(ticks))
    assert len(album.photos) == 1
    assert [r.reason for r in album.refused] == ["not analysed: the album's time limit of 15 s was reached"] * 2


def test_faces_beyond_the_per_photo_limit_are_kept_to_be_hidden(pipeline, photos, monkeypatch):
    monkeypatch.setattr(pipeline, "max_faces", 1)
    (crew,) = analyse_album(pipeline, [photos[4]]).photos
    assert len(crew.analysis.faces) == 1 and crew.analysis.faces_skipped == 2 and len(crew.unanalysed) == 2
    boxes = [f.box for f in crew.unanalysed] + [crew.analysis.faces[0].face.box]
    assert len(set(boxes)) == 3


def test_a_threshold_above_the_models_ceiling_is_refused_before_any_photo_is_read(pipeline):
    with pytest.raises(ThresholdError):
        analyse_album(pipeline, [("x.jpg", b"")], threshold=5.0)


def test_the_photos_pixels_are_shown_to_on_photo_while_in_memory(pipeline, photos):
    seen = []
    analyse_album(pipeline, photos[:2], on_photo=lambda i, image, p: seen.append((i, image.shape, p.name)))
    assert seen == [(0, (512, 512, 3), "collins_nasa_portrait_a.jpg"), (1, (699, 1024, 3), "catherine_coleman_onboard.jpg")]


@pytest.mark.slow
def test_the_benchmarks_album_row_counts_faces_per_second(pipeline):
    from facedemo.tools.bench import album_figures

    row = album_figures(pipeline, photos=3)
    assert row["photos"] == 3 and row["faces"] >= 3 and row["faces_per_s"] > 0 and row["anonymise_s"] > 0
