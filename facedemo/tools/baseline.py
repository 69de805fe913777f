"""The seed article's CNN trained from scratch on a dataset's enrolment photos, scored like `evaluate`'s identification."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from facedemo.alignment import align
from facedemo.tools.dataset import DatasetError, primary_face_of, read_dataset
from models.registry import TEMPLATE_150
from models.seed_cnn import MODEL_ID, cross_entropy, predict, train

CHIP_SIZE = 64
"""Side of the seed CNN's input chip, in pixels."""

# dlib's 150 x 150 template scaled down, so the chip frames the same part of the face.
TEMPLATE_64 = TEMPLATE_150 * (CHIP_SIZE / 150)

COPIES = 16
"""Training chips made from each enrolment photo: the photo's chip and COPIES - 1 augmented variants."""

MAX_SHIFT = 4
"""Largest augmentation shift, in chip pixels (about 6% of the chip), each axis."""

BRIGHTNESS = (0.75, 1.25)
"""Range of the augmentation's brightness factor (pixel values are multiplied by it)."""

EPOCHS = 10
"""Passes over the augmented training set; with 8 people ~40 Adam steps, a few seconds on 2 cores."""

SEED = 0
"""Seeds the augmentation, the weight initialisation and the batch order."""


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's process-wide intra-op thread count set to 1 while inside, then restored.

    The detector's sums come out in another order with another thread count: its landmarks move
    by ~1e-5 px, some chip pixels round the other way, and the trained network and its top-1 with
    them (faces-pd: train loss 0.0438 with 2 threads, 0.0433 with 1). With one thread the baseline
    gives the same figures on every machine and in every process, whatever the caller set.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chip(pipeline, path: Path) -> np.ndarray | None:
    """The photo's primary face as a 64 x 64 x 3 uint8 chip, or None when unreadable or faceless."""
    found = primary_face_of(pipeline, path)
    if found is None:
        return None
    image, face = found
    return align(image, face.landmarks, TEMPLATE_64, CHIP_SIZE)


def augment(chips: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """N x S x S x 3 uint8 chips -> (N * copies) x S x S x 3: each chip, then copies - 1 variants of it.

    A variant is the chip mirrored left-right with probability 1/2, shifted by up to MAX_SHIFT
    pixels on each axis (edges repeated) and its brightness scaled by a factor in BRIGHTNESS:
    changes a second photo of the same person plausibly shows, so one photo per person is
    not learned pixel for pixel.
    """
    size = chips.shape[1]
    out = []
    for chip in chips:
        out.append(chip)
        padded = np.pad(chip, ((MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)), mode="edge")
        for _ in range(copies - 1):
            dy, dx = rng.integers(0, 2 * MAX_SHIFT + 1, size=2)
            variant = padded[dy : dy + size, dx : dx + size].astype(np.float32)
            if rng.random() < 0.5:
                variant = variant[:, ::-1]
            variant *= rng.uniform(*BRIGHTNESS)
            out.append(np.clip(variant, 0, 255).astype(np.uint8))
    return np.stack(out)


def evaluate_seed_cnn(
    pipeline, root: Path | str, *, epochs: int = EPOCHS, copies: int = COPIES, seed: int = SEED
) -> dict:
    """Train the seed CNN on the first photo (by file name) of each identity in DIR/<identity>/<image>; test on the rest.

    Faces are found as in `evaluate` (pipeline.detect, then detection.primary_face) and
    aligned to 64 x 64 chips. Returns:
    - "model": "seed_cnn";
    - "train_images": enrolment photos with a face (one class each, before augmentation);
    - "probes": every other photo, as in evaluate's identification;
    - "epochs": training passes over the augmented set;
    - "final_train_loss": mean cross-entropy (nats) over the last epoch's augmented batches;
    - "test_loss": mean cross-entropy (nats) over the probes with a face of an enrolled
      identity, None when there is none;
    - "top1": probes whose most probable class is the right identity (a probe without a face,
      or of an identity without an enrolment face, counts as wrong);
    - "top1_accuracy": top1 / probes, None when there are no probes.
    Raises DatasetError when no enrolment photo shows a face. The same dataset, epochs, copies
    and seed give the same report every run, on any number of cores (everything runs on one
    torch thread).
    """
    with _one_torch_thread():
        return _evaluate_seed_cnn(pipeline, root, epochs, copies, seed)


def _evaluate_seed_cnn(pipeline, root: Path | str, epochs: int, copies: int, seed: int) -> dict:
    """evaluate_seed_cnn's work, on whatever torch thread count the caller set."""
    train_chips, classes = [], []
    probes = []  # (identity, chip or None)
    for identity in read_dataset(root):
        first, *rest = identity.photos
        chip = _chip(pipeline, first)
        if chip is not None:
            train_chips.append(chip)
            classes.append(identity.name)
        probes.extend((identity.name, _chip(pipeline, path)) for path in rest)
    if not train_chips:
        raise DatasetError(f"no face found in any enrolment photo under {root}; nothing to train the seed CNN on")

    rng = np.random.default_rng(seed)
    x = augment(np.stack(train_chips), copies, rng)
    y = np.repeat(np.arange(len(classes)), copies)
    training = train(x, y, len(classes), epochs=epochs, seed=seed)

    scorable = [(classes.index(name), chip) for name, chip in probes if chip is not None and name in classes]
    test_loss, top1 = None, 0
    if scorable:
        labels = np.array([label for label, _ in scorable])
        chips = np.stack([chip for _, chip in scorable])
        test_loss = cross_entropy(training.model, chips, labels)
        top1 = int((predict(training.model, chips).argmax(axis=1) == labels).sum())
    return {
        "model": MODEL_ID,
        "train_images": len(train_chips),
        "probes": len(probes),
        "epochs": epochs,
        "final_train_loss": training.epoch_losses[-1],
        "test_loss": test_loss,
        "top1": top1,
        "top1_accuracy": top1 / len(probes) if probes else None,
    }
