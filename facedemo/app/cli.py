"""Command line: python -m facedemo detect|identify|evaluate|... (errors: one line on stderr, exit 1)."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from facedemo.app.config import Config, ConfigError

# Secrets are read from these when not given on the command line, where every local user can see
# them (ps, /proc/PID/cmdline); on a terminal the user is asked instead.
TOKEN_ENV = "FACEDEMO_TOKEN"
NEW_KEY_ENV = "FACEDEMO_NEW_MASTER_KEY"
VISIBLE = "Other users of this machine can read command-line arguments (ps, /proc/PID/cmdline)"


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _secret(given: str | None, env_name: str, what: str) -> str:
    """A secret from its option, else from the environment variable `env_name`, else typed at a
    prompt when stdin is a terminal. Surrounding spaces and line breaks (a copied token) are dropped."""
    value = (given or os.environ.get(env_name) or "").strip()
    if value:
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(f"{what[:1].upper()}{what[1:]} (not shown): ").strip()
        if value:
            return value
        raise CliError(f"no {what} given")
    raise CliError(f"no {what}: set {env_name}, or run this on a terminal to be asked for it")


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str))


def _pipeline(config: Config):

    return config.pipeline()


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


def _service(config: Config):
    from facedemo.app.service import FaceDemo

    demo = FaceDemo(config)
    if demo.dev_mode:
        print(
            f"note: development mode: FACEDEMO_MASTER_KEY is not set, the key is in {config.data_dir}/master.key",
            file=sys.stderr,
        )
    return demo


def cmd_identify(args, config: Config) -> int:
    image = _load_image(args.image, config)
    if args.gallery:
        from facedemo.tools.dataset import gallery_from_folder

        pipeline = _pipeline(config)
        analysis = pipeline.analyse(image, gallery_from_folder(pipeline, args.gallery), threshold=args.threshold)
    else:
        demo = _service(config)
        try:
            analysis = demo.analyse(image, threshold=args.threshold)
        finally:
            demo.close()
    if args.json:
        # The CLI holds the vault (or the gallery folder) itself, so its output may name subject ids.
        _print_json({"faces": [fa.to_dict(include_subject_id=True) for fa in analysis.faces],
                     "model": analysis.model_id, "threshold": analysis.threshold,
                     "faces_skipped": analysis.faces_skipped})
    else:
        print("\n".join(_face_lines(analysis, with_identity=True)))
    return 0


def cmd_enroll(args, config: Config) -> int:
    demo = _service(config)
    try:
        if args.face is None:
            outcome = demo.enroll(args.name, [Path(p) for p in args.images], consent=args.consent)
        elif len(args.images) == 1:
            outcome = demo.enroll_face(args.name, Path(args.images[0]), args.consent, args.face)
        else:
            raise CliError("--face picks a face in one group photo: give exactly one photo with it")
    finally:
        demo.close()
    for v in outcome.verdicts:
        if not v.accepted:
            print(f"photo {args.images[v.index]} not used: {v.reason}", file=sys.stderr)
    r = outcome.receipt
    _print_json({
        "subject_id": r.subject_id,
        "deletion_token": r.deletion_token,
        "expires_at": r.expires_at.isoformat(),
        "templates_stored": r.templates_stored,
        "photos": [{"file": args.images[v.index], "accepted": v.accepted, "reason": v.reason}
                   for v in outcome.verdicts],
    })
    print("Keep the deletion token: it is shown only once and is needed to export or delete your data.",
          file=sys.stderr)
    return 0


def _with_vault(config: Config, action):
    from facedemo.app.service import open_vault

    vault = open_vault(config)
    try:
        return action(vault)
    finally:
        vault.close()


def _token(args, what: str = "deletion token") -> str:
    return _secret(args.token, TOKEN_ENV, what)


def cmd_forget(args, config: Config) -> int:
    token = _token(args, "deletion token (or the operator's admin token)")
    demo = _service(config)
    try:
        _print_json(demo.forget(args.subject_id, token))
    finally:
        demo.close()
    return 0


def cmd_export(args, config: Config) -> int:
    token = _token(args)
    _print_json(_with_vault(config, lambda v: v.export(args.subject_id, token)))
    return 0


def cmd_audit(args, config: Config) -> int:
    def report(vault):
        result = vault.audit_verify()
        if not args.verify:
            for entry in vault.audit_entries():
                print(json.dumps(entry, default=str))
        return result

    result = _with_vault(config, report)
    if result.ok:
        print(f"audit log verifies: {result.entries} entries, chain intact")
        return 0
    print(f"audit log BROKEN at entry {result.first_broken}: {result.reason}", file=sys.stderr)
    return 1


def cmd_rotate_key(args, config: Config) -> int:
    from privacy.keys import generate_master_key

    chosen = (args.new_key or os.environ.get(NEW_KEY_ENV) or "").strip()
    new_key = chosen or generate_master_key()
    rewrapped, dev_mode = _with_vault(config, lambda v: (v.rotate_master_key(new_key), v.dev_mode))
    print(f"re-wrapped the data keys of {rewrapped} subject(s) under the new master key", file=sys.stderr)
    if dev_mode:
        print(f"development mode: the new key replaced {config.data_dir}/master.key", file=sys.stderr)
        store = "nothing to store (master.key holds it)"
    else:
        store = "set FACEDEMO_MASTER_KEY to the new key wherever the app runs (a Space secret, say)"
    print(
        "Running app processes still hold the old key: they refuse recognition, enrolment and deletion "
        f"until restarted with the new one. Now: 1. {store}; 2. restart every app process using this vault; "
        "3. destroy the old key, and retire backups of the data directory made with it.",
        file=sys.stderr,
    )
    if not dev_mode and not chosen:
        print("the new key (shown once; the old key no longer opens the vault):", file=sys.stderr)
        print(new_key)
    return 0


def cmd_migrate_vault(args, config: Config) -> int:
    from privacy.transfer import migrate_sqlite_vault

    target = (args.to or "").strip()
    if not target.startswith(("postgresql://", "postgres://")):
        raise CliError("--to must be a postgresql:// URL (the database that will hold the vault)")
    report = migrate_sqlite_vault(config.data_dir, target)
    _print_json({"copied": report.target, "source": report.source, "audit_entries": report.audit_head_seq})
    print(
        f"copied the vault of {config.data_dir} (row counts checked: {report.target}). Now: 1. set "
        "FACEDEMO_DATABASE_URL to that database and the same FACEDEMO_MASTER_KEY on every replica; 2. once the "
        f"app works on it, delete {config.data_dir}/vault.sqlite3 and its backups: they still hold every subject, "
        "and erasures on the new vault do not reach them.",
        file=sys.stderr,
    )
    return 0


def cmd_evaluate(args, config: Config) -> int:
    from facedemo.tools.evaluate import evaluate, plot

    pipeline = _pipeline(config)
    models = args.models.split(",") if args.models else None
    if args.baseline and models is None:
        # The baseline is shown beside every pretrained CNN installed, the active one first.
        models = pipeline.installed_models()
    report, curves = evaluate(pipeline, args.dataset, models, unknowns=args.unknowns)
    if args.baseline:
        from facedemo.tools.baseline import evaluate_seed_cnn

        report["baseline"] = evaluate_seed_cnn(pipeline, args.dataset)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if args.plot:
        plot(curves, args.plot)
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
    if args.baseline:
        b = report["baseline"]
        test_loss = "n/a" if b["test_loss"] is None else f"{b['test_loss']:.3f}"
        print(
            f"{b['model']} (trained from scratch on {b['train_images']} enrolment photos, {b['epochs']} epochs): "
            f"train loss {b['final_train_loss']:.3f}, test loss {test_loss} (nats); "
            f"identification top-1 {b['top1']}/{b['probes']}"
        )
        top1 = [f"{m} {r['identification']['top1']}/{r['identification']['probes']}" for m, r in report["models"].items()]
        print(f"top-1 on the same probes: {', '.join(top1)}; {b['model']} {b['top1']}/{b['probes']}")
    return 0


def cmd_bench(args, config: Config) -> int:
    from facedemo.tools.bench import run

    report = run(_pipeline(config), repeat=args.repeat)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    _print_json(report)
    return 0


def _album_run(config: Config, work):
    """`work(albums)` on the vault's people; album refusals become one-line errors."""
    from facedemo.anonymise import AnonymiseError
    from facedemo.app.album_input import AlbumError
    from facedemo.app.albums import Albums

    demo = _service(config)
    albums = Albums(demo)
    try:
        return work(albums)
    except (AlbumError, AnonymiseError) as exc:
        raise CliError(str(exc)) from None
    finally:
        albums.close()
        demo.close()


def _album_progress(done: int, total: int, faces: int) -> None:
    # Only on a terminal: a log or a pipe gets the result, not a line per photo.
    if sys.stderr.isatty():
        print(f"\ranalysed {done}/{total} photos, {faces} faces", end="\n" if done == total else "",
              file=sys.stderr, flush=True)


def _refusal_lines(refused) -> None:
    for r in refused:
        print(f"file {r.name} not used: {r.reason}", file=sys.stderr)


def cmd_album(args, config: Config) -> int:
    if args.json and Path(args.json).is_dir():
        raise CliError(f"--json {args.json} is a folder; name the file to write")
    album = _album_run(config, lambda albums: albums.analyse(Path(args.source), progress=_album_progress))
    _refusal_lines(album.refused)
    # The CLI holds the vault itself, so its output may name subject ids (as identify --json does).
    report = album.to_dict(include_subject_id=True)
    if not args.json:
        _print_json(report)
        return 0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    # It names enrolled people and their subject ids: readable by this user only, as the vault is.
    with open(os.open(args.json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=2, ensure_ascii=False))
    os.chmod(args.json, 0o600)
    print(f"{len(album.photos)} photo(s), {album.faces} face(s), {len(album.people())} enrolled "
          f"{'person' if len(album.people()) == 1 else 'people'}, "
          f"{len(album.clusters)} unknown people; {len(album.refused)} file(s) not used")
    return 0


def cmd_anonymize(args, config: Config) -> int:
    import io
    import zipfile

    out = Path(args.out)
    # Never a file overwritten, never anonymised photos mixed with what the folder held before.
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{out} exists and is not an empty folder; name a new one (nothing is overwritten)")
    result = _album_run(config, lambda albums: albums.anonymise(Path(args.source), args.keep_cluster))
    _refusal_lines(result.album.refused)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(result.zip)) as archive:
        for name in archive.namelist():  # safe names: one level, no '..' (facedemo.album.safe_name)
            with open(out / name, "xb") as f:
                f.write(archive.read(name))
        _print_json(json.loads(archive.read("manifest.json")))
    print(f"wrote {len(result.photos)} photo(s) and manifest.json to {out}: {result.hidden} face(s) hidden",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    data_help = "where the encrypted vault lives (default: FACEDEMO_DATA_DIR or ./data)"
    parser = argparse.ArgumentParser(prog="python -m facedemo", description="Face detection vs recognition.")
    parser.add_argument("--data-dir", help=data_help)
    # Also accepted after the sub-command; SUPPRESS keeps a value given before it when not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add("detect", help="find faces: boxes, landmarks, confidence")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print {'faces': [...]} as JSON")
    p.set_defaults(run=cmd_detect)

    p = add("identify", help="find faces and say who they are")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gallery", help="person-per-folder photos to match against (default: the enrolled vault)")
    p.add_argument("--threshold", type=float, help="decision threshold in the model's distance unit")
    p.set_defaults(run=cmd_identify)

    p = add("enroll", help="enrol a person (needs --consent); prints subject id and deletion token")
    p.add_argument("name")
    p.add_argument("images", nargs="+")
    p.add_argument("--consent", action="store_true", help="the person agrees to have face templates stored")
    p.add_argument("--face", type=int, metavar="N",
                   help="enrol only face N (from 1, left to right, as `detect` numbers them) of one group photo")
    p.set_defaults(run=cmd_enroll)

    def token_help(whose: str) -> str:
        return f"{whose}. {VISIBLE}: prefer {TOKEN_ENV}, or leave it out to be asked for it on a terminal"

    token_note = f"The token is read from --token, else {TOKEN_ENV}, else asked for on a terminal."
    p = add("forget", help="delete a person's data; prints the erasure receipt", epilog=token_note)
    p.add_argument("subject_id")
    p.add_argument("--token", help=token_help("the deletion token, or the operator's admin token"))
    p.set_defaults(run=cmd_forget)

    p = add("export", help="a person's own stored data as JSON (their deletion token only)", epilog=token_note)
    p.add_argument("subject_id")
    p.add_argument("--token", help=token_help("the person's deletion token (the operator's token cannot export)"))
    p.set_defaults(run=cmd_export)

    p = add("audit", help="print the audit log, or check its chain with --verify")
    p.add_argument("--verify", action="store_true")
    p.set_defaults(run=cmd_audit)

    p = add(
        "rotate-key", help="re-wrap every subject key under a new master key",
        epilog="Running app processes refuse recognition, enrolment and deletion until restarted with the new key.",
    )
    p.add_argument("--new-key", help=(
        f"the new key, urlsafe base64 of 32 bytes (default: {NEW_KEY_ENV}, else a new random key, printed once). "
        f"{VISIBLE}: prefer {NEW_KEY_ENV}"))
    p.set_defaults(run=cmd_rotate_key)

    p = add(
        "migrate-vault", help="copy the SQLite vault of --data-dir into a PostgreSQL database (no decryption)",
        epilog="The target must hold no vault yet. Rows are copied as they are and the counts checked before the "
               "copy commits; stop the app first. The SQLite file is left in place: delete it once the new vault works.",
    )
    p.add_argument("--to", required=True, metavar="postgresql://...",
                   help=f"the database to copy into (its URL may carry a password: {VISIBLE}; prefer a ~/.pgpass "
                        "file or PGPASSWORD)")
    p.set_defaults(run=cmd_migrate_vault)

    p = add("evaluate", help="accuracy on a person-per-folder dataset")
    p.add_argument("dataset")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--plot", help="write ROC and distance histograms to this PNG")
    p.add_argument("--models", help="comma-separated model ids (default: the active model)")
    p.add_argument("--unknowns", help="person-per-folder photos of people who are not enrolled")
    p.add_argument("--baseline", choices=["seed-cnn"],
                   help="also train the seed article's small CNN from scratch on the enrolment photos and "
                        "report its loss and top-1 beside the pretrained CNNs'")
    p.set_defaults(run=cmd_evaluate)

    p = add("bench", help="speed benchmark (medians, milliseconds)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure")
    p.set_defaults(run=cmd_bench)

    p = add("album", help="every face of an album (folder or zip): who, and which unknown faces are one person")
    p.add_argument("source", metavar="DIR_OR_ZIP")
    p.add_argument("--json", metavar="OUT.json", help="write the report here (default: print it)")
    p.set_defaults(run=cmd_album)

    p = add("anonymize", help="hide every face of an album except enrolled people's (and --keep-cluster's)",
            epilog="Photos are re-encoded from their pixels (no EXIF, GPS or other metadata); a face the "
                   "detector misses is not hidden. OUT_DIR must be new or empty: nothing is overwritten.")
    p.add_argument("source", metavar="DIR_OR_ZIP")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="a new or empty folder for the photos")
    p.add_argument("--keep-cluster", type=int, metavar="N",
                   help="keep the faces of unknown person N sharp (the number `album` gives for the same input)")
    p.set_defaults(run=cmd_anonymize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from facedemo.app.runtime import tune_allocator

    tune_allocator()
    from facedemo.app.service import EnrolmentError
    from facedemo.embedding import ModelUnavailable
    from facedemo.images import ImageError
    from facedemo.tools.dataset import DatasetError
    from models.weights import WeightsError
    from privacy import VaultError

    try:
        config = Config.from_env()
        if args.data_dir:
            from dataclasses import replace

            config = replace(config, data_dir=Path(args.data_dir))
        return args.run(args, config)
    except (CliError, ConfigError, ImageError, DatasetError, ModelUnavailable, EnrolmentError, VaultError,
            WeightsError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # the reader stopped early (`| head`): not an error of ours
            # Python flushes stdout again at exit; pointing it at /dev/null keeps that quiet too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
