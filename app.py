"""Entry point (Hugging Face Spaces runs this file): the facedemo web app, with its models loaded and warmed before it listens.

Settings come from the environment (facedemo.app.config; Space secrets land there too). Host and
port are Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT. Uploads go to a folder of this
instance's own (facedemo.app.uploads), inside GRADIO_TEMP_DIR when the operator sets it.
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from facedemo.app.runtime import release_memory_when_idle, tune_allocator
from facedemo.app.uploads import UploadFolder, UploadFolderError, UploadGuard

# Two cores: two jobs at a time lets one photo be decoded or drawn while the other is in a network
# (the networks themselves run one call at a time); more would only queue inside the process.
CONCURRENCY = 2
# Beyond this many waiting jobs a visitor is told the app is busy rather than left waiting minutes.
QUEUE_SIZE = 32
# An upload that would leave less than this free where uploads are kept (RAM, usually) is refused
# with 507: an anonymous client cannot fill the machine's memory.
MIN_FREE_BYTES = 256 * 1024 * 1024
# Multipart framing around the files of one upload request.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024


def serve(uploads: UploadFolder, started: float) -> int:
    """Load the models, build the page and serve it until stopped (Ctrl-C, SIGTERM)."""
    from facedemo.app.config import Config, ConfigError
    from facedemo.embedding import ModelUnavailable
    from models.weights import WeightsError
    from privacy import VaultError

    try:
        config = Config.from_env()
        pipeline = config.pipeline()
    except ConfigError as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    # The detector and the active model load while gradio is imported: on a cold start both mostly
    # wait for the disk, so they overlap (measured 5.4-5.9 s instead of 6.3-11.7 s after dropping the
    # page cache). Any other model loads after the app listens (see below).
    warming = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-up").submit(pipeline.warm_up)
    # Gradio reads GRADIO_TEMP_DIR when it is imported: only now, once it names our folder.
    from starlette.middleware import Middleware

    from facedemo.app import examples, ui
    from facedemo.app.handlers import Handlers
    from facedemo.app.service import FaceDemo

    try:
        warming.result()
        demo = FaceDemo(config, pipeline=pipeline)
    except (ConfigError, VaultError, WeightsError, ModelUnavailable) as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="facedemo-examples-") as examples_dir:
            demo.start_retention_timer()
            handlers = Handlers(demo, uploads)
            page = ui.build(handlers, examples.write(Path(examples_dir)))
            page.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
            # What building the page put in the folder (gradio's copies of the example photos) stays.
            uploads.keep_present()
            uploads.start_sweeper()
            print(f"facedemo: models warmed in {time.perf_counter() - started:.1f} s", flush=True)
            release_memory_when_idle()
            # Enrolment stores templates of every installed model: the others warm up in the
            # background (an enrolment arriving first waits for them; recognition does not).
            threading.Thread(target=warm_the_others, args=(demo,), name="warm-up", daemon=True).start()
            guard = Middleware(
                UploadGuard, folder=uploads, min_free_bytes=MIN_FREE_BYTES,
                max_request_bytes=config.max_image_bytes * config.max_enrol_photos + UPLOAD_OVERHEAD_BYTES,
            )
            page.launch(max_file_size=config.max_image_bytes, app_kwargs={"middleware": [guard]}, **ui.launch_options())
    except (VaultError, WeightsError, ModelUnavailable) as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def warm_the_others(demo) -> None:
    """Load every installed model; a broken one is reported now, and again to each enrolment."""
    from facedemo.embedding import ModelUnavailable
    from models.weights import WeightsError

    try:
        demo.warm_up()
    except (WeightsError, ModelUnavailable) as exc:
        print(f"facedemo: enrolment will fail until this is mended: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    started = time.perf_counter()
    tune_allocator()
    # Everything the app writes (uploads, the images gradio renders for the browser, the vault) is
    # for this user only: files 0600, folders 0700.
    os.umask(0o077)
    # Stopping the container (SIGTERM) takes the same clean way out as Ctrl-C: gradio closes its server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        uploads = UploadFolder.create(os.environ.get("GRADIO_TEMP_DIR"))
    except UploadFolderError as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        os.environ["GRADIO_TEMP_DIR"] = str(uploads.path)
        where = "RAM" if uploads.in_ram else "disk"
        print(f"facedemo: uploads in {uploads.path} ({where})", flush=True)
        if uploads.removed_stale:
            print(f"facedemo: removed {len(uploads.removed_stale)} upload folder(s) left by instances "
                  "that stopped without cleaning up", flush=True)
        return serve(uploads, started)
    except KeyboardInterrupt:
        return 0
    finally:
        uploads.close()


if __name__ == "__main__":
    sys.exit(main())
