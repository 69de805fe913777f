"""The command line: documented sub-commands, JSON keys, and one-line errors with a non-zero exit.

In-process (tests/command_line.py: cli.main on the session's pipelines), and two runs of the real
`python -m facedemo` in a fresh interpreter (slow) for the entry point and its exit code."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privacy.keys import generate_master_key
from tests.engine import compose

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, astronaut, grace_hopper):
    root = tmp_path_factory.mktemp("gallery")
    for name, photo in (("collins", astronaut), ("hopper", grace_hopper)):
        (root / name).mkdir()
        Image.fromarray(photo).save(root / name / "1.jpg", quality=90)
    (root / "_groups").mkdir()  # not an identity
    return root


def test_detect_json_prints_faces_with_box_score_and_landmarks(run_cli, astronaut_file):
    result = run_cli("detect", astronaut_file, "--json")
    assert result.code == 0 and result.err == "", result.err
    faces = json.loads(result.out)["faces"]
    assert len(faces) == 1
    assert len(faces[0]["box"]) == 4 and len(faces[0]["landmarks"]) == 5 and faces[0]["score"] > 0.99


def test_identify_with_a_gallery_folder_names_the_person(run_cli, astronaut_file, gallery_dir):
    result = run_cli("identify", astronaut_file, "--gallery", gallery_dir, "--json")
    assert result.code == 0, result.err
    face = json.loads(result.out)["faces"][0]
    assert face["identity"] == "collins" and face["subject_id"] == "collins" and face["distance"] < 0.6


def test_detect_prints_a_readable_summary_without_json(run_cli, astronaut_file):
    result = run_cli("detect", astronaut_file)
    assert result.code == 0 and result.out.splitlines()[-1] == "1 face(s)"
    assert result.out.startswith("face 1: box (")


def assert_one_error_line(result, words: str) -> None:
    assert result.code == 1 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.err


def test_not_an_image_fails_with_one_line_on_stderr(run_cli, tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("hello")
    assert_one_error_line(run_cli("detect", bogus), "not an image format we can read")


def test_missing_file_fails_with_one_line_on_stderr(run_cli, tmp_path):
    assert_one_error_line(run_cli("detect", tmp_path / "missing.png"), "not found")


def test_evaluate_writes_the_documented_keys(run_cli, tmp_path, gallery_dir):
    out = tmp_path / "out.json"
    result = run_cli("evaluate", gallery_dir, "--json", out, "--plot", tmp_path / "roc.png")
    assert result.code == 0, result.err
    report = json.loads(out.read_text())
    assert {"identities", "images", "faces_found", "verification", "identification"} <= set(report)
    assert set(report["verification"]) >= {"genuine_pairs", "impostor_pairs", "threshold", "accuracy",
                                            "tar_at_far", "auc"}
    assert set(report["verification"]["tar_at_far"]) == {"0.01", "0.001"}
    assert set(report["identification"]) >= {"probes", "top1", "top1_open_set"}
    assert report["identities"] == 2 and report["faces_found"] == 2
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_evaluate_on_photos_without_a_face_is_one_error_line(run_cli, tmp_path):
    for name in ("blank", "noise"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.full((200, 200, 3), 255, np.uint8)).save(tmp_path / "blank" / "1.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
        tmp_path / "noise" / "1.png")
    assert_one_error_line(run_cli("evaluate", tmp_path), f"no face found in any photo under {tmp_path}")


def test_enroll_identify_forget_round_trip_through_the_vault(run_cli, tmp_path, astronaut_file):
    env = {"FACEDEMO_MASTER_KEY": generate_master_key()}
    data = ["--data-dir", tmp_path]
    refused = run_cli(*data, "enroll", "Eileen Collins", astronaut_file, env=env)
    assert_one_error_line(refused, "consent")
    # --data-dir after the sub-command too, as in the README's examples
    enrolled = run_cli("enroll", "Eileen Collins", astronaut_file, "--consent", *data, env=env)
    assert enrolled.code == 0, enrolled.err
    receipt = json.loads(enrolled.out)
    found = json.loads(run_cli(*data, "identify", astronaut_file, "--json", env=env).out)
    assert found["faces"][0]["identity"] == "Eileen Collins"
    # The token from the environment: an argument would show in every local user's process list.
    forgotten = run_cli(*data, "forget", receipt["subject_id"], env={**env, "FACEDEMO_TOKEN": receipt["deletion_token"]})
    assert forgotten.code == 0, forgotten.err
    assert json.loads(forgotten.out)["live_key_deleted"] is True
    after = json.loads(run_cli(*data, "identify", astronaut_file, "--json", env=env).out)
    assert after["faces"][0]["identity"] is None
    audit = run_cli(*data, "audit", "--verify", env=env)
    assert audit.code == 0 and "verifies" in audit.out


def test_wrong_master_key_is_a_one_line_error(run_cli, tmp_path, astronaut_file):
    data = ["--data-dir", tmp_path]
    enrolled = run_cli(*data, "enroll", "Eileen Collins", astronaut_file, "--consent",
                       env={"FACEDEMO_MASTER_KEY": generate_master_key()})
    assert enrolled.code == 0, enrolled.err
    result = run_cli(*data, "identify", astronaut_file, env={"FACEDEMO_MASTER_KEY": generate_master_key()})
    assert_one_error_line(result, "key")


# ------------------------------------------------------------------ the real `python -m facedemo`


def python_m_facedemo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedemo", *map(str, args)], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_python_m_facedemo_detect_prints_the_faces_and_exits_0(astronaut_file):
    result = python_m_facedemo("detect", astronaut_file, "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["faces"]) == 1


@pytest.mark.slow
def test_python_m_facedemo_refuses_a_file_that_is_not_an_image_with_one_line_and_exit_1(tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("hello")
    result = python_m_facedemo("detect", bogus)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not an image format we can read"), result.stderr


def test_the_in_process_cli_shares_a_pipeline_only_for_default_settings(pipelines):
    from dataclasses import replace

    from facedemo.app.config import Config
    from tests.command_line import shared_pipelines

    with shared_pipelines(pipelines):
        assert Config(data_dir=Path("elsewhere"), master_key="k").pipeline() is pipelines[Config.model]
        assert Config(model="dlib_resnet_v1").pipeline() is pipelines["dlib_resnet_v1"]
        own = replace(Config(), threshold=0.3).pipeline()
        assert own is not pipelines[Config.model] and own.threshold == 0.3


def test_enroll_with_face_stores_only_that_face_of_a_group_photo(run_cli, tmp_path, astronaut, grace_hopper):
    group = tmp_path / "group.png"
    Image.fromarray(compose(astronaut, grace_hopper)).save(group)
    env = {"FACEDEMO_MASTER_KEY": generate_master_key()}
    data = ["--data-dir", tmp_path / "vault"]
    enrolled = run_cli(*data, "enroll", "Grace Hopper", group, "--face", "2", "--consent", env=env)
    assert enrolled.code == 0, enrolled.err
    receipt = json.loads(enrolled.out)
    assert receipt["photos"][0]["reason"] == "accepted (face 2 of 2; the other faces were not used)"
    assert set(receipt["templates_stored"].values()) == {1}
    found = json.loads(run_cli(*data, "identify", group, "--json", env=env).out)
    assert [f["identity"] for f in found["faces"]] == [None, "Grace Hopper"]


def test_enroll_with_face_and_two_photos_is_one_error_line(run_cli, tmp_path, astronaut_file):
    result = run_cli("--data-dir", tmp_path, "enroll", "Eileen", astronaut_file, astronaut_file, "--face", "1",
                     "--consent", env={"FACEDEMO_MASTER_KEY": generate_master_key()})
    assert_one_error_line(result, "exactly one photo")
