"""Accuracy of the pipeline on a person-per-folder dataset: verification, closed- and open-set identification."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facedemo.embedding import model_spec
from facedemo.matching import Candidate, Gallery, Rule, Subject, decide, distances, nearest
from facedemo.quality import assess
from facedemo.tools.dataset import DatasetError, primary_face_of, read_dataset
from models.registry import ModelSpec

FARS = ("0.01", "0.001")


@dataclass(frozen=True)
class _Sample:
    identity: str
    path: Path
    embeddings: dict[str, np.ndarray]  # model id -> D; empty when no face was found
    problem: str | None = None  # why the face is too poor to decide (facedemo.quality), as in the app


def _embed_all(pipeline, root: Path, model_ids: list[str]) -> tuple[list, list[_Sample]]:
    identities = read_dataset(root)
    samples = []
    for identity in identities:
        for path in identity.photos:
            found = primary_face_of(pipeline, path)
            embeddings, problem = {}, None
            if found is not None:
                image, face = found
                embeddings = {m: pipeline.embed(image, [face], m)[0] for m in model_ids}
                problem = assess(image, [face])[0].problem
            samples.append(_Sample(identity.name, path, embeddings, problem))
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
    """Closed set (top1: the right person nearest) and open set at the model's rule (top1_open_set)."""
    spec = model_spec(model_id)
    rule = Rule.of(spec, threshold)
    gallery, probes = _gallery_and_probes(samples, model_id)
    top1 = top1_open = 0
    for probe in probes:
        if model_id not in probe.embeddings or len(gallery) == 0:
            continue
        candidates = nearest(probe.embeddings[model_id][None], gallery, spec)
        if candidates[0][0].subject_id == probe.identity:
            top1 += 1
        if decide(candidates, rule)[0].subject_id == probe.identity:
            top1_open += 1
    return {"probes": len(probes), "top1": top1, "top1_open_set": top1_open}


@dataclass(frozen=True)
class _Probe:
    """One open-set probe: its candidates (nearest first) and, for a known person, who it really is."""

    candidates: list[Candidate]
    identity: str | None  # None for a stranger
    problem: str | None = None  # too poor to decide: never named


def _open_set_probes(
    samples: list[_Sample], unknown_samples: list[_Sample], spec: ModelSpec, enrol: int = 1
) -> tuple[list[_Probe], list[_Probe], str, int]:
    """Known probes (each identity's photos after its first `enrol`, against everyone enrolled) and
    strangers: the `unknown_samples` against everyone, or else each identity's photos against the
    gallery without that identity (leave-one-identity-out). Returns (known, strangers, how the
    strangers were made, identities enrolled)."""
    model_id = spec.model_id
    enrolled: dict[str, list[np.ndarray]] = {}
    known_samples = []
    for s in samples:
        rows = enrolled.setdefault(s.identity, [])
        if len(rows) < enrol and model_id in s.embeddings:
            rows.append(s.embeddings[model_id])
        else:
            known_samples.append(s)
    if enrol > 1:  # only people with all their enrolment photos and at least one probe left
        keep = {name for name, rows in enrolled.items() if len(rows) == enrol}
        keep &= {s.identity for s in known_samples if model_id in s.embeddings}
        enrolled = {name: rows for name, rows in enrolled.items() if name in keep}
        known_samples = [s for s in known_samples if s.identity in keep]
        samples = [s for s in samples if s.identity in keep]
    subjects = [Subject(name, name, np.stack(rows)) for name, rows in enrolled.items() if rows]
    gallery = Gallery.from_subjects(subjects, model_id)

    def probe_all(group: list[_Sample], against: Gallery, known: bool) -> list[_Probe]:
        usable = [s for s in group if model_id in s.embeddings]
        if not usable or len(against) == 0:
            return []
        found = nearest(np.stack([s.embeddings[model_id] for s in usable]), against, spec)
        return [_Probe(c, s.identity if known else None, s.problem) for s, c in zip(usable, found)]

    known = probe_all(known_samples, gallery, True)
    if unknown_samples:
        return known, probe_all(unknown_samples, gallery, False), "unknowns", len(gallery)
    strangers = []
    for name in gallery.subject_ids:
        strangers += probe_all([s for s in samples if s.identity == name], gallery.without_subjects([name]), False)
    return known, strangers, "leave-one-identity-out", len(gallery)


def _rule_figures(known: list[_Probe], strangers: list[_Probe], rule: Rule) -> dict:
    """What `rule` does with the probes: the figures of README's accuracy table, and DIR at FAR."""
    right = accepted = wrong = 0
    for probe in known:
        decision = decide([probe.candidates], rule, [probe.problem])[0]
        right += probe.candidates[0].subject_id == probe.identity
        accepted += decision.subject_id == probe.identity
        wrong += decision.accepted and decision.subject_id != probe.identity
    return {
        "threshold": rule.threshold,
        "strict_threshold": rule.strict_threshold,
        "loose_threshold": rule.loose_threshold,
        "known_probes": len(known),
        "known_nearest_right": int(right),
        "known_accepted": int(accepted),
        "known_wrong": int(wrong),
        "unknown_probes": len(strangers),
        "unknown_accepted": sum(decide([p.candidates], rule, [p.problem])[0].accepted for p in strangers),
        "too_poor": sum(p.problem is not None for p in known + strangers),
        "dir_at_far": dir_at_far(*_open_set_scores(known, strangers, rule)),
    }


def _open_set_scores(known: list[_Probe], strangers: list[_Probe], rule: Rule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, known scores, stranger scores) for DIR/FAR curves of `rule` scaled with its threshold.

    The rule at threshold t (both levels scaled with it, as Rule.of does, without the ceiling) accepts
    a face below t with fewer than 5 people enrolled; else below t x strict/threshold, or below
    t x loose/threshold when the face is clearly its nearest person's. A face's score is its distance
    divided by the ratio that applies to it, so the rule at t accepts exactly the scores below t.
    """
    def ratio(level: float) -> float:
        return level / rule.threshold if rule.threshold > 0 else 1.0

    unbounded = replace(rule, loose_threshold=math.inf)  # clear or not, whatever the distance

    def score(probe: _Probe) -> float:
        d = probe.candidates[0].distance
        if probe.problem:  # too poor to decide: accepted at no threshold
            return math.inf
        if probe.candidates[0].others_median is None:
            return d
        level = rule.loose_threshold if unbounded.clear(probe.candidates) else rule.strict_threshold
        return d / ratio(level)

    right = np.array([p.candidates[0].subject_id == p.identity for p in known], dtype=bool)
    return right, np.array([score(p) for p in known]), np.array([score(p) for p in strangers])


def dir_at_far(right: np.ndarray, known: np.ndarray, strangers: np.ndarray) -> dict:
    """Detection-and-identification rate at a false-alarm rate (open-set identification, as in NIST's
    FRVT and Phillips et al.): at the largest threshold accepting at most FAR of the strangers, the
    share of known probes whose nearest person is the right one and accepted. Per FAR ("0.01",
    "0.001"): {"dir", "threshold"}; with fewer than 1/FAR strangers it is the rate accepting none."""
    out = {}
    for far in FARS:
        if len(strangers) == 0 or len(known) == 0:
            out[far] = {"dir": float("nan"), "threshold": float("nan")}
            continue
        t = threshold_at_far(strangers, float(far))
        out[far] = {"dir": float(np.mean(right & (known < t))), "threshold": t}
    return out


def dir_far_curve(right: np.ndarray, known: np.ndarray, strangers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, DIR) at every distinct score, accepting score < threshold."""
    scores = np.unique(np.concatenate([known, strangers, [np.inf]]))
    far = np.searchsorted(np.sort(strangers), scores, side="left") / max(len(strangers), 1)
    hits = np.sort(known[right])
    return far, np.searchsorted(hits, scores, side="left") / max(len(known), 1)


def _open_set(samples: list[_Sample], unknown_samples: list[_Sample], model_id: str, threshold: float) -> tuple[dict, dict]:
    """Open-set figures of the one-threshold rule ("threshold", before) and the model's two-level
    rule ("two_level", the app's); the top-level counts are the app's rule. Returns (report, curves)."""
    spec = model_spec(model_id)
    known, strangers, source, enrolled = _open_set_probes(samples, unknown_samples, spec)
    rules = {"threshold": Rule.single(threshold), "two_level": Rule.of(spec, threshold)}
    figures = {name: _rule_figures(known, strangers, rule) for name, rule in rules.items()}
    app = figures["two_level"]
    report = {
        "strangers": source,
        "enrolled": enrolled,
        "unknown_probes": app["unknown_probes"],
        "unknown_faces_found": app["unknown_probes"] if not unknown_samples else
        sum(1 for s in unknown_samples if model_id in s.embeddings),
        "unknown_accepted": app["unknown_accepted"],
        "known_probes": app["known_probes"],
        "known_correct_accepted": app["known_accepted"],
        "dir_at_far": app["dir_at_far"],
        "rules": figures,
        "templates": _templates(samples, unknown_samples, spec, threshold),
    }
    curves = {name: _open_set_scores(known, strangers, rule) for name, rule in rules.items()}
    return report, curves


TEMPLATES_PER_PERSON = 3


def _templates(samples: list[_Sample], unknown_samples: list[_Sample], spec: ModelSpec, threshold: float) -> dict | None:
    """Several templates per person: the first TEMPLATES_PER_PERSON photos of everyone with more
    enrolled, compared by their nearest template and by their mean, at the model's rule. None when
    fewer than 2 people have that many photos."""
    out = {}
    for how in ("nearest", "mean"):
        variant = replace(spec, templates=how)
        known, strangers, _, enrolled = _open_set_probes(samples, unknown_samples, variant, TEMPLATES_PER_PERSON)
        if enrolled < 2:
            return None
        figures = _rule_figures(known, strangers, Rule.of(variant, threshold))
        out[how] = {k: figures[k] for k in ("known_probes", "known_accepted", "known_wrong", "unknown_probes",
                                            "unknown_accepted", "dir_at_far")}
        out["enrolled"] = enrolled
    return {"photos_per_person": TEMPLATES_PER_PERSON, "model_uses": spec.templates, **out}


def evaluate(
    pipeline, root: Path | str, model_ids: list[str] | None = None, unknowns: Path | str | None = None
) -> tuple[dict, dict]:
    """Evaluate on DIR/<identity>/<image> -> (report, curves for `plot`).

    The report's top-level figures are those of the first model (default: the active one);
    "models" holds every model's. Distances and thresholds are in each model's own unit
    (see models.registry.ModelSpec). The first photo (by file name) of each identity is enrolled,
    the others are its probes. Open-set figures ("open_set") compare strangers with them: `unknowns`,
    a person-per-folder set of people who are not enrolled (every photo a stranger), or without it
    each identity's photos against the others (leave-one-identity-out). They are given for the
    one-threshold rule and the model's two-level rule ("rules"), with DIR at FAR 1e-2 and 1e-3,
    and for several templates per person compared by the nearest and by the mean ("templates").
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
        per_model[model_id]["open_set"], open_curves = _open_set(samples, unknown_samples, model_id, threshold)
        curves[model_id] = (genuine, impostor, open_curves)
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
    from facedemo.tools.detection_eval import detectors_report  # both detectors side by side

    report["detectors"] = detectors_report(pipeline, root)
    return report, curves


def plot(curves: dict, path: Path | str) -> None:
    """ROC (TAR against FAR, log scale), open-set DIR against FAR per rule, and distance histograms
    per model, as one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(1, 2 + len(curves), figsize=(5 * (2 + len(curves)), 4))
    roc_ax, dir_ax = axes[0], axes[1]
    for model_id, (genuine, impostor, open_curves) in curves.items():
        _, far, tar = roc_points(genuine, impostor)
        roc_ax.step(np.maximum(far, 1e-4), tar, where="post", label=model_id)
        for rule, scores in open_curves.items():
            far, dir_ = dir_far_curve(*scores)
            dir_ax.step(np.maximum(far, 1e-4), dir_, where="post", label=f"{model_id}, {rule}")
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false accept rate")
    roc_ax.set_ylabel("true accept rate")
    roc_ax.set_title("ROC (pairs)")
    roc_ax.legend()
    for far in FARS:
        dir_ax.axvline(float(far), color="grey", lw=0.5)
    dir_ax.set_xscale("log")
    dir_ax.set_xlabel("false alarm rate (strangers accepted)")
    dir_ax.set_ylabel("detection and identification rate")
    dir_ax.set_title("open set: DIR at FAR")
    dir_ax.legend(fontsize="small")
    for ax, (model_id, (genuine, impostor, _)) in zip(axes[2:], curves.items()):
        bins = np.linspace(0, max(np.max(genuine, initial=1), np.max(impostor, initial=1)), 30)
        ax.hist(impostor, bins=bins, alpha=0.6, label="different people")
        ax.hist(genuine, bins=bins, alpha=0.6, label="same person")
        ax.set_title(f"{model_id}: distances")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
