"""An anonymous client of the running app in raw HTTP: any value to any event, the page's private ones too.

gradio_client only offers the named API; an attacker is not so polite. `call` finds an event by its
function's name in the page's /config and runs it through the queue as the browser does.
"""
from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
import uuid
from pathlib import Path


class EventFailed(Exception):
    """The app answered the event with an error; the message is what the visitor would see."""


def _get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _post_json(url: str, payload: object, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def event_ids(base_url: str) -> dict[str, int]:
    """Function name (or API name) -> event id, from the page's config: private events included."""
    config = json.loads(_get(base_url + "config"))
    ids: dict[str, int] = {}
    for dependency in config["dependencies"]:
        name = dependency.get("api_name")
        if name:
            ids.setdefault(name, dependency["id"])
    return ids


def upload(base_url: str, path: Path | str) -> dict:
    """Upload a file as the browser does; the FileData dict an event takes."""
    boundary = uuid.uuid4().hex
    path = Path(path)
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        base_url + "gradio_api/upload", data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        stored = json.loads(response.read())[0]
    return {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def call(base_url: str, event: str, data: list, timeout: float = 120.0) -> list:
    """Run the event named `event` with raw `data` (JSON values; NaN and Infinity are sent as such);
    its output values.

    Raises EventFailed with the app's message when the event ends in an error.
    """
    session = secrets.token_hex(8)
    fn_index = event_ids(base_url)[event]
    _post_json(
        base_url + "gradio_api/queue/join",
        {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
    )
    with urllib.request.urlopen(base_url + f"gradio_api/queue/data?session_hash={session}", timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") != "process_completed":
                continue
            output = message.get("output") or {}
            if not message.get("success", False) or output.get("error") is not None:
                raise EventFailed(str(output.get("error")))
            return output["data"]
    raise EventFailed("the stream ended without a result")

