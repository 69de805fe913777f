"""`python -m facedemo album` and `anonymize` (in-process, tests/command_line.py): JSON of an album, a folder of
anonymised photos, and one-line errors."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from privacy.keys import generate_master_key
from tests.test_cli import assert_one_error_line

# Public domain (tests/data/faces-pd/PROVENANCE.csv).
PHOTOS = ("eileen_collins/collins_nasa_portrait_a.jpg", "eileen_collins/collins_nasa_portrait_b.jpg",
          "_groups/expedition_1_crew.jpg")


@pytest.fixture(scope="module")
def album_dir(tmp_path_factory, faces_pd):
    folder = tmp_path_factory.mktemp("album")
    for photo in PHOTOS:
        shutil.copy(faces_pd / photo, folder)
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {"FACEDEMO_MASTER_KEY": generate_master_key()}


def test_album_json_lists_faces_people_clusters_and_refusals(run_cli, tmp_path, album_dir, env):
    out = tmp_path / "album.json"
    result = run_cli("album", album_dir, "--json", out, "--data-dir", tmp_path / "data", env=env)
    assert result.code == 0, result.err
    assert result.out == "3 photo(s), 5 face(s), 0 enrolled people, 4 unknown people; 1 file(s) not used\n"
    assert result.err.startswith("file notes.txt not used: not a photo")
    report = json.loads(out.read_text())
    assert {"model", "threshold", "linkage", "photos", "people", "clusters", "refused"} <= set(report)
    assert [len(p["faces"]) for p in report["photos"]] == [1, 1, 3]
    assert report["clusters"][0]["faces"] == [{"file": "collins_nasa_portrait_a.jpg", "face": 1},
                                              {"file": "collins_nasa_portrait_b.jpg", "face": 1}]
    assert "embedding" not in out.read_text()


def test_album_without_json_prints_the_report(run_cli, tmp_path, faces_pd, env):
    result = run_cli("album", faces_pd / PHOTOS[0], "--data-dir", tmp_path, env=env)
    assert result.code == 0, result.err
    assert json.loads(result.out)["photos"][0]["faces"][0]["cluster"] == 1


def test_anonymize_writes_every_photo_and_the_manifest_to_a_new_folder(run_cli, tmp_path, album_dir, env):
    out = tmp_path / "published"
    result = run_cli("anonymize", album_dir, "--out", out, "--keep-cluster", "1", "--data-dir", tmp_path / "data",
                     env=env)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["collins_nasa_portrait_a.jpg", "collins_nasa_portrait_b.jpg",
                                                     "expedition_1_crew.jpg", "manifest.json"]
    manifest = json.loads(result.out)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert (manifest["hidden"], manifest["kept_marked"], manifest["marked_cluster"]) == (3, 2, 1)
    assert "3 photo(s) and manifest.json" in result.err


def test_anonymize_reads_a_zip(run_cli, tmp_path, faces_pd, env):
    path = tmp_path / "album.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(faces_pd / PHOTOS[2], "crew.jpg")
    result = run_cli("anonymize", path, "--out", tmp_path / "out", "--data-dir", tmp_path / "data", env=env)
    assert result.code == 0, result.err
    assert json.loads(result.out)["hidden"] == 3


def test_anonymize_refuses_a_folder_that_is_not_empty(run_cli, tmp_path, album_dir, env):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run_cli("anonymize", album_dir, "--out", tmp_path / "out", "--data-dir", tmp_path / "data", env=env)
    assert_one_error_line(result, "exists and is not an empty folder")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_anonymize_with_an_unknown_person_the_album_lacks_is_one_error_line(run_cli, tmp_path, album_dir, env):
    result = run_cli("anonymize", album_dir, "--out", tmp_path / "out", "--keep-cluster", "9",
                     "--data-dir", tmp_path / "data", env=env)
    assert_one_error_line(result, "there is no unknown person 9 in this album (it has 1 to 4)")
    assert not (tmp_path / "out").exists()


def test_album_of_a_missing_folder_is_one_error_line(run_cli, tmp_path, env):
    assert_one_error_line(run_cli("album", tmp_path / "missing", "--data-dir", tmp_path, env=env),
                          "no photo could be read (missing: file not found)")


def test_a_folder_whose_photos_all_fail_to_decode_is_one_error_line_and_writes_nothing(run_cli, tmp_path, env):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "fake.jpg").write_text("not pixels")
    (folder / "readme.txt").write_text("hello")
    for command in (["album", folder], ["anonymize", folder, "--out", tmp_path / "out"]):
        result = run_cli(*command, "--data-dir", tmp_path / "data", env=env)
        assert_one_error_line(result, "no photo could be read (")
    assert not (tmp_path / "out").exists()


def test_album_json_is_readable_by_its_owner_only(run_cli, tmp_path, album_dir, env):
    out = tmp_path / "album.json"
    assert run_cli("album", album_dir, "--json", out, "--data-dir", tmp_path / "data", env=env).code == 0
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)


def test_album_json_into_a_folder_is_refused_before_any_analysis(run_cli, tmp_path, album_dir, env):
    assert_one_error_line(run_cli("album", album_dir, "--json", tmp_path, "--data-dir", tmp_path / "data", env=env),
                          "is a folder; name the file to write")


def test_album_json_and_the_manifest_say_which_file_each_photo_came_from(run_cli, tmp_path, faces_pd, env):
    folder = tmp_path / "nested"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(faces_pd / PHOTOS[0], folder / "a.jpg")
    shutil.copy(faces_pd / PHOTOS[1], folder / "sub" / "a.jpg")
    out = tmp_path / "album.json"
    assert run_cli("album", folder, "--json", out, "--data-dir", tmp_path / "data", env=env).code == 0
    photos = json.loads(out.read_text())["photos"]
    assert sorted((p["file"], p["given"]) for p in photos) == [("a-2.jpg", "sub/a.jpg"), ("a.jpg", "a.jpg")]
    assert run_cli("anonymize", folder, "--out", tmp_path / "out", "--data-dir", tmp_path / "data", env=env).code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted((p["file"], p["given"]) for p in manifest["photos"]) == [("a-2.jpg", "sub/a.jpg"), ("a.jpg", "a.jpg")]
