"""Entry point (Hugging Face Spaces runs this file): the facedemo web app, with its models loaded and warmed before it listens.

Settings come from the environment (facedemo.config; Space secrets land there too). Host and
port are Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from facedemo import ui
from facedemo.config import Config, ConfigError
from facedemo.service import FaceDemo
from privacy import VaultError

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
    except (ConfigError, VaultError) as exc:
        print(f"facedemo cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
