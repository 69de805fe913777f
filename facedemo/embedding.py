"""Stage 4: aligned face chips -> embeddings, one batched forward pass of an embedding CNN."""
from __future__ import annotations

import threading

import numpy as np

from models.registry import MODELS, ModelSpec


class ModelUnavailable(RuntimeError):
    """An embedding model was asked for that is unknown or whose weights are not installed."""


def model_spec(model_id: str) -> ModelSpec:
    """The registry's facts of `model_id`; ModelUnavailable (naming the choices) for an unknown id."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise ModelUnavailable(
            f"unknown model {model_id!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


class Embedder:
    """One embedding CNN, loaded once, turning aligned chips into embeddings."""

    batch_size = 16

    def __init__(self, spec: ModelSpec) -> None:
        import torch

        self.spec = spec
        self._torch = torch
        self._net = spec.load()
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """chips: N x S x S x 3 uint8 RGB (S = spec.chip_size) -> N x D float32 embeddings."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.spec.chip_size, self.spec.chip_size, 3):
            raise ValueError(
                f"expected N x {self.spec.chip_size} x {self.spec.chip_size} x 3 chips, got {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, self.spec.embedding_dim), dtype=np.float32)
        torch = self._torch
        network = self._net.embed if self.spec.normalise else self._net
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(chips[start : start + self.batch_size]).permute(0, 3, 1, 2).float()
                out.append(network(batch).numpy())
        return np.concatenate(out).astype(np.float32)
