"""The page in a real browser: click on "Detect and recognize" to the result shown, and the server's memory.

    python -m facedemo.tools.bench_page [--rounds 5] [--json OUT.json]
    python -m facedemo.tools.bench_page --sessions 4 --analyses 16 [--linger 5] [--json OUT.json]
    either with [--app-env NAME=VALUE ...] (extra settings for `python app.py`, e.g. MALLOC_ARENA_MAX=2)
    and [--versus DIR[,NAME=VALUE...] ...] (another checkout's app.py, or this one's with other
    settings, measured beside this one: click mode alternates the apps trial by trial and reports
    each one's click-to-result as a ratio to this checkout's)

Starts `python app.py` (facedemo.tools.launch, fresh vault, gradio's own profiling on), enrols one
person through the API so that every face is also embedded and matched, and drives the page in
Debian's chromium (headless, through Playwright).

Click mode (the default): for each photo (three group photos from tests/data/faces-pd/_groups
brought to 1920 x 1080, the benchmark's 1920 x 1080 photo with 8 faces, and a 512 x 512 portrait),
`--rounds` times in turn: sets the file, waits for its upload, clicks, and waits until both result
images are loaded, decoded and painted and the table shows the faces the summary announces. After
each click the same photo is analysed in this process (FaceDemo.load_image + FaceDemo.analyse, what
the handler calls, against the same one enrolled person) for the ratio click-to-result /
server-side analysis (the goal is <= 1.5). The time is broken down with the page's clocks (the
click, the queue/join request, the SSE messages, the images' resource timing) and the server's
(gradio's GRADIO_PROFILING trace of the event: queue wait, preprocess, handler, postprocess, and in
it the encoding of the two output images), on one clock: both run on this machine. In this process
the drawing and the encoding of the two images in WebP (gradio's default), PNG and JPEG are timed
too, for what a change of format would save. The CPU time the server and the browser (with
Playwright's driver) use from the click to the result is read from /proc: on a small machine the
browser takes CPU from the server, which a visitor's browser, elsewhere, does not. "alone" is
click-to-result less what the server's handler took beyond the same handler here, alone (an
estimate of the figure with the browser elsewhere), and its ratio to the analysis.

Memory mode (--sessions N): N browser contexts one after the other, each running --analyses
photos (varied: rescaled, cropped, mirrored), left open; the server's VmRSS / VmHWM / RssAnon and
threads (/proc/PID/status) before, after each session, at the end, and after all contexts are
closed and --linger seconds have passed.

Figures are medians; on a shared machine compare the ratios measured in one run (--versus). A
benchmark, not a test: the figures depend on the machine. A default run takes about two minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facedemo.tools.launch import CHROMIUM, CHROMIUM_ARGS, running_app

VIEWPORT = {"width": 1280, "height": 900}
WAIT_MS = 60_000
GROUPS = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces-pd" / "_groups"
FULL_HD = (1920, 1080)
# The person enrolled before the run, so that recognition embeds and matches every face.
ENROLLED = "Grace Hopper"

# Installed in the page before its own scripts: the time of each click on the button, of each
# fetch the gradio client makes, of every message on the queue's event stream (read from a copy of
# the stream, the client gets the original), and `watch`, which resolves once a new result is
# shown: both output images replaced (src differs) and loaded (their load events), the table holding
# as many rows as the summary says faces were found, the images decoded and the next frame painted.
PAGE_SCRIPT = r"""
(() => {
  const B = window.__bench = {clicks: [], fetches: [], msgs: [], session: null};
  const originalFetch = window.fetch;
  window.fetch = async function (input, init) {
    const url = typeof input === "string" ? input : (input && input.url) || String(input);
    const started = performance.now();
    const response = await originalFetch.apply(this, arguments);
    B.fetches.push({url, start: started, headers: performance.now()});
    if (url.includes("/queue/data") && response.body) {
      const match = url.match(/session_hash=([^&]+)/);
      if (match) B.session = match[1];
      const [mine, theirs] = response.body.tee();
      (async () => {
        const reader = mine.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const {done, value} = await reader.read();
          if (done) break;
          const now = performance.now();
          buffer += decoder.decode(value, {stream: true});
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const chunk = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const msg = chunk.match(/"msg":\s*"([a-z_]+)"/);
            const id = chunk.match(/"event_id":\s*"([^"]+)"/);
            B.msgs.push({t: now, msg: msg && msg[1], event_id: id && id[1], bytes: chunk.length});
          }
        }
      })();
      return new Response(theirs, {status: response.status, statusText: response.statusText, headers: response.headers});
    }
    return response;
  };
  B.loads = {};
  document.addEventListener("load", (event) => {
    if (event.target.tagName === "IMG") B.loads[event.target.src] = performance.now();
  }, true);
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("#analyse")) B.clicks.push(performance.now());
  }, true);
  B.images = () => ["#detection-image img", "#recognition-image img"].map((s) => document.querySelector(s));
  B.srcs = () => B.images().map((img) => (img ? img.src : null));
  B.announced = () => {
    const text = (document.querySelector("#summary") || {}).innerText || "";
    const found = text.match(/(\d+) faces? found/);
    return found ? Number(found[1]) : (/No face found/.test(text) ? 0 : -1);
  };
  B.rows = () => document.querySelectorAll("#faces-table [role=row][data-index]").length;
  // Checked at every change of the page and every image load, not by polling: a loop of animation
  // frames would keep the browser drawing, taking CPU from the server on a small machine.
  B.watch = (previous, timeoutMs) => new Promise((resolve) => {
    const began = performance.now();
    const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
    let finished = false;
    const observer = new MutationObserver(() => check());
    const onLoad = () => check();
    const stop = () => {
      finished = true;
      observer.disconnect();
      document.removeEventListener("load", onLoad, true);
      clearTimeout(timer);
    };
    const timer = setTimeout(() => {
      if (!finished) { stop(); resolve({error: "timeout", srcs: B.srcs(), rows: B.rows()}); }
    }, timeoutMs);
    const check = () => {
      if (finished) return;
      const images = B.images();
      const shown = images.every((img, k) => img && img.src && img.src !== previous[k] && img.complete && img.naturalWidth > 0);
      const announced = B.announced();
      if (!(shown && announced >= 0 && B.rows() === announced)) return;
      stop();
      const seen = performance.now();
      const loads = images.map((img) => B.loads[img.src]).filter((t) => t !== undefined && t >= began);
      const loaded = loads.length === images.length ? Math.max(...loads) : seen;
      Promise.all(images.map((img) => img.decode().catch(() => null))).then(async () => {
        const decoded = performance.now();
        await frame();  // the next frame is painted before this timeout runs
        await new Promise((r) => setTimeout(r, 0));
        resolve({loaded, seen, decoded, painted: performance.now(), srcs: B.srcs(), faces: announced,
                 sizes: images.map((img) => [img.naturalWidth, img.naturalHeight])});
      });
    };
    observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    document.addEventListener("load", onLoad, true);
    check();
  });
})();
"""


# --------------------------------------------------------------------------- pure helpers


def full_hd(image: Image.Image, size: tuple[int, int] = FULL_HD) -> Image.Image:
    """The photo scaled to cover `size` (width, height) and cropped to it around the centre."""
    width, height = size
    scale = max(width / image.width, height / image.height)
    scaled = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def proc_status(text: str) -> dict[str, float]:
    """From /proc/PID/status: VmRSS, VmHWM, RssAnon, RssFile in MiB and Threads."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile") and value.strip().endswith("kB"):
            out[f"{key}_mb"] = round(int(value.split()[0]) / 1024, 1)
        elif key == "Threads":
            out["threads"] = int(value.split()[0])
    return out


def stat_cpu_ticks(text: str) -> tuple[int, int]:
    """From /proc/PID/stat: (parent pid, utime + stime in clock ticks). The command name, in
    parentheses, may hold spaces and parentheses itself: fields are counted after the last ')'."""
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def descendants(parents: dict[int, int], root: int) -> set[int]:
    """Every process below `root` in a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def breakdown(trial: dict) -> dict[str, float | None]:
    """Where the time from the click to the result went (ms), from one trial's page and server clocks.

    trial: `click` (page ms), `join` (the queue/join fetch: start), `msgs` (SSE messages: t, msg),
    `images` (resource timing of the two output images: start, end), `watch` (loaded, painted), and
    `trace` (gradio's profiling trace: epoch `timestamp` s, queue_wait/preprocess/fn_call/
    postprocess/total/postprocess_save_pil_to_cache ms) with `epoch_offset` (page ms + offset = epoch ms).
    Phases that cannot be told (no trace, no image timing) are None.
    """
    click = trial["click"]
    watch = trial["watch"]
    out: dict[str, float | None] = {"click_to_result": watch["painted"] - click}
    join = trial.get("join")
    completed = next((m["t"] for m in trial.get("msgs", []) if m["msg"] == "process_completed"), None)
    images = trial.get("images") or []
    image_start = min((i["start"] for i in images), default=None)
    image_end = max((i["end"] for i in images), default=None)
    trace = trial.get("trace")
    out["page_to_join"] = None if join is None else join - click
    if trace is not None:
        start = trace["timestamp"] * 1000 - trial["epoch_offset"]  # page ms when the server began the event
        end = start + trace["total_ms"]
        encode = trace.get("postprocess_save_pil_to_cache_ms", 0.0)
        out["join_to_server"] = None if join is None else start - join  # HTTP, queue (wait included)
        out["queue_wait"] = trace["queue_wait_ms"]
        out["server_preprocess"] = trace["preprocess_ms"]
        out["server_handler"] = trace["fn_call_ms"]
        out["server_encode_images"] = encode
        out["server_postprocess_other"] = trace["postprocess_ms"] - encode
        out["server_total"] = trace["total_ms"]
        out["server_to_page"] = None if completed is None else completed - end  # SSE delivery
    else:
        for key in ("join_to_server", "queue_wait", "server_preprocess", "server_handler", "server_encode_images",
                    "server_postprocess_other", "server_total", "server_to_page"):
            out[key] = None
    out["page_update"] = None if completed is None or image_start is None else image_start - completed
    out["image_transfer"] = None if image_start is None else image_end - image_start
    out["image_load_event"] = None if image_end is None else watch["loaded"] - image_end
    out["decode_and_paint"] = watch["painted"] - watch["loaded"]
    return {k: (None if v is None else round(v, 1)) for k, v in out.items()}


PHASES = ("page_to_join", "join_to_server", "server_preprocess", "server_handler", "server_encode_images",
          "server_postprocess_other", "server_to_page", "page_update", "image_transfer", "image_load_event",
          "decode_and_paint")


def summarise(trials: Sequence[dict]) -> dict:
    """Per photo: medians of click-to-result, in-process analysis, their paired ratio, upload and each phase."""
    by_photo: dict[str, list[dict]] = {}
    for t in trials:
        by_photo.setdefault(t["photo"], []).append(t)
    out = {}
    for name, chosen in by_photo.items():
        ok = [t for t in chosen if "phases" in t]
        row = {
            "size": chosen[0]["size"],
            "faces": chosen[0].get("faces"),
            "trials": len(ok),
            "errors": len(chosen) - len(ok),
            "click_to_result_ms": median(t["phases"]["click_to_result"] for t in ok),
            "click_to_result_range_ms": [round(min(t["phases"]["click_to_result"] for t in ok), 1),
                                         round(max(t["phases"]["click_to_result"] for t in ok), 1)] if ok else None,
            "analysis_ms": median(t["analysis_ms"] for t in ok),
            "ratio": round(statistics.median(t["phases"]["click_to_result"] / t["analysis_ms"] for t in ok), 2) if ok else None,
            "click_to_result_uncontended_ms": median(t["phases"].get("click_to_result_uncontended") for t in ok),
            "ratio_uncontended": _median_ratio((t["phases"].get("click_to_result_uncontended"), t["analysis_ms"])
                                               for t in ok),
            "upload_ms": median(t.get("upload_ms") for t in chosen),
            "phases_ms": {p: median(t["phases"].get(p) for t in ok) for p in PHASES},
            "in_process_ms": {k: median(t["in_process"].get(k) for t in ok) for k in ok[0]["in_process"]} if ok else {},
            "image_bytes": median(sum(i.get("bytes", 0) for i in t.get("images", [])) for t in ok),
            # CPU time used from the click to the result: by the server, and by the browser (with
            # Playwright's driver), which shares this machine's cores with the server
            "server_cpu_ms": median(t["cpu_ms"]["server"] for t in ok),
            "browser_cpu_ms": median(t["cpu_ms"]["browser"] for t in ok),
        }
        out[name] = row
    return out


def _median_ratio(pairs: Iterable[tuple[float | None, float]]) -> float | None:
    ratios = [a / b for a, b in pairs if a is not None and b]
    return round(statistics.median(ratios), 2) if ratios else None


def table(summary: dict) -> str:
    """The summary as two plain-text tables: totals, then the phases."""
    lines = [f"{'photo':<28} {'size':>10} {'faces':>5} {'click->result':>14} {'range':>13} {'analysis':>9} "
             f"{'ratio':>6} {'upload':>7} {'images kB':>9} {'srv cpu':>8} {'brw cpu':>8} {'alone':>6} {'ratio':>6}"]
    for name, r in summary.items():
        rng = "-" if not r["click_to_result_range_ms"] else "{:.0f}-{:.0f}".format(*r["click_to_result_range_ms"])
        lines.append(
            f"{name:<28} {r['size']:>10} {r['faces'] if r['faces'] is not None else '-':>5} "
            f"{_ms(r['click_to_result_ms']):>14} {rng:>13} {_ms(r['analysis_ms']):>9} "
            f"{r['ratio'] if r['ratio'] is not None else '-':>6} {_ms(r['upload_ms']):>7} "
            f"{(r['image_bytes'] or 0) / 1024:>9.0f} {_ms(r['server_cpu_ms']):>8} {_ms(r['browser_cpu_ms']):>8} "
            f"{_ms(r['click_to_result_uncontended_ms']):>6} {r['ratio_uncontended'] or '-':>6}"
        )
    lines.append("")
    short = {"page_to_join": "page>join", "join_to_server": "join>srv", "server_preprocess": "pre",
             "server_handler": "handler", "server_encode_images": "encode", "server_postprocess_other": "post",
             "server_to_page": "srv>page", "page_update": "update", "image_transfer": "transfer",
             "image_load_event": "onload", "decode_and_paint": "dec+paint"}
    lines.append(f"{'phases (median ms)':<28} " + " ".join(f"{short[p]:>9}" for p in PHASES))
    for name, r in summary.items():
        lines.append(f"{name:<28} " + " ".join(f"{_ms(r['phases_ms'][p]):>9}" for p in PHASES))
    lines.append("")
    keys = list(next(iter(summary.values()))["in_process_ms"]) if summary else []
    lines.append(f"{'in this process (median ms)':<28} " + " ".join(f"{k.removesuffix('_ms'):>11}" for k in keys))
    for name, r in summary.items():
        lines.append(f"{name:<28} " + " ".join(f"{_ms(r['in_process_ms'][k]):>11}" for k in keys))
    return "\n".join(lines)


def _size(path: Path) -> str:
    with Image.open(path) as image:
        return f"{image.width}x{image.height}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# --------------------------------------------------------------------------- photos


def click_photos(folder: Path) -> dict[str, Path]:
    """The photos of click mode, written as JPEG (quality 92) into `folder`: name -> path."""
    from facedemo.app import examples
    from facedemo.tools.bench import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos: dict[str, Image.Image] = {}
    for path in sorted(GROUPS.glob("*.jpg")):
        with Image.open(path) as source:
            photos[f"{path.stem[:18]}-1080p"] = full_hd(source.convert("RGB"))
    photos["synthetic-8faces-1080p"] = Image.fromarray(sample_photos()["1080p"])
    photos["astronaut-512"] = Image.fromarray(examples.astronaut())
    paths = {}
    for name, image in photos.items():
        paths[name] = folder / f"{name}.jpg"
        image.save(paths[name], quality=92)
    return paths


def unique_copy(photo: Path, folder: Path, number: int) -> Path:
    """A copy of `photo` with a 16 x 16 corner patch of its own colour (JPEG, quality 92): its upload and
    its result images are new bytes, so neither gradio nor the browser can serve them from a cache."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as source:
        image = source.convert("RGB")
    image.paste((number * 37 % 256, number * 91 % 256, number * 151 % 256), (0, 0, 16, 16))
    path = folder / f"{photo.stem}-{number}.jpg"
    image.save(path, quality=92)
    return path


def varied_photo_files(folder: Path, count: int) -> list[Path]:
    """`count` different photos (facedemo.tools.bench.varied_photos) as JPEG files, every third at 1920 x 1080."""
    from facedemo.tools.bench import varied_photos

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(varied_photos(count)):
        image = Image.fromarray(pixels)
        if i % 3 == 0:
            image = full_hd(image)
        path = folder / f"varied-{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- the page


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks) of every process readable in /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = stat_cpu_ticks((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_snapshot(server_pids: Sequence[int]) -> dict[str, float]:
    """CPU time (ms) used so far by the servers and by the browser (every other process this one started)."""
    table = _process_cpu()
    mine = descendants({pid: parent for pid, (parent, _) in table.items()}, os.getpid())
    servers = set(server_pids)
    for pid in server_pids:
        servers |= descendants({p: parent for p, (parent, _) in table.items()}, pid)
    return {"server": sum(table[p][1] for p in servers if p in table) * _TICK_MS,
            "browser": sum(table[p][1] for p in mine - servers) * _TICK_MS}


class PageDriver:
    """One browser context on the app's page, analysing photos through the page."""

    def __init__(self, browser, url: str, server_pids: Sequence[int] = ()) -> None:
        self.server_pids = list(server_pids)  # all apps: the browser's CPU is what no server used
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script(PAGE_SCRIPT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.goto(url)
        self.page.wait_for_selector("#analyse")
        self.epoch_offset = self.page.evaluate("performance.timeOrigin")  # page ms + this = epoch ms

    def upload(self, photo: Path) -> float:
        """Set the file and wait until the page has uploaded it: ms from setting it."""
        started = self.page.evaluate("performance.now()")
        self.page.locator("#photo input[type=file]").set_input_files(str(photo))
        done = self.page.wait_for_function(
            """(started) => {
                const ups = performance.getEntriesByType('resource').filter((e) =>
                    /\\/gradio_api\\/upload(\\?|$)/.test(e.name) && e.startTime >= started && e.responseEnd > 0);
                return ups.length ? ups[ups.length - 1].responseEnd : null;
            }""",
            arg=started, polling=10,
        ).json_value()
        self.page.wait_for_selector("#photo img")
        return done - started

    def analyse(self, photo: Path, settle_s: float = 0.3) -> dict:
        """Upload `photo`, click and wait for the result: the trial's raw timings (page ms)."""
        upload_ms = self.upload(photo)
        time.sleep(settle_s)  # the click is measured apart from the upload's aftermath
        previous = self.page.evaluate("window.__bench.srcs()")
        self.page.evaluate("performance.clearResourceTimings(); window.__bench.clicks = []")
        self.page.evaluate("(args) => { window.__bench.pending = window.__bench.watch(args[0], args[1]); }",
                           [previous, WAIT_MS])
        cpu_before = cpu_snapshot(self.server_pids)
        self.page.click("#analyse")
        watch = self.page.evaluate("window.__bench.pending")
        cpu_after = cpu_snapshot(self.server_pids)
        raw = self.page.evaluate(
            """() => {
                const B = window.__bench;
                const click = B.clicks[B.clicks.length - 1];
                return {click, session: B.session,
                        fetches: B.fetches.filter((f) => f.start >= click - 1),
                        msgs: B.msgs.filter((m) => m.t >= click - 1),
                        resources: performance.getEntriesByType('resource').map((e) => ({
                            name: e.name, start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize}))};
            }"""
        )
        raw["watch"] = watch
        raw["cpu_ms"] = {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_before}
        raw["upload_ms"] = round(upload_ms, 1)
        raw["epoch_offset"] = self.epoch_offset
        if "error" in watch:
            return raw
        join = next((f for f in raw["fetches"] if "/queue/join" in f["url"]), None)
        raw["join"] = None if join is None else join["start"]
        srcs = set(watch["srcs"])
        raw["images"] = [r for r in raw["resources"] if r["name"] in srcs]
        return raw

    def close(self) -> None:
        self.context.close()


def server_trace(url: str, session: str | None, after_epoch_s: float) -> dict | None:
    """gradio's profiling trace of the page's last "analyse" event (GRADIO_PROFILING=1), or None."""
    try:
        with urllib.request.urlopen(f"{url}gradio_api/profiling/traces?last_n=20", timeout=10) as response:
            traces = json.loads(response.read())
    except OSError:
        return None
    chosen = [t for t in traces if t.get("fn_name") == "analyse" and t.get("timestamp", 0) >= after_epoch_s
              and (session is None or t.get("session_hash") == session)]
    return chosen[-1] if chosen else None


# --------------------------------------------------------------------------- in this process


class InProcess:
    """The server's work on the same photo, here: FaceDemo with its own vault, the same person enrolled."""

    def __init__(self, workdir: Path, enrol_photo: Path | None) -> None:
        from facedemo.app.config import Config
        from facedemo.app.runtime import tune_allocator
        from facedemo.app.service import FaceDemo
        from privacy.keys import generate_master_key

        tune_allocator()  # as app.py does
        env = {**os.environ, "FACEDEMO_DATA_DIR": str(workdir / "in-process-data"),
               "FACEDEMO_MASTER_KEY": generate_master_key()}
        self.demo = FaceDemo(Config.from_env(env))
        self.demo.warm_up()
        if enrol_photo is not None:
            self.demo.enroll(ENROLLED, [str(enrol_photo)], consent=True)

    def measure(self, photo: Path) -> dict:
        """ms of: the analysis (load + analyse, the figure the ratio divides by), fit + drawing both
        images, the whole handler (Handlers.analyse: all of that, as the server runs it), and encoding
        both images as gradio does in WebP (its default), PNG and JPEG, with their sizes (kB)."""
        from facedemo import render
        from facedemo.app.handlers import Handlers

        started = time.perf_counter()
        image = self.demo.load_image(str(photo))
        analysis = self.demo.analyse(image)
        analysed = time.perf_counter()
        shown = render.fit(image)
        size = (analysis.width, analysis.height)
        pictures = [
            render.draw_detection(shown, [fa.face for fa in analysis.faces], source_size=size),
            render.draw_recognition(shown, analysis.faces, source_size=size),
        ]
        drawn = time.perf_counter()
        out = {"analysis_ms": (analysed - started) * 1000, "draw_ms": (drawn - analysed) * 1000}
        t0 = time.perf_counter()
        Handlers(self.demo).analyse(str(photo), None, False)  # what the server's handler runs
        out["handler_ms"] = (time.perf_counter() - t0) * 1000
        for fmt in ("webp", "png", "jpeg"):
            t0 = time.perf_counter()
            size_bytes = sum(len(_encode(p, fmt)) for p in pictures)
            out[f"encode_{fmt}_ms"] = (time.perf_counter() - t0) * 1000
            out[f"{fmt}_kb"] = size_bytes / 1024
        out["faces"] = len(analysis.faces)
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}

    def close(self) -> None:
        self.demo.close()


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    """As gradio's processing_utils.save_img_array_to_cache encodes an output array (Pillow's defaults)."""
    with io.BytesIO() as out:
        Image.fromarray(pixels).save(out, fmt)
        return out.getvalue()


# --------------------------------------------------------------------------- the runs


def _enrol_through_api(url: str, photo: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    try:
        client.predict(ENROLLED, [handle_file(str(photo))], True, api_name="/enroll")
    finally:
        client.close()


@dataclass(frozen=True)
class AppSpec:
    """An app to measure: `python app.py` of the checkout at `root` (None: this one) with `env` added."""

    label: str
    root: Path | None = None
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> AppSpec:
        """'DIR' or 'DIR,NAME=VALUE,...' ('.' or '' for this checkout)."""
        where, *settings = text.split(",")
        env = []
        for item in settings:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ValueError(f"{item!r}: expected NAME=VALUE")
            env.append((name, value))
        root = None if where in ("", ".") else Path(where).resolve()
        if root is not None and not (root / "app.py").is_file():
            raise ValueError(f"{where}: no app.py there")
        return cls(text, root, tuple(env))


@contextlib.contextmanager
def _launched(spec: AppSpec, workdir: Path, env: dict[str, str]):
    """running_app for `spec`: another checkout's app.py runs from that checkout (its own facedemo)."""
    from facedemo.tools import launch
    from privacy.keys import generate_master_key

    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        original = launch.ROOT
        launch.ROOT = spec.root or original  # read once, when the child starts
        try:
            app = stack.enter_context(running_app(workdir, generate_master_key(), secrets.token_urlsafe(32),
                                                  env_extra={**env, **dict(spec.env)}))
        finally:
            launch.ROOT = original
        yield app


def overall(trials: Sequence[dict]) -> dict:
    ok = [t for t in trials if "phases" in t]
    full = [t for t in ok if t["size"] == "x".join(map(str, FULL_HD))]
    return {
        "click_to_result_ms": median(t["phases"]["click_to_result"] for t in ok),
        "click_to_result_1080p_ms": median(t["phases"]["click_to_result"] for t in full),
        "analysis_ms": median(t["analysis_ms"] for t in ok),
        "analysis_1080p_ms": median(t["analysis_ms"] for t in full),
        "ratio": round(statistics.median(t["phases"]["click_to_result"] / t["analysis_ms"] for t in ok), 2) if ok else None,
        "ratio_1080p": round(statistics.median(t["phases"]["click_to_result"] / t["analysis_ms"] for t in full), 2)
        if full else None,
        "ratio_uncontended": _median_ratio((t["phases"].get("click_to_result_uncontended"), t["analysis_ms"])
                                           for t in ok),
        "ratio_uncontended_1080p": _median_ratio((t["phases"].get("click_to_result_uncontended"), t["analysis_ms"])
                                                 for t in full),
        "goal_ratio": 1.5,
        "trials": len(ok),
        "errors": len(trials) - len(ok),
    }


def versus(trials: Sequence[dict], labels: Sequence[str]) -> dict:
    """Each other app against the first: the median over (round, photo) of click-to-result other / first,
    overall and for 1920 x 1080 photos only (both apps ran those trials back to back)."""
    by_key = {(t["app"], t["round"], t["photo"]): t for t in trials if "phases" in t}
    out = {}
    for label in labels[1:]:
        pairs = [(by_key[(label, r, p)], t) for (a, r, p), t in by_key.items() if a == labels[0] and (label, r, p) in by_key]
        ratios = [o["phases"]["click_to_result"] / f["phases"]["click_to_result"] for o, f in pairs]
        full = [o["phases"]["click_to_result"] / f["phases"]["click_to_result"] for o, f in pairs
                if f["size"] == "x".join(map(str, FULL_HD))]
        out[label] = {"vs": labels[0], "pairs": len(pairs),
                      "click_to_result_ratio": round(statistics.median(ratios), 3) if ratios else None,
                      "click_to_result_ratio_1080p": round(statistics.median(full), 3) if full else None}
    return out


def click_mode(apps: Sequence[tuple[str, object]], browser, workdir: Path, rounds: int, enrol_photo: Path | None,
               log=print) -> dict:
    """Every photo, `rounds` times, in each app in turn, then in this process; trials and summaries."""
    photos = click_photos(workdir / "photos")
    local = InProcess(workdir, enrol_photo)
    pids = [app.pid for _, app in apps]
    drivers = {label: PageDriver(browser, app.url, pids) for label, app in apps}
    urls = {label: app.url for label, app in apps}
    trials = []
    number = 0
    try:
        for path in photos.values():  # warm-up: each photo once, in each page and here
            for driver in drivers.values():
                number += 1
                driver.analyse(unique_copy(path, workdir / "trials", number))
            local.measure(path)
        for round_number in range(rounds):
            for name, source in photos.items():
                number += 1
                path = unique_copy(source, workdir / "trials", number)
                raws = {}
                for label, driver in drivers.items():
                    started_epoch = time.time()
                    raw = driver.analyse(path)
                    if "error" not in raw["watch"]:
                        raw["trace"] = server_trace(urls[label], raw.get("session"), started_epoch - 1)
                    raws[label] = raw
                here = local.measure(path)
                for label, raw in raws.items():
                    trial = {"app": label, "photo": name, "round": round_number, "size": _size(path),
                             "faces": here["faces"], "upload_ms": raw["upload_ms"], "in_process": here,
                             "analysis_ms": here["analysis_ms"]}
                    if "error" in raw["watch"]:
                        trial["error"] = raw["watch"]["error"]
                    else:
                        trial.update(phases=breakdown(raw), images=raw["images"], shown_sizes=raw["watch"]["sizes"],
                                     trace=raw["trace"], cpu_ms=raw["cpu_ms"])
                        handler = trial["phases"]["server_handler"]
                        if handler is not None:
                            # The same handler took this much longer in the server than here, alone:
                            # the browser shared the cores (an estimate of what a remote browser saves).
                            extra = max(0.0, handler - here["handler_ms"])
                            trial["phases"]["contention"] = round(extra, 1)
                            trial["phases"]["click_to_result_uncontended"] = round(
                                trial["phases"]["click_to_result"] - extra, 1)
                    trials.append(trial)
                shown = ", ".join(
                    f"{label}: {t['phases']['click_to_result']:.0f} ms" if "phases" in t else f"{label}: {t['error']}"
                    for label, t in zip(raws, trials[-len(raws):]))
                log(f"  round {round_number + 1}/{rounds} {name:<28} analysis {here['analysis_ms']:.0f} ms; "
                    f"click->result {shown}")
    finally:
        for driver in drivers.values():
            driver.close()
        local.close()
    labels = [label for label, _ in apps]
    return {
        "apps": {label: {"summary": summarise([t for t in trials if t["app"] == label]),
                         "overall": overall([t for t in trials if t["app"] == label])} for label in labels},
        "versus": versus(trials, labels),
        "trials": trials,
    }


def read_status(pid: int) -> dict[str, float]:
    return proc_status(Path(f"/proc/{pid}/status").read_text())


def _settled_status(pid: int, wait_s: float = 30.0) -> dict[str, float]:
    """The server's status once its RSS has stopped moving (the other models warm up after it listens)."""
    last = read_status(pid)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = read_status(pid)
        if abs(now["VmRSS_mb"] - last["VmRSS_mb"]) < 2:
            return now
        last = now
    return last


def memory_mode(app, browser, workdir: Path, sessions: int, analyses: int, linger_s: float, log=print) -> dict:
    """`sessions` browser contexts one after the other, each analysing `analyses` different photos and
    left open; the server's /proc status before, after each session, at the end and after closing them."""
    photos = varied_photo_files(workdir / "varied", max(analyses, 24)) + list(click_photos(workdir / "photos").values())
    out: dict = {"sessions": sessions, "analyses_per_session": analyses, "photos": len(photos),
                 "before": _settled_status(app.pid), "after_session": [], "errors": 0}
    log(f"  before: {out['before']}")
    drivers = []
    n = 0
    times = []
    try:
        for s in range(sessions):
            driver = PageDriver(browser, app.url, [app.pid])
            drivers.append(driver)
            for _ in range(analyses):
                raw = driver.analyse(photos[n % len(photos)], settle_s=0.05)
                n += 1
                if "error" in raw["watch"]:
                    out["errors"] += 1
                else:
                    times.append(raw["watch"]["painted"] - raw["click"])
            status = read_status(app.pid)
            out["after_session"].append(status)
            log(f"  after session {s + 1}/{sessions} ({analyses} analyses): {status}")
        out["end"] = read_status(app.pid)
    finally:
        for driver in drivers:
            driver.close()
    time.sleep(linger_s)
    out["closed"] = read_status(app.pid)
    out["linger_s"] = linger_s
    log(f"  contexts closed, {linger_s:g} s later: {out['closed']}")
    out["click_to_result_ms"] = median(times)
    out["growth_mb"] = round(out["end"]["VmRSS_mb"] - out["before"]["VmRSS_mb"], 1)
    out["growth_per_analysis_mb"] = round(out["growth_mb"] / max(1, sessions * analyses), 2)
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'unknown CPU'}"


def _print_click(click: dict) -> None:
    for label, figures in click["apps"].items():
        print(f"\n== app: {label}")
        print(table(figures["summary"]))
        o = figures["overall"]
        print(f"\nall photos: click->result {o['click_to_result_ms']} ms, analysis {o['analysis_ms']} ms, "
              f"ratio {o['ratio']}; 1920x1080: click->result {o['click_to_result_1080p_ms']} ms, analysis "
              f"{o['analysis_1080p_ms']} ms, ratio {o['ratio_1080p']} (goal <= {o['goal_ratio']}); "
              f"without the browser's share of the CPU (estimate): ratio {o['ratio_uncontended']}, 1920x1080 "
              f"{o['ratio_uncontended_1080p']}; errors {o['errors']}")
    for label, v in click["versus"].items():
        print(f"{label} / {v['vs']}: click->result x{v['click_to_result_ratio']} "
              f"(1920x1080: x{v['click_to_result_ratio_1080p']}, {v['pairs']} pairs)")


def _print_memory(label: str, m: dict) -> None:
    print(f"\n== app: {label}: server RSS {m['before']['VmRSS_mb']} MB before, "
          + ", ".join(f"{s['VmRSS_mb']}" for s in m["after_session"])
          + f" MB after each session, {m['end']['VmRSS_mb']} MB at the end (HWM {m['end']['VmHWM_mb']}, "
          f"threads {m['end']['threads']}), {m['closed']['VmRSS_mb']} MB {m['linger_s']:g} s after closing; "
          f"growth {m['growth_mb']} MB = {m['growth_per_analysis_mb']} MB per analysis; "
          f"click->result {m['click_to_result_ms']} ms; errors {m['errors']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="click mode: times each photo is analysed (default 5)")
    parser.add_argument("--sessions", type=int, default=0, help="memory mode: browser sessions, one after the other")
    parser.add_argument("--analyses", type=int, default=16, help="memory mode: analyses per session (default 16)")
    parser.add_argument("--linger", type=float, default=5.0, help="memory mode: seconds to wait after closing them")
    parser.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment setting for app.py (repeatable)")
    parser.add_argument("--versus", action="append", default=[], metavar="DIR[,NAME=VALUE...]",
                        help="also measure the app.py of another checkout (or '.', this one), with settings "
                             "added; click mode alternates the apps trial by trial and gives each one's ratio "
                             "to this checkout's (repeatable)")
    parser.add_argument("--no-enrol", action="store_true", help="nobody enrolled: detection only, no embedding")
    parser.add_argument("--json", type=Path, help="write every figure and trial here")
    parser.add_argument("--workdir", type=Path, help="keep the apps' data, logs and the photos here (default: a "
                                                      "temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"Debian's chromium is not at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    env_extra = {"GRADIO_PROFILING": "1"}
    try:
        for item in args.app_env:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--app-env {item!r}: expected NAME=VALUE")
            env_extra[name] = value
        specs = [AppSpec("this checkout")] + [AppSpec.parse(text) for text in args.versus]
    except ValueError as exc:
        parser.error(str(exc))
    from playwright.sync_api import sync_playwright

    from facedemo.app import examples

    result: dict = {"machine": machine(), "app_env": env_extra, "versus": args.versus,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.ExitStack() as keep:
        if args.workdir is None:
            workdir = Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="bench-page-")))
        else:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        enrol_photo = None if args.no_enrol else next(p for p in examples.write(workdir / "examples")
                                                     if p.stem == "grace_hopper")
        with contextlib.ExitStack() as stack:
            apps = []
            for n, spec in enumerate(specs):
                app = stack.enter_context(_launched(spec, workdir / f"app-{n}", env_extra))
                print(f"{spec.label}: app.py answered after {app.startup_s:.1f} s (pid {app.pid})", flush=True)
                if enrol_photo is not None:
                    _enrol_through_api(app.url, enrol_photo)
                apps.append((spec.label, app))
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            stack.callback(browser.close)
            if args.sessions:
                result["memory"] = {}
                for label, app in apps:
                    print(f"memory: {label}", flush=True)
                    result["memory"][label] = memory_mode(app, browser, workdir, args.sessions, args.analyses,
                                                          args.linger, log=lambda s: print(s, flush=True))
            else:
                result["click"] = click_mode(apps, browser, workdir, args.rounds, enrol_photo,
                                             log=lambda s: print(s, flush=True))
    if "click" in result:
        _print_click(result["click"])
    for label, m in result.get("memory", {}).items():
        _print_memory(label, m)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
