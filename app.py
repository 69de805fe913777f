"""Entry point (Hugging Face Spaces runs this file): the facedemo web app, with its models loaded and warmed before it listens.

Settings come from the environment (facedemo.config; Space secrets land there too). Host and
port are Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

UPLOADS_IN_RAM_MIN_FREE = 512 * 1024 * 1024


def keep_uploads_in_memory() -> None:
    """Point Gradio's upload folder at RAM-backed /dev/shm when it has room.

    Gradio saves every upload to GRADIO_TEMP_DIR before a handler sees it; in RAM, photos never
    reach a disk. Must run before gradio is imported (it reads the variable at import time).
    An operator's own GRADIO_TEMP_DIR is kept.
    """
    if "GRADIO_TEMP_DIR" in os.environ:
        return
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        return
    if free >= UPLOADS_IN_RAM_MIN_FREE and os.access(shm, os.W_OK):
        os.environ["GRADIO_TEMP_DIR"] = str(shm / "facedemo-uploads")


keep_uploads_in_memory()

import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

from facedemo import ui  # noqa: E402
from facedemo.config import Config, ConfigError  # noqa: E402
from facedemo.recognition import ModelUnavailable  # noqa: E402
from facedemo.runtime import tune_allocator  # noqa: E402
from facedemo.service import FaceDemo  # noqa: E402
from models.weights import WeightsError  # noqa: E402
from privacy import VaultError  # noqa: E402

# Two cores: two jobs at a time lets one photo be decoded or drawn while the other is in a network
# (the networks themselves run one call at a time); more would only queue inside the process.
CONCURRENCY = 2
# Beyond this many waiting jobs a visitor is told the app is busy rather than left waiting minutes.
QUEUE_SIZE = 32


def create(config: Config, examples_dir: Path) -> tuple[gr.Blocks, ui.Handlers]:
    """The page with its FaceDemo: models loaded and run once, expired enrolments purged hourly,
    example photos written to `examples_dir`."""
    demo = FaceDemo(config)
    try:
        demo.warm_up()
        demo.start_retention_timer()
        handlers = ui.Handlers(demo, upload_dir=Path(get_upload_folder()))
        page = ui.build(handlers, ui.write_examples(examples_dir))
    except BaseException:
        demo.close()
        raise
    page.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return page, handlers


def main() -> int:
    started = time.perf_counter()
    tune_allocator()
    # Stopping the container (SIGTERM) takes the same clean way out as Ctrl-C: gradio closes its server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        config = Config.from_env()
        with tempfile.TemporaryDirectory(prefix="facedemo-examples-") as examples_dir:
            page, handlers = create(config, Path(examples_dir))
            print(f"facedemo: models warmed in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                page.launch(max_file_size=config.max_image_bytes)
            finally:
                handlers.close()
                handlers.demo.close()
    except (ConfigError, VaultError, WeightsError, ModelUnavailable) as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
