"""The seed article's small CNN classifier, trained from scratch: the baseline the pretrained embedding CNNs beat.

Input 64x64 RGB chips; two conv/max-pool stages, a 128-unit dense layer and one output per
identity; Adam on categorical cross-entropy. It learns identities only from the photos it is
given, so it shows what a network without pretraining achieves with one photo per person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 64
"""Side of the square input chip, in pixels."""

MODEL_ID = "seed_cnn"
"""Name of this baseline in reports."""


class SeedCNN(nn.Module):
    """conv 32 3x3 ReLU -> max-pool 2 -> conv 64 3x3 ReLU -> max-pool 2 -> dense 128 ReLU -> dense n_classes.

    Convolutions are unpadded ("valid", the article's Keras default): 64 -> 62 -> 31 -> 29 -> 14,
    so the flattened feature map has 64 x 14 x 14 = 12,544 values.
    forward: N x 3 x 64 x 64 float32 in 0..1 -> N x n_classes logits (softmax is applied by the
    cross-entropy loss in training and by `predict`).
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, got {n_classes}")
        self.n_classes = n_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 14 * 14, 128),
            nn.ReLU(),
            nn.Linear(128, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def to_tensor(chips: np.ndarray) -> torch.Tensor:
    """N x 64 x 64 x 3 uint8 RGB chips -> N x 3 x 64 x 64 float32 tensor scaled to 0..1."""
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"expected N x {INPUT_SIZE} x {INPUT_SIZE} x 3 chips, got {chips.shape}")
    return torch.from_numpy(np.ascontiguousarray(chips.transpose(0, 3, 1, 2))).float().div_(255.0)


@dataclass(frozen=True)
class Training:
    """A trained network and its training curve.

    epoch_losses: mean categorical cross-entropy (nats per image) over each epoch's batches,
    first epoch first.
    """

    model: SeedCNN
    epoch_losses: tuple[float, ...]


def train(
    chips: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> Training:
    """Train a fresh SeedCNN from random weights on CPU; the same seed and data give the same weights.

    chips: N x 64 x 64 x 3 uint8 RGB; labels: N class indices in 0..n_classes-1.
    Adam on categorical cross-entropy, mini-batches reshuffled every epoch.
    Runs on one CPU thread: torch's intra-op thread count is set to 1 for the call (it is
    process-wide) and restored afterwards. The sums then run in one order on every machine,
    and a network this small trains faster alone than split across busy shared cores.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    x = to_tensor(chips)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(y) != len(x) or len(x) == 0:
        raise ValueError(f"need as many labels as chips (at least one), got {len(y)} labels for {len(x)} chips")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x, y, n_classes, epochs, batch_size, learning_rate, seed)
    finally:
        torch.set_num_threads(threads)


def _train(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int, batch_size: int, learning_rate: float, seed: int
) -> Training:
    """The training loop of `train` on x: N x 3 x 64 x 64 float32 in 0..1 and y: N int64 class indices."""
    # Seed a private copy of the global RNG (layer initialisation draws from it), so training is
    # reproducible without changing the random state of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SeedCNN(n_classes)
        shuffle = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        epoch_losses = []
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=shuffle)
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch = order[start : start + batch_size]
                optimiser.zero_grad()
                loss = loss_fn(model(x[batch]), y[batch])
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
            epoch_losses.append(total / len(x))
    model.eval()
    return Training(model, tuple(epoch_losses))


def cross_entropy(model: SeedCNN, chips: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy (nats per chip) of `model` on N x 64 x 64 x 3 uint8 chips with N class indices."""
    model.eval()
    with torch.inference_mode():
        logits = model(to_tensor(chips))
        return float(nn.functional.cross_entropy(logits, torch.as_tensor(np.asarray(labels), dtype=torch.long)))


def predict(model: SeedCNN, chips: np.ndarray) -> np.ndarray:
    """N x 64 x 64 x 3 uint8 RGB chips -> N x n_classes float32 class probabilities (softmax, rows sum to 1)."""
    model.eval()
    with torch.inference_mode():
        return torch.softmax(model(to_tensor(chips)), dim=1).numpy()
