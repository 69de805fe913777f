"""Speed benchmark: detection (ours vs facenet-pytorch defaults), embedding, end to end, identification.

Figures are medians of repeated runs in one process on the same synthetic photos, so ratios
between them are fair even on a busy machine. Photos are built from images shipped with
installed packages (scikit-image's astronaut, matplotlib's Grace Hopper): nothing is downloaded.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facedemo.embedding import model_spec
from facedemo.matching import Gallery, decide, nearest
from models.registry import MODELS, SFACE


def _median_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 2)


def _interleaved_ms(ours: Callable[[], object], theirs: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Medians of alternating runs: (ours ms, theirs ms, median of the per-pair ratios theirs/ours).

    Alternating keeps a busy neighbour from favouring whichever ran in a quiet moment.
    """
    ours(), theirs()
    a, b = [], []
    for _ in range(repeat):
        for fn, out in ((ours, a), (theirs, b)):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000.0)
    ratios = [y / x for x, y in zip(a, b)]
    return round(statistics.median(a), 2), round(statistics.median(b), 2), round(statistics.median(ratios), 2)


def sample_photos() -> dict[str, np.ndarray]:
    """'512': the astronaut photo; '1080p': 1920 x 1080 with 8 faces of varied size; plus the
    group photos of tests/data/faces-pd/_groups when that folder is present."""
    from facedemo.app import examples

    astronaut, hopper = examples.astronaut(), examples.grace_hopper()
    canvas = Image.new("RGB", (1920, 1080), (90, 110, 130))
    sizes = [420, 380, 340, 300, 260, 230, 200, 180]
    x = 10
    for i, height in enumerate(sizes):
        source = Image.fromarray(astronaut if i % 2 == 0 else hopper)
        tile = source.resize((int(source.width * height / source.height), height))
        y = 60 if i < 4 else 600
        if i == 4:
            x = 10
        canvas.paste(tile, (x, y))
        x += tile.width + 20
    photos = {"512": astronaut, "1080p": np.asarray(canvas)}
    groups = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces-pd" / "_groups"
    if groups.is_dir():
        for path in sorted(groups.glob("*.jpg")):
            photos[path.stem] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def synthetic_gallery(
    subjects: int, dim: int = 128, per_subject: int = 1, seed: int = 0, model_id: str = SFACE.model_id
) -> Gallery:
    """Random unit vectors standing in for enrolled templates of `model_id`."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(subjects * per_subject, dim)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    ids = tuple(f"s{i}" for i in range(subjects))
    owner = np.repeat(np.arange(subjects), per_subject)
    return Gallery(model_id, ids, ids, templates, owner)


def vault_figures(sizes: tuple[int, ...] = (1000, 10000), templates_per_subject: int = 3) -> dict:
    """Enrol latency, gallery load (open + decrypt + stack) and identify time for vaults of each size.

    Templates are random unit vectors (the vault stores vectors; no model is needed).
    """
    import tempfile

    from privacy.keys import generate_master_key
    from privacy.vault import Vault

    key = generate_master_key()
    rng = np.random.default_rng(3)
    model_id = SFACE.model_id
    figures = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            vault = Vault.open(Path(tmp), master_key=key)
            latencies = []
            for i in range(size):
                templates = rng.normal(size=(templates_per_subject, 128)).astype(np.float32)
                templates /= np.linalg.norm(templates, axis=1, keepdims=True)
                start = time.perf_counter()
                vault.enroll(f"Person {i}", {model_id: templates}, "bench", True)
                latencies.append((time.perf_counter() - start) * 1000.0)
            vault.close()
            start = time.perf_counter()
            vault = Vault.open(Path(tmp), master_key=key)
            gallery = Gallery.from_subjects(vault.subjects(model_id), model_id)
            load_ms = (time.perf_counter() - start) * 1000.0
            probes = synthetic_gallery(8, seed=4).templates
            identify = _median_ms(lambda: decide(nearest(probes, gallery, SFACE), SFACE.default_threshold), 10)
            vault.close()
        figures[str(size)] = {
            "enroll_ms_median": round(statistics.median(latencies), 2),
            "enroll_ms_p95": round(float(np.percentile(latencies, 95)), 2),
            "gallery_load_ms": round(load_ms, 1),
            "identify_ms_8_faces": identify,
        }
    figures["templates_per_subject"] = templates_per_subject
    return figures


def run(pipeline, repeat: int = 5, vault: bool = True) -> dict:
    """All benchmark figures as one JSON-able dict (milliseconds unless a key says otherwise)."""
    import torch
    from facenet_pytorch import MTCNN

    photos = sample_photos()
    baseline = MTCNN(keep_all=True, device="cpu")
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'unknown CPU'}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "detect_ms": {},
        "baseline_detect_ms": {},
        "detect_speedup": {},
        "faces_found": {},
        "baseline_faces_found": {},
        "embed_ms_per_face": {},
        "end_to_end_ms": {},
        "identify_ms": {},
    }
    for name, photo in photos.items():
        pil = Image.fromarray(photo)
        ours, theirs, ratio = _interleaved_ms(lambda: pipeline.detect(photo), lambda: baseline.detect(pil), repeat)
        result["detect_ms"][name], result["baseline_detect_ms"][name], result["detect_speedup"][name] = ours, theirs, ratio
        result["faces_found"][name] = len(pipeline.detect(photo))
        boxes, _ = baseline.detect(pil)
        result["baseline_faces_found"][name] = 0 if boxes is None else len(boxes)
    for model_id in MODELS:
        try:
            embedder = pipeline.embedder(model_id)
        except Exception as exc:  # a model whose weights are not installed is reported, not fatal
            result["embed_ms_per_face"][model_id] = {"error": str(exc)}
            continue
        size = embedder.spec.chip_size
        chips = np.random.default_rng(0).integers(0, 255, (8, size, size, 3), dtype=np.uint8)
        result["embed_ms_per_face"][model_id] = {
            "batch1": _median_ms(lambda: embedder.embed(chips[:1]), repeat * 4),
            "batch8": round(_median_ms(lambda: embedder.embed(chips), repeat) / 8, 2),
        }
    photo = photos["1080p"]
    spec = model_spec(pipeline.model_id)
    gallery = synthetic_gallery(100, model_id=pipeline.model_id)
    result["end_to_end_ms"]["1080p_8faces"] = _median_ms(lambda: pipeline.analyse(photo, gallery), repeat)
    probes = synthetic_gallery(8, seed=1).templates
    for size in (1000, 10000, 100000):
        big = synthetic_gallery(size, seed=2, model_id=pipeline.model_id)
        result["identify_ms"][str(size)] = _median_ms(
            lambda: decide(nearest(probes, big, spec), pipeline.threshold), repeat * 2
        )
    result["identify_probes"] = len(probes)
    if vault:
        result["vault"] = vault_figures()
    return result
