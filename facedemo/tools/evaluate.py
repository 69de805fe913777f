"""Accuracy of the pipeline on a person-per-folder dataset: verification, closed- and open-set identification."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedemo.embedding import model_spec
from facedemo.matching import Gallery, Subject, decide, distances, nearest
from facedemo.tools.dataset import DatasetError, primary_face_of, read_dataset

FARS = ("0.01", "0.001")


@dataclass(frozen=True)
class _Sample:
    identity: str
    path: Path
    embeddings: dict[str, np.ndarray]  # model id -> D; empty when no face was found


def _embed_all(pipeline, root: Path, model_ids: list[str]) -> tuple[list, list[_Sample]]:
    identities = read_dataset(root)
    samples = []
    for identity in identities:
        for path in identity.photos:
            found = primary_face_of(pipeline, path)
            embeddings = {}
            if found is not None:
                image, face = found
                embeddings = {m: pipeline.embed(image, [face], m)[0] for m in model_ids}
            samples.append(_Sample(identity.name, path, embeddings))
    return identities, samples


def roc_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, TAR) accepting distance < threshold, at every distinct score."""
    scores = np.unique(np.concatenate([genuine, impostor, [np.inf]]))
    far = np.searchsorted(np.sort(impostor), scores, side="left") / max(len(impostor), 1)
    tar = np.searchsorted(np.sort(genuine), scores, side="left") / max(len(genuine), 1)
    return scores, far, tar


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The largest threshold (distance) at which at most `far` of impostor pairs are accepted."""
    ordered = np.sort(impostor)
    allowed = int(np.floor(far * len(ordered) + 1e-9))
    return float(ordered[allowed]) if allowed < len(ordered) else float("inf")


def auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine pair is closer than an impostor pair (ties count half)."""
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    all_scores = np.concatenate([genuine, impostor])
    # Rank 1 = smallest distance; tied scores share the mean of the ranks they span.
    _, inverse, counts = np.unique(all_scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    genuine_rank_sum = ranks[: len(genuine)].sum()
    u = genuine_rank_sum - len(genuine) * (len(genuine) + 1) / 2
    return float(1.0 - u / (len(genuine) * len(impostor)))


def _verification(samples: list[_Sample], model_id: str, threshold: float) -> tuple[dict, np.ndarray, np.ndarray]:
    metric = model_spec(model_id).metric
    usable = [s for s in samples if model_id in s.embeddings]
    labels = np.array([s.identity for s in usable])
    embeddings = np.array([s.embeddings[model_id] for s in usable]).reshape(len(usable), -1)
    table = distances(embeddings, embeddings, metric)
    first, second = np.triu_indices(len(usable), k=1)
    same = labels[first] == labels[second]
    pair_distances = table[first, second].astype(np.float64)
    genuine, impostor = pair_distances[same], pair_distances[~same]
    correct = int((genuine < threshold).sum() + (impostor >= threshold).sum())
    total = len(genuine) + len(impostor)
    tar_at_far = {}
    thresholds_at_far = {}
    for far in FARS:
        t = threshold_at_far(impostor, float(far)) if len(impostor) else float("nan")
        thresholds_at_far[far] = t
        tar_at_far[far] = float((genuine < t).mean()) if len(genuine) else float("nan")
    report = {
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "threshold": threshold,
        "accuracy": correct / total if total else float("nan"),
        "tar_at_far": tar_at_far,
        "threshold_at_far": thresholds_at_far,
        "auc": auc(genuine, impostor),
    }
    return report, genuine, impostor


def _gallery_and_probes(samples: list[_Sample], model_id: str) -> tuple[Gallery, list[_Sample]]:
    """Enrol the first photo (by file name) of each identity; every other photo is a probe."""
    first: dict[str, _Sample] = {}
    probes = []
    for s in samples:
        if s.identity not in first:
            first[s.identity] = s
        else:
            probes.append(s)
    subjects = [
        Subject(name, name, s.embeddings[model_id][None])
        for name, s in first.items()
        if model_id in s.embeddings
    ]
    return Gallery.from_subjects(subjects, model_id), probes


def _identification(samples: list[_Sample], model_id: str, threshold: float) -> dict:
    spec = model_spec(model_id)
    gallery, probes = _gallery_and_probes(samples, model_id)
    top1 = top1_open = 0
    for probe in probes:
        if model_id not in probe.embeddings or len(gallery) == 0:
            continue
        candidates = nearest(probe.embeddings[model_id][None], gallery, spec)
        if candidates[0][0].subject_id == probe.identity:
            top1 += 1
        if decide(candidates, threshold)[0].subject_id == probe.identity:
            top1_open += 1
    return {"probes": len(probes), "top1": top1, "top1_open_set": top1_open}


def _open_set(samples: list[_Sample], unknown_samples: list[_Sample], model_id: str, threshold: float) -> dict:
    spec = model_spec(model_id)
    gallery, probes = _gallery_and_probes(samples, model_id)
    accepted_unknown = 0
    for s in unknown_samples:
        if model_id in s.embeddings and len(gallery):
            if decide(nearest(s.embeddings[model_id][None], gallery, spec), threshold)[0].accepted:
                accepted_unknown += 1
    known = _identification(samples, model_id, threshold)
    return {
        "unknown_probes": len(unknown_samples),
        "unknown_faces_found": sum(1 for s in unknown_samples if s.embeddings),
        "unknown_accepted": accepted_unknown,
        "known_probes": len(probes),
        "known_correct_accepted": known["top1_open_set"],
    }


def evaluate(
    pipeline, root: Path | str, model_ids: list[str] | None = None, unknowns: Path | str | None = None
) -> tuple[dict, dict]:
    """Evaluate on DIR/<identity>/<image> -> (report, curves for `plot`).

    The report's top-level figures are those of the first model (default: the active one);
    "models" holds every model's. Distances and thresholds are in each model's own unit
    (see recognition.ModelSpec). `unknowns` is a person-per-folder set of people who are
    not enrolled: every photo of it is an open-set probe.
    DatasetError when the folder holds no identity or no face is found in any of its photos.
    """
    model_ids = model_ids or [pipeline.model_id]
    identities, samples = _embed_all(pipeline, Path(root), model_ids)
    if not any(s.embeddings for s in samples):
        raise DatasetError(f"no face found in any photo under {root} ({len(samples)} photos); nothing to evaluate")
    unknown_samples = _embed_all(pipeline, Path(unknowns), model_ids)[1] if unknowns else []
    per_model = {}
    curves = {}
    for model_id in model_ids:
        threshold = pipeline.threshold if model_id == pipeline.model_id else model_spec(model_id).default_threshold
        verification, genuine, impostor = _verification(samples, model_id, threshold)
        per_model[model_id] = {
            "verification": verification,
            "identification": _identification(samples, model_id, threshold),
        }
        if unknowns:
            per_model[model_id]["open_set"] = _open_set(samples, unknown_samples, model_id, threshold)
        curves[model_id] = (genuine, impostor)
    main = per_model[model_ids[0]]
    report = {
        "dataset": str(root),
        "model": model_ids[0],
        "identities": len(identities),
        "images": len(samples),
        "faces_found": sum(1 for s in samples if s.embeddings),
        **main,
        "models": per_model,
    }
    return report, curves


def plot(curves: dict, path: Path | str) -> None:
    """ROC (TAR against FAR, log scale) and distance histograms per model, as one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(1, 1 + len(curves), figsize=(5 * (1 + len(curves)), 4))
    roc_ax = axes[0]
    for model_id, (genuine, impostor) in curves.items():
        _, far, tar = roc_points(genuine, impostor)
        roc_ax.step(np.maximum(far, 1e-4), tar, where="post", label=model_id)
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false accept rate")
    roc_ax.set_ylabel("true accept rate")
    roc_ax.set_title("ROC")
    roc_ax.legend()
    for ax, (model_id, (genuine, impostor)) in zip(axes[1:], curves.items()):
        bins = np.linspace(0, max(np.max(genuine, initial=1), np.max(impostor, initial=1)), 30)
        ax.hist(impostor, bins=bins, alpha=0.6, label="different people")
        ax.hist(genuine, bins=bins, alpha=0.6, label="same person")
        ax.set_title(f"{model_id}: distances")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
