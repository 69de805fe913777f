"""The seed article's CNN: its shape, training from scratch, and the baseline it gives in `evaluate`."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from facedemo.tools.baseline import evaluate_seed_cnn
from models.seed_cnn import SeedCNN, train
from tests import command_line


def _two_class_set() -> tuple[np.ndarray, np.ndarray]:
    """8 noisy 64 x 64 x 3 uint8 chips: 4 dark (class 0), 4 bright (class 1)."""
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 60, size=(8, 64, 64, 3)).astype(np.uint8)
    chips[4:] += 150
    return chips, np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_output_is_one_logit_per_class_for_each_chip():
    assert SeedCNN(n_classes=5)(torch.rand(3, 3, 64, 64)).shape == (3, 5)


def test_training_reduces_the_loss_on_a_tiny_synthetic_set():
    chips, labels = _two_class_set()
    losses = train(chips, labels, 2, epochs=5, batch_size=4).epoch_losses
    assert losses[-1] < 0.5 * losses[0]


def test_training_is_deterministic_under_the_seed():
    chips, labels = _two_class_set()
    a = train(chips, labels, 2, epochs=2, batch_size=4, seed=3)
    b = train(chips, labels, 2, epochs=2, batch_size=4, seed=3)
    assert a.epoch_losses == b.epoch_losses
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op thread count for the test; the count before is restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.slow
def test_baseline_on_faces_pd_gives_the_same_report_every_run_whatever_torch_thread_count(
    pipeline, faces_pd, torch_threads
):
    # With 2 threads the detector's sums run in another order than with 1: before the baseline
    # pinned one thread, its landmarks, chips and so the trained network differed between the two.
    torch_threads(2)
    first = evaluate_seed_cnn(pipeline, faces_pd)
    assert torch.get_num_threads() == 2  # the caller's setting is given back
    torch_threads(1)
    assert evaluate_seed_cnn(pipeline, faces_pd) == first


@pytest.mark.slow
def test_baseline_on_faces_pd_reports_every_key(pipeline, faces_pd):
    report = evaluate_seed_cnn(pipeline, faces_pd)
    assert set(report) == {"model", "train_images", "probes", "epochs", "final_train_loss", "test_loss",
                           "top1", "top1_accuracy"}
    assert report["model"] == "seed_cnn" and report["train_images"] == 8 and report["probes"] == 7
    assert 0 <= report["top1"] <= report["probes"]
    assert report["top1_accuracy"] == report["top1"] / report["probes"]
    assert report["final_train_loss"] >= 0 and report["test_loss"] >= 0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, pipelines, astronaut, grace_hopper):
    """`evaluate --baseline seed-cnn --json` (in this process) on two people, each a photo and its
    mirror image (the probe): stdout and the JSON report."""
    root = tmp_path_factory.mktemp("pair")
    for name, photo in (("collins", astronaut), ("hopper", grace_hopper)):
        (root / name).mkdir()
        Image.fromarray(photo).save(root / name / "1.png")
        Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(root / name / "2.png")
    out = root / "_report" / "report.json"
    result = command_line.run(["evaluate", root, "--baseline", "seed-cnn", "--json", out], pipelines)
    assert result.code == 0, result.err
    return result.out, json.loads(out.read_text())


@pytest.mark.slow
def test_cli_baseline_flag_prints_the_baseline_line(cli_run):
    stdout, _ = cli_run
    line = next(line for line in stdout.splitlines() if line.startswith("seed_cnn"))
    assert "train loss" in line and "test loss" in line and "top-1" in line and "/2" in line
    assert "top-1 on the same probes:" in stdout


@pytest.mark.slow
def test_cli_baseline_flag_adds_the_baseline_to_the_json_report(cli_run):
    _, report = cli_run
    assert report["baseline"]["model"] == "seed_cnn"
    assert report["baseline"]["probes"] == report["identification"]["probes"] == 2
