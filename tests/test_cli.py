"""The command line: documented sub-commands, JSON keys, and one-line errors with a non-zero exit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "facedemo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


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


def test_detect_json_prints_faces_with_box_score_and_landmarks(astronaut_file):
    result = run("detect", str(astronaut_file), "--json")
    assert result.returncode == 0, result.stderr
    faces = json.loads(result.stdout)["faces"]
    assert len(faces) == 1
    assert len(faces[0]["box"]) == 4 and len(faces[0]["landmarks"]) == 5 and faces[0]["score"] > 0.99


def test_identify_with_a_gallery_folder_names_the_person(astronaut_file, gallery_dir):
    result = run("identify", str(astronaut_file), "--gallery", str(gallery_dir), "--json")
    assert result.returncode == 0, result.stderr
    face = json.loads(result.stdout)["faces"][0]
    assert face["identity"] == "collins" and face["subject_id"] == "collins" and face["distance"] < 0.6


def test_detect_prints_a_readable_summary_without_json(astronaut_file):
    result = run("detect", str(astronaut_file))
    assert result.returncode == 0 and "1 face(s)" in result.stdout


def test_not_an_image_fails_with_one_line_on_stderr(tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("hello")
    result = run("detect", str(bogus))
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_missing_file_fails_with_one_line_on_stderr(tmp_path):
    result = run("detect", str(tmp_path / "missing.png"))
    assert result.returncode != 0 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_writes_the_documented_keys(tmp_path, gallery_dir):
    out = tmp_path / "out.json"
    result = run("evaluate", str(gallery_dir), "--json", str(out), "--plot", str(tmp_path / "roc.png"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {"identities", "images", "faces_found", "verification", "identification"} <= set(report)
    assert set(report["verification"]) >= {"genuine_pairs", "impostor_pairs", "threshold", "accuracy",
                                            "tar_at_far", "auc"}
    assert set(report["verification"]["tar_at_far"]) == {"0.01", "0.001"}
    assert set(report["identification"]) >= {"probes", "top1", "top1_open_set"}
    assert report["identities"] == 2 and report["faces_found"] == 2
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_enroll_identify_forget_round_trip_through_the_vault(tmp_path, astronaut_file):
    from privacy.keys import generate_master_key

    env = {"FACEDEMO_MASTER_KEY": generate_master_key()}
    data = ["--data-dir", str(tmp_path)]
    refused = run(*data, "enroll", "Eileen Collins", str(astronaut_file), env_extra=env)
    assert refused.returncode != 0 and "consent" in refused.stderr
    # --data-dir after the sub-command too, as in the README's examples
    enrolled = run("enroll", "Eileen Collins", str(astronaut_file), "--consent", *data, env_extra=env)
    assert enrolled.returncode == 0, enrolled.stderr
    receipt = json.loads(enrolled.stdout)
    found = json.loads(run(*data, "identify", str(astronaut_file), "--json", env_extra=env).stdout)
    assert found["faces"][0]["identity"] == "Eileen Collins"
    # The token from the environment: an argument would show in every local user's process list.
    forgotten = run(*data, "forget", receipt["subject_id"],
                    env_extra={**env, "FACEDEMO_TOKEN": receipt["deletion_token"]})
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(forgotten.stdout)["live_key_deleted"] is True
    after = json.loads(run(*data, "identify", str(astronaut_file), "--json", env_extra=env).stdout)
    assert after["faces"][0]["identity"] is None
    audit = run(*data, "audit", "--verify", env_extra=env)
    assert audit.returncode == 0 and "verifies" in audit.stdout


def test_wrong_master_key_is_a_one_line_error(tmp_path, astronaut_file):
    from privacy.keys import generate_master_key

    data = ["--data-dir", str(tmp_path)]
    run(*data, "enroll", "Eileen Collins", str(astronaut_file), "--consent",
        env_extra={"FACEDEMO_MASTER_KEY": generate_master_key()})
    result = run(*data, "identify", str(astronaut_file), env_extra={"FACEDEMO_MASTER_KEY": generate_master_key()})
    assert result.returncode != 0 and "key" in result.stderr and "Traceback" not in result.stderr
