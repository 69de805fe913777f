"""README.md's Python code blocks run as written, and print what their comments say they print.

A block that talks to the running app (gradio_client) runs against the session's app, whose URL
replaces the README's http://127.0.0.1:7860/, in a folder holding the photos it names. Every
other block runs with the repository root as working directory (its photos are in
tests/data/faces-pd), on the session's pipelines.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facedemo.api
from models.registry import DEFAULT_MODEL
from tests.engine import augment, compose

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LOCAL_APP = "http://127.0.0.1:7860/"


def python_blocks() -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of each ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)]


def talks_to_the_app(code: str) -> bool:
    return "gradio_client" in code


BLOCKS = [
    pytest.param(line, code, id=f"README.md:{line}",
                 marks=pytest.mark.e2e if talks_to_the_app(code) else pytest.mark.slow)
    for line, code in python_blocks()
]


def promised(code: str) -> dict[int, object]:
    """line -> the value a `print(...)  # VALUE` line promises (a Python literal; "e.g." before it allowed)."""
    values = {}
    for number, line in enumerate(code.splitlines(), 1):
        if not line.lstrip().startswith("print(") or "  # " not in line:
            continue
        comment = line.split("  # ", 1)[1].strip().removeprefix("e.g.").strip()
        try:
            values[number] = ast.literal_eval(comment)
        except (ValueError, SyntaxError):
            continue  # words, not a value
    return values


def run(code: str, name: str) -> dict[int, tuple]:
    """Execute `code` as a script; line -> the arguments of the print() on that line."""
    printed: dict[int, tuple] = {}

    def recording_print(*args, **kwargs):
        printed[sys._getframe(1).f_lineno] = args
        print(*args, **kwargs)

    exec(compile(code, name, "exec"), {"__name__": "__main__", "print": recording_print})
    return printed


def test_the_readme_has_python_examples_for_the_api_and_for_the_running_app():
    kinds = [talks_to_the_app(code) for _, code in python_blocks()]
    assert True in kinds and False in kinds


@pytest.mark.parametrize("line, code", BLOCKS)
def test_readme_python_block_runs_and_prints_what_it_says(line, code, request, monkeypatch, tmp_path):
    if talks_to_the_app(code):
        app = request.getfixturevalue("shared_app")
        assert code.count(LOCAL_APP) == 1
        code = code.replace(LOCAL_APP, app.url)
        astronaut, grace_hopper = request.getfixturevalue("astronaut"), request.getfixturevalue("grace_hopper")
        photos = {"ada1.jpg": astronaut, "ada2.jpg": augment(astronaut), "group.jpg": compose(astronaut, grace_hopper)}
        for file_name, pixels in photos.items():
            Image.fromarray(np.asarray(pixels)).save(tmp_path / file_name, quality=90)
        monkeypatch.chdir(tmp_path)
    else:
        pipelines = request.getfixturevalue("pipelines")
        monkeypatch.setattr(facedemo.api, "pipeline", lambda model=DEFAULT_MODEL: pipelines[model])
        monkeypatch.chdir(ROOT)
    printed = run(code, f"README.md block at line {line}")
    for number, value in promised(code).items():
        assert printed.get(number) == (value,), f"README.md line {line + number}: printed {printed.get(number)}"
