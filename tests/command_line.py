"""`python -m facedemo ...` run inside the test process: facedemo.app.cli.main with its own argv, stdout,
stderr and environment, on the session's pipelines, so no test pays for a new interpreter or new models."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pytest

from facedemo.app import cli
from facedemo.app.config import Config
from models.registry import MODELS


@dataclass(frozen=True)
class Ran:
    """What a user of the command would see: the exit code, stdout and stderr."""

    code: int
    out: str
    err: str


# Settings that never reach the pipeline. Any other setting (threshold, max_faces, one added later)
# left at its default, and a known model: then the session's pipeline of that model is the same.
NOT_THE_PIPELINES = {"data_dir", "master_key", "admin_token", "retention_days", "key_rotation_days",
                     "max_image_bytes", "max_image_pixels", "max_enrol_photos", "database_url",
                     "album_max_photos", "album_max_bytes", "album_max_pixels", "album_max_seconds",
                     "album_max_ratio"}


def has_default_pipeline(config: Config) -> bool:
    """Whether `config.pipeline()` would build a pipeline with every default but the model."""
    defaults = Config()
    return config.model in MODELS and all(
        getattr(config, f.name) == getattr(defaults, f.name)
        for f in dataclasses.fields(Config) if f.name not in NOT_THE_PIPELINES | {"model"}
    )


@contextlib.contextmanager
def shared_pipelines(pipelines: Mapping) -> Iterator[None]:
    """While inside: `Config.pipeline()` (how the CLI and FaceDemo build theirs) answers with
    `pipelines[model]` when the settings are a known model's defaults; other settings build as usual."""
    build = Config.pipeline

    def pipeline(config: Config):
        return pipelines[config.model] if has_default_pipeline(config) else build(config)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, "pipeline", pipeline)
        yield


def run(args: Sequence, pipelines: Mapping | None = None, env: Mapping[str, str | None] | None = None) -> Ran:
    """`python -m facedemo *args` in this process. env: variables to set (None: unset) for the run.

    It exits as a process would: SystemExit gives the exit code, and an exception escaping main
    is printed to stderr as the interpreter prints it (a traceback) with exit code 1.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in (env or {}).items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        if pipelines is not None:
            stack.enter_context(shared_pipelines(pipelines))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            traceback.print_exc()
            code = 1
    return Ran(code, out.getvalue(), err.getvalue())
