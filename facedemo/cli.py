"""Command line: python -m facedemo detect|identify|evaluate|... (errors: one line on stderr, exit 1)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facedemo.config import Config, ConfigError


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str))


def _pipeline(config: Config):
    from facedemo.pipeline import Pipeline

    return Pipeline(config)


def _load_image(path: str, config: Config):
    from facedemo.images import load

    return load(Path(path), max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)


def _face_lines(analysis, with_identity: bool) -> list[str]:
    lines = []
    for number, fa in enumerate(analysis.faces, 1):
        x1, y1, x2, y2 = (round(v) for v in fa.face.box)
        line = f"face {number}: box ({x1}, {y1}, {x2}, {y2}) confidence {fa.face.score:.3f}"
        if with_identity:
            d = fa.decision
            who = d.identity if d.accepted else "unknown"
            line += f" -> {who}" + ("" if d.distance is None else f" (distance {d.distance:.3f})")
        lines.append(line)
    summary = f"{len(analysis.faces)} face(s)"
    if analysis.faces_skipped:
        summary += f"; {analysis.faces_skipped} more not analysed (limit {len(analysis.faces)} per photo)"
    return lines + [summary]


def cmd_detect(args, config: Config) -> int:
    pipeline = _pipeline(config)
    analysis = pipeline.analyse(_load_image(args.image, config))
    if args.json:
        _print_json({"faces": [fa.face.to_dict() for fa in analysis.faces], "faces_skipped": analysis.faces_skipped})
    else:
        print("\n".join(_face_lines(analysis, with_identity=False)))
    return 0


def cmd_identify(args, config: Config) -> int:
    pipeline = _pipeline(config)
    image = _load_image(args.image, config)
    if args.gallery:
        from facedemo.dataset import gallery_from_folder

        gallery = gallery_from_folder(pipeline, args.gallery)
    else:
        raise CliError("identify needs --gallery DIR (a folder with one sub-folder of photos per person)")
    analysis = pipeline.analyse(image, gallery, threshold=args.threshold)
    if args.json:
        _print_json({"faces": [fa.to_dict() for fa in analysis.faces], "model": analysis.model_id,
                     "threshold": analysis.threshold, "faces_skipped": analysis.faces_skipped})
    else:
        print("\n".join(_face_lines(analysis, with_identity=True)))
    return 0


def cmd_evaluate(args, config: Config) -> int:
    from facedemo.evaluate import evaluate, plot

    pipeline = _pipeline(config)
    models = args.models.split(",") if args.models else None
    report, curves = evaluate(pipeline, args.dataset, models, unknowns=args.unknowns)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if args.plot:
        plot(curves, args.plot)
    v, i = report["verification"], report["identification"]
    print(f"{report['identities']} identities, {report['images']} images, {report['faces_found']} faces found")
    for model_id, r in report["models"].items():
        v, i = r["verification"], r["identification"]
        print(
            f"{model_id}: verification accuracy {v['accuracy']:.3f} at threshold {v['threshold']:.3f} "
            f"({v['genuine_pairs']} genuine / {v['impostor_pairs']} impostor pairs), AUC {v['auc']:.3f}, "
            f"TAR@FAR=0.01 {v['tar_at_far']['0.01']:.3f}; identification top-1 {i['top1']}/{i['probes']}, "
            f"open-set {i['top1_open_set']}/{i['probes']}"
        )
        if "open_set" in r:
            o = r["open_set"]
            print(f"  unknowns: {o['unknown_accepted']}/{o['unknown_probes']} wrongly accepted")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m facedemo", description="Face detection vs recognition.")
    parser.add_argument("--data-dir", help="where the encrypted vault lives (default: FACEDEMO_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="find faces: boxes, landmarks, confidence")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print {'faces': [...]} as JSON")
    p.set_defaults(run=cmd_detect)

    p = sub.add_parser("identify", help="find faces and say who they are")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gallery", help="person-per-folder photos to match against")
    p.add_argument("--threshold", type=float, help="decision threshold in the model's distance unit")
    p.set_defaults(run=cmd_identify)

    p = sub.add_parser("evaluate", help="accuracy on a person-per-folder dataset")
    p.add_argument("dataset")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--plot", help="write ROC and distance histograms to this PNG")
    p.add_argument("--models", help="comma-separated model ids (default: the active model)")
    p.add_argument("--unknowns", help="person-per-folder photos of people who are not enrolled")
    p.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from facedemo.dataset import DatasetError
    from facedemo.images import ImageError
    from facedemo.recognition import ModelUnavailable

    try:
        config = Config.from_env()
        if args.data_dir:
            from dataclasses import replace

            config = replace(config, data_dir=Path(args.data_dir))
        return args.run(args, config)
    except (CliError, ConfigError, ImageError, DatasetError, ModelUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
