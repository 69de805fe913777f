"""Speed benchmark: detection (both detectors vs facenet-pytorch defaults), embedding, end to end
(vs facenet-pytorch's MTCNN + InceptionResnetV1), identification, memory, and where P-net's time goes.

Figures are medians of repeated runs in one process on the same synthetic photos, so ratios
between them are fair even on a busy machine. Photos are built from images shipped with
installed packages (scikit-image's astronaut, matplotlib's Grace Hopper): nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facedemo.app.runtime import resident_mb
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


FACES_PD = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces-pd"
# Where the faces are in the two package photos (tests/data/faces-pd/LABELS.json labels the same
# pictures: collins_nasa_portrait_a.jpg and hopper_us_navy_portrait.jpg).
ASTRONAUT_FACE = (179, 62, 268, 175)
HOPPER_FACE = (178, 118, 352, 334)


def sample_photos() -> dict[str, np.ndarray]:
    """'512': the astronaut photo; '1080p': 1920 x 1080 with 8 faces of varied size; plus the
    group photos of tests/data/faces-pd/_groups when that folder is present."""
    return {name: photo for name, (photo, _) in labelled_sample_photos().items()}


def labelled_sample_photos() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sample_photos() with each photo's face boxes (K x 4 edges, pixels): every face in it."""
    from facedemo.app import examples

    astronaut, hopper = examples.astronaut(), examples.grace_hopper()
    canvas = Image.new("RGB", (1920, 1080), (90, 110, 130))
    sizes = [420, 380, 340, 300, 260, 230, 200, 180]
    faces = []
    x = 10
    for i, height in enumerate(sizes):
        source, face = (astronaut, ASTRONAUT_FACE) if i % 2 == 0 else (hopper, HOPPER_FACE)
        tile = Image.fromarray(source).resize((int(source.shape[1] * height / source.shape[0]), height))
        y = 60 if i < 4 else 600
        if i == 4:
            x = 10
        canvas.paste(tile, (x, y))
        scale = np.array([tile.width / source.shape[1], tile.height / source.shape[0]] * 2)
        faces.append(np.asarray(face) * scale + [x, y, x, y])
        x += tile.width + 20
    photos = {"512": (astronaut, np.array([ASTRONAUT_FACE], float)), "1080p": (np.asarray(canvas), np.array(faces))}
    if (FACES_PD / "LABELS.json").is_file():
        labels = json.loads((FACES_PD / "LABELS.json").read_text())["photos"]
        for path in sorted((FACES_PD / "_groups").glob("*.jpg")):
            boxes = np.asarray(labels[f"_groups/{path.name}"]["faces"], float)
            photos[path.stem] = (np.asarray(Image.open(path).convert("RGB")), boxes)
    return photos


def _false_faces(found_boxes, labels: np.ndarray) -> int:
    """Detections that overlap no labelled face by IoU >= 0.4 (facedemo.tools.detection_eval's rule)."""
    from facedemo.results import Face
    from facedemo.tools.detection_eval import LabelledPhoto, match

    faces = [Face(box=tuple(float(v) for v in box), score=1.0, landmarks=((0.0, 0.0),) * 5) for box in found_boxes]
    return len(match(faces, LabelledPhoto("", np.zeros((1, 1, 3), np.uint8), labels, np.zeros((0, 4)))).false)


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


def _interleaved_many(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Each function's times (ms) over `repeat` rounds, the functions taking turns in every round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def _pair_ratio(theirs: list[float], ours: list[float]) -> float:
    """Median of the per-round ratios theirs / ours."""
    return round(statistics.median([t / o for t, o in zip(theirs, ours)]), 2)


def hardware() -> dict:
    """The CPU as Linux describes it (lscpu's first lines), the cores and torch's threads."""
    import torch

    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update({
        "model": fields.get("model name", "unknown"),
        "mhz": fields.get("cpu MHz"),
        "cpu_family": fields.get("cpu family"),
        "vector": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags],
    })
    return info


def pnet_analysis(repeat: int = 7) -> dict:
    """Where MTCNN's first stage spends its time at 1080p, and how far that is from this CPU's limit.

    Counts P-net's multiply-adds over the pyramid a 1920 x 1080 photo gets (faces down to 21.6 px),
    layer by layer; times each of the first level's convolutions alone, as the cascade runs them
    (channels-last weights, planar input), which is what this CPU sustains on convolutions of that
    shape; and times P-net over the whole pyramid as the cascade runs it (in strips). `limit_ms` is
    the time the multiply-adds would take at those sustained rates; `ratio` = pnet_ms / limit_ms.
    `conv_64x64_gflops` is a well-shaped convolution's rate (64 -> 64 channels, 3 x 3) for scale.
    """
    import torch
    import torch.nn.functional as F

    from models import mtcnn

    cascade = mtcnn.Cascade()
    sizes = cascade.pyramid(1920, 1080, 0.02 * 1080)
    # What we compute: the heads only as the face-logit channel over the whole map (32 -> 1; the
    # offsets are computed at the few cells that pass). The network as defined has 6 head channels.
    layers = {"conv1": (3, 10, 3), "conv2": (10, 16, 3), "conv3": (16, 32, 3), "face_head": (32, 1, 1)}
    macs = dict.fromkeys(layers, 0)
    network_macs = 0
    for width, height in sizes:
        h1, w1 = height - 2, width - 2  # conv1 3 x 3, no padding
        h2, w2 = -(-h1 // 2), -(-w1 // 2)  # 2 x 2 max-pool, ceil mode
        h3, w3 = h2 - 2, w2 - 2
        h4, w4 = h3 - 2, w3 - 2
        for name, (cin, cout, k), (h, w) in zip(layers, layers.values(), ((h1, w1), (h3, w3), (h4, w4), (h4, w4))):
            macs[name] += h * w * cout * cin * k * k
        network_macs += h4 * w4 * 6 * 32 - h4 * w4 * 32  # the five head channels we skip
    net, runner = cascade.pnet, cascade._pnet
    pyramid = mtcnn.Pyramid(np.zeros((1080, 1920, 3), np.uint8), sizes)
    first = pyramid.levels[0].pixels
    out: dict = {"levels": len(sizes), "first_level": list(sizes[0]), "layers": {}}
    limit_ms = 0.0
    with torch.inference_mode():
        x1 = net.prelu1(net.conv1(first))
        x2 = F.max_pool2d(x1, 2, ceil_mode=True)
        x3 = net.prelu2(net.conv2(x2))
        x4 = net.prelu3(net.conv3(x3))
        inputs = {"conv1": (net.conv1, first), "conv2": (net.conv2, x2), "conv3": (net.conv3, x3),
                  "face_head": (lambda t: F.conv2d(t, runner.face_weight, runner.face_bias), x4)}
        for name, (layer, tensor) in inputs.items():
            ms = _median_ms(lambda layer=layer, tensor=tensor: layer(tensor), repeat)
            level_macs = tensor.shape[2] * tensor.shape[3] * layers[name][1] * layers[name][0] * layers[name][2] ** 2
            gflops = 2 * level_macs / (ms / 1000) / 1e9
            out["layers"][name] = {"gmac": round(macs[name] / 1e9, 3), "first_level_ms": ms, "gflops": round(gflops, 1)}
            limit_ms += 2 * macs[name] / (gflops * 1e9) * 1000
        pnet_ms = _median_ms(
            lambda: [mtcnn._pnet_in_strips(runner, level.pixels, cascade.thresholds[0]) for level in pyramid.levels], repeat
        )
        x = torch.randn(1, 64, 128, 128).contiguous(memory_format=torch.channels_last)
        w = torch.randn(64, 64, 3, 3).contiguous(memory_format=torch.channels_last)
        conv_ms = _median_ms(lambda: F.conv2d(x, w, padding=1), repeat)
    total = sum(macs.values())
    out.update({
        "gmac": round((total + network_macs) / 1e9, 3),  # P-net as defined (facenet-pytorch's layers)
        "gmac_computed": round(total / 1e9, 3),  # what we compute (face channel only)
        "pnet_ms": pnet_ms,
        "pnet_gflops": round(2 * total / (pnet_ms / 1000) / 1e9, 1),
        "limit_ms": round(limit_ms, 2),
        "ratio": round(pnet_ms / limit_ms, 2),
        "conv_64x64_gflops": round(2 * 64 * 64 * 9 * 128 * 128 / (conv_ms / 1000) / 1e9, 1),
    })
    return out


def varied_photos(count: int = 100) -> list[np.ndarray]:
    """`count` different photos: the sample and faces-pd photos, each rescaled, cropped or mirrored."""
    from facedemo.images import load

    sources = list(sample_photos().values())
    sources += [load(path) for path in sorted(FACES_PD.glob("*/*.jpg"))]
    rng = np.random.default_rng(100)
    photos = []
    for i in range(count):
        photo = Image.fromarray(sources[i % len(sources)])
        scale = rng.uniform(0.5, 1.2)
        photo = photo.resize((max(64, round(photo.width * scale)), max(64, round(photo.height * scale))))
        left, top = (round(rng.uniform(0, 0.1) * side) for side in photo.size)
        photo = photo.crop((left, top, photo.width, photo.height))
        photos.append(np.asarray(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else photo))
    return photos


def _memory_child(detector: str, analyses: int) -> dict:
    """In a fresh process: RSS after loading and warming up as the app does, and after `analyses`
    analyses of different photos against 100 enrolled people, with `detector`."""
    from facedemo.app.runtime import tune_allocator
    from facedemo.pipeline import Pipeline

    tune_allocator()  # as app.py and the CLI do
    photos = varied_photos(analyses)
    pipeline = Pipeline(detector=detector)
    gallery = synthetic_gallery(100, model_id=pipeline.model_id)
    pipeline.warm_up()
    pipeline.analyse(photos[0], gallery)
    warm = round(resident_mb(), 1)
    faces = sum(len(pipeline.analyse(photo, gallery).faces) for photo in photos)
    return {"after_warm_up_mb": warm, f"after_{analyses}_analyses_mb": round(resident_mb(), 1), "faces_analysed": faces}


def memory_figures(detectors: tuple[str, ...] | None = None, analyses: int = 100) -> dict:
    """`_memory_child` for each detector, each in its own process (RSS is per process)."""
    from facedemo.detection import DETECTORS

    figures = {}
    for detector in detectors or DETECTORS:
        code = f"import json; from facedemo.tools.bench import _memory_child; print(json.dumps(_memory_child({detector!r}, {analyses})))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parents[2])
        try:
            figures[detector] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            figures[detector] = {"error": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    return figures


def album_figures(pipeline, photos: int = 50) -> dict:
    """An album of `photos` different JPEGs (varied_photos) against 100 enrolled people: seconds to analyse
    it (decode, detect, recognise, embed and group the unknown faces) and to anonymise it (decode again,
    hide, re-encode, zip), faces per second, and its clusters."""
    import io

    from facedemo.album import AlbumLimits, analyse_album
    from facedemo.anonymise import anonymise_album

    encoded = []
    for n, photo in enumerate(varied_photos(photos)):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
        encoded.append((f"{n}.jpg", buffer.getvalue()))
    gallery = synthetic_gallery(100, model_id=pipeline.model_id)
    limits = AlbumLimits(max_photos=photos)
    album = analyse_album(pipeline, encoded, gallery, limits=limits)
    start = time.perf_counter()
    anonymise_album(album, [data for _, data in encoded], limits=limits)
    anonymise_s = time.perf_counter() - start
    return {
        "photos": len(album.photos),
        "faces": album.faces,
        "clusters": len(album.clusters),
        "megapixels": round(album.pixels / 1e6, 1),
        "analyse_s": round(album.seconds, 2),
        "faces_per_s": round(album.faces / album.seconds, 1),
        "anonymise_s": round(anonymise_s, 2),
    }


def run(pipeline, repeat: int = 5, vault: bool = True, memory: bool = True) -> dict:
    """All benchmark figures as one JSON-able dict (milliseconds unless a key says otherwise).

    The peer pipeline is facenet-pytorch's `MTCNN()` with its defaults, and for end to end its
    `InceptionResnetV1` on the faces it finds. That network's weights are downloaded at run time,
    which we never do, so it runs with its architecture and random weights
    (`InceptionResnetV1(pretrained=None)`): the same computation, meaningless embeddings.
    """
    import torch
    from facenet_pytorch import MTCNN, InceptionResnetV1

    from facedemo.detection import DETECTORS

    photos = labelled_sample_photos()
    baseline = MTCNN(keep_all=True, device="cpu")
    peer_embedder = InceptionResnetV1(pretrained=None).eval()
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'unknown CPU'}",
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "detector": pipeline.detector_id,
        "detect_ms": {},
        "baseline_detect_ms": {},
        "detect_speedup": {},
        "faces_found": {},
        "baseline_faces_found": {},
        "false_detections": {},
        "baseline_false_detections": {},
        "detectors": {name: {"detect_ms": {}, "detect_speedup": {}, "faces_found": {}, "false_detections": {}}
                      for name in DETECTORS},
        "embed_ms_per_face": {},
        "end_to_end_ms": {},
        "baseline_end_to_end_ms": {},
        "end_to_end_ratio": {},
        "baseline_note": "facenet-pytorch MTCNN() defaults; end to end adds InceptionResnetV1(pretrained=None) "
                         "on its faces: random weights, as its weights download at run time",
        "identify_ms": {},
    }
    for name, (photo, labels) in photos.items():
        pil = Image.fromarray(photo)
        fns = {d: (lambda d=d: pipeline.detect(photo, d)) for d in DETECTORS}
        fns["baseline"] = lambda: baseline.detect(pil)
        times = _interleaved_many(fns, repeat)
        theirs = times["baseline"]
        boxes, _ = baseline.detect(pil)
        boxes = [] if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        result["baseline_detect_ms"][name] = round(statistics.median(theirs), 2)
        result["baseline_faces_found"][name] = len(boxes)
        result["baseline_false_detections"][name] = _false_faces(boxes, labels)
        for d in DETECTORS:
            found = pipeline.detect(photo, d)
            figures = result["detectors"][d]
            figures["detect_ms"][name] = round(statistics.median(times[d]), 2)
            figures["detect_speedup"][name] = _pair_ratio(theirs, times[d])
            figures["faces_found"][name] = len(found)
            figures["false_detections"][name] = _false_faces([f.box for f in found], labels)
        chosen = result["detectors"][pipeline.detector_id]
        for key in ("detect_ms", "detect_speedup", "faces_found", "false_detections"):
            result[key][name] = chosen[key][name]
    result["labelled_faces"] = {name: len(labels) for name, (_, labels) in photos.items()}
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
    photo = photos["1080p"][0]
    pil = Image.fromarray(photo)
    spec = model_spec(pipeline.model_id)
    gallery = synthetic_gallery(100, model_id=pipeline.model_id)

    def peer() -> object:
        with torch.inference_mode():
            faces = baseline(pil)  # the detected faces, cropped to 160 x 160
            return None if faces is None else peer_embedder(faces)

    fns = {d: (lambda d=d: pipeline.analyse(photo, gallery, detector=d)) for d in DETECTORS}
    fns["baseline"] = peer
    times = _interleaved_many(fns, repeat)
    result["baseline_end_to_end_ms"]["1080p_8faces"] = round(statistics.median(times["baseline"]), 2)
    for d in DETECTORS:
        result["detectors"][d]["end_to_end_ms"] = {"1080p_8faces": round(statistics.median(times[d]), 2)}
        # ours / theirs: the goal is <= 0.4
        result["detectors"][d]["end_to_end_ratio"] = {
            "1080p_8faces": round(statistics.median([o / t for o, t in zip(times[d], times["baseline"])]), 2)
        }
    result["end_to_end_ms"]["1080p_8faces"] = result["detectors"][pipeline.detector_id]["end_to_end_ms"]["1080p_8faces"]
    result["end_to_end_ratio"]["1080p_8faces"] = result["detectors"][pipeline.detector_id]["end_to_end_ratio"]["1080p_8faces"]
    result["pnet"] = pnet_analysis(repeat)
    probes = synthetic_gallery(8, seed=1).templates
    for size in (1000, 10000, 100000):
        big = synthetic_gallery(size, seed=2, model_id=pipeline.model_id)
        result["identify_ms"][str(size)] = _median_ms(
            lambda: decide(nearest(probes, big, spec), pipeline.threshold), repeat * 2
        )
    result["identify_probes"] = len(probes)
    result["album_50_photos"] = album_figures(pipeline)
    if memory:
        result["memory_rss"] = memory_figures()
    if vault:
        result["vault"] = vault_figures()
    return result
