"""The Gradio page: detection vs recognition, enrolment, the person's own data and how it all works.

`Handlers` holds every event handler. Handlers call `FaceDemo` (models and the encrypted vault)
and `render` and return plain data (arrays, lists, dicts, strings), so tests call them without a
browser. `build` lays out the page and wires the handlers to it; it adds the named API
endpoints `/detect`, `/recognize`, `/enroll`, `/forget` and `/export`, which return JSON-ready dicts.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
import numpy as np
from PIL import Image

from facedemo import render
from facedemo.images import ImageError
from facedemo.results import Analysis, FaceAnalysis
from facedemo.embedding import model_spec
from facedemo.matching import ThresholdError
from models.registry import MODELS
from facedemo.app.service import CONSENT_TEXT, CONSENT_VERSION, EnrolmentError, FaceDemo, PhotoVerdict
from facedemo.app.uploads import UploadFolder, UploadGone
from privacy import VaultError

# The errors FaceDemo raises for things a person can fix; their messages are written for people.
USER_ERRORS = (ImageError, EnrolmentError, VaultError, ThresholdError)

# Events that run the networks share one queue group, so that at most the queue's default limit
# of them run at once however many tabs are open (the networks themselves run one at a time).
MODEL_EVENTS = {"concurrency_id": "models", "concurrency_limit": "default"}
# The page's own events; the API is the named endpoints.
UI_ONLY = {"api_visibility": "private"}

# An export holds decrypted templates: the page makes the download in the browser from the
# response, so the server writes no file that a URL could serve later.
EXPORT_DOWNLOAD_JS = """(data) => {
  if (!data || !data.subject_id) return;
  const blob = new Blob([JSON.stringify(data, null, 1)], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `facedemo-export-${data.subject_id}.json`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}"""

TABLE_HEADERS = ["face", "box (x1, y1, x2, y2) px", "confidence", "identity", "distance", "margin"]
VERDICT_HEADERS = ["photo", "file", "used", "reason"]
SUBJECT_HEADERS = ["subject id", "name", "created", "expires", "templates"]

DIFFERENCE_NOTE = """\
**Detection** answers *where are the faces?* It finds every face and gives its box, five landmarks
(eyes, nose tip, mouth corners) and a confidence that it is a face. It knows nothing about who anyone is.

**Recognition** answers *who is it?* It turns each detected face into an embedding (128 numbers) and
compares it with the people who enrolled with consent. A face closer than the threshold to an enrolled
person gets that name; otherwise it is **Unknown**. Moving the threshold re-decides at once, without
running the networks again: lower is stricter (fewer false matches, more Unknown).
"""


@dataclass(frozen=True)
class Shown:
    """The photo last analysed in one browser session and its analysis, kept so that a new
    threshold or blur choice is re-decided and re-drawn without running any model."""

    image: np.ndarray  # H x W x 3 uint8 RGB, shrunk for display (render.fit); the analysis has the full size
    analysis: Analysis


def _refusal(message: str) -> gr.Error:
    """The message shown in the page; a refusal is expected, so the server log gets no stack trace for it."""
    return gr.Error(message, print_exception=False)


def _for_people(message: str) -> str:
    message = message.strip()
    return message[:1].upper() + message[1:]


def _user_errors(handler: Callable) -> Callable:
    """Show FaceDemo's refusals in the page as a message (gr.Error), never as a stack trace."""

    @functools.wraps(handler)  # keeps the signature: gradio finds a gr.Progress parameter through it
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except USER_ERRORS as exc:
            raise _refusal(_for_people(str(exc))) from None
        except UploadGone:
            raise _refusal(UPLOAD_GONE) from None

    return wrapper


UPLOAD_GONE = "That photo is no longer on the server (each upload is deleted once it is used): please add it again."


def _required(value: str | None, what: str) -> str:
    # Copied ids and tokens often carry a stray space or line break.
    text = (value or "").strip()
    if not text:
        raise _refusal(f"Please enter {what}.")
    return text


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _label(fa: FaceAnalysis) -> str:
    return fa.decision.identity if fa.decision.accepted else "Unknown"


class Handlers:
    """Every event handler of the page, bound to one FaceDemo.

    uploads: the app's upload folder. Each handler holds the uploads it reads while it reads them;
    they are deleted when the request ends, refused or not, because the app promises not to keep
    photos (files elsewhere, a test's own photos say, are never touched). None: nothing is deleted.
    """

    def __init__(self, demo: FaceDemo, uploads: UploadFolder | None = None) -> None:
        self.demo = demo
        self.uploads = uploads

    def _using(self, *photos: Any) -> contextlib.AbstractContextManager:
        """Hold the request's uploads while they are read; deleted at the end (UploadFolder.claim)."""
        return self.uploads.claim(*photos) if self.uploads is not None else contextlib.nullcontext()

    # ---------------------------------------------------------------- tab "Detect vs Recognize"

    @_user_errors
    def analyse(
        self, photo: str | None, threshold: float | None, blur: bool
    ) -> tuple[np.ndarray, np.ndarray, list[list], str, Shown]:
        """Detect and recognise the faces of one photo (a file path).

        Returns the detection image, the recognition image, one table row per face (see
        TABLE_HEADERS), a summary in Markdown and the `Shown` state for later re-decisions.
        threshold: in the active model's distance unit; None means the model's default.
        """
        if photo is None:
            raise _refusal("Please add a photo first: upload a file, use the webcam or paste from the clipboard.")
        with self._using(photo):
            image = self.demo.load_image(photo)
        # The session keeps only a display-sized copy: a 40-megapixel upload would otherwise sit in memory.
        shown = Shown(render.fit(image), self.demo.analyse(image, threshold))
        if not shown.analysis.faces:
            gr.Warning("No face found in this photo.")
        return self._present(shown, blur)

    @_user_errors
    def redecide(
        self, shown: Shown | None, threshold: float, blur: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None, list[list], str, Shown | None]:
        """The last photo decided again at `threshold` against the people enrolled now, and re-drawn;
        no model runs, and nobody deleted since is named. Empty before any photo."""
        if shown is None:
            return None, None, [], "", None
        return self._present(Shown(shown.image, self.demo.redecide(shown.analysis, threshold)), blur)

    def _present(self, shown: Shown, blur: bool) -> tuple[np.ndarray, np.ndarray, list[list], str, Shown]:
        faces = shown.analysis.faces
        size = (shown.analysis.width, shown.analysis.height)
        hidden = render.unknown_flags(faces) if blur else None
        detection = render.draw_detection(shown.image, [fa.face for fa in faces], blur=hidden, source_size=size)
        recognition = render.draw_recognition(shown.image, faces, blur_unknown=blur, source_size=size)
        return detection, recognition, self.face_rows(shown.analysis), self.summary(shown.analysis), shown

    @staticmethod
    def face_rows(analysis: Analysis) -> list[list]:
        """One row per face: number, box, confidence, identity, distance, margin (as TABLE_HEADERS)."""
        rows = []
        for number, fa in enumerate(analysis.faces, 1):
            box = ", ".join(str(round(v)) for v in fa.face.box)
            d = fa.decision
            rows.append([number, box, _number(fa.face.score), _label(fa), _number(d.distance), _number(d.margin)])
        return rows

    @staticmethod
    def summary(analysis: Analysis) -> str:
        """What detection and recognition found, in two plain sentences (Markdown)."""
        faces = analysis.faces
        if not faces:
            return (
                "**No face found.** Detection looks for faces at least about 20 pixels wide, seen from "
                "the front or half-profile; try a larger, sharper or better-lit photo."
            )
        skipped = (
            f" ({analysis.faces_skipped} more faces were found but not analysed: the limit is "
            f"{len(faces)} per photo)" if analysis.faces_skipped else ""
        )
        found = f"**Detection:** {len(faces)} face{'s' if len(faces) != 1 else ''} found{skipped}."
        if all(fa.decision.distance is None for fa in faces):
            return found + " **Recognition:** nobody is enrolled yet, so every face is Unknown (see the Enrol tab)."
        known = sum(fa.decision.accepted for fa in faces)
        return (
            f"{found} **Recognition:** {known} identified, {len(faces) - known} unknown, at threshold "
            f"{analysis.threshold:.2f} ({analysis.model_id}; a distance below the threshold means the same person)."
        )

    # ------------------------------------------------------------------------- tab "Enrol"

    def enroll(
        self,
        name: str,
        photos: Sequence[str] | None,
        consent: bool,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[list], str, str, str, Any, None, Any]:
        """Enrol a person from photos (file paths) with their consent.

        Returns the per-photo verdicts (VERDICT_HEADERS), a message in Markdown (the receipt, or why
        nothing was enrolled), the subject id and the deletion token (shown this once; empty when
        refused), then the new values of the name, photo list and consent box. The photo list is
        always emptied: its files are deleted when this request ends, and a photo the person no
        longer sees must never go into a later enrolment. After success the name is cleared and the
        consent box unticked; after a refusal both stay for the next try.
        """
        photos = list(photos or [])

        def report(done: int, total: int) -> None:
            progress((done, total), desc="Checking photos and computing templates", unit="photos")

        try:
            with self._using(photos):
                outcome = self.demo.enroll(name, photos, consent=bool(consent), progress=report)
        except (*USER_ERRORS, UploadGone) as exc:
            reason = UPLOAD_GONE if isinstance(exc, UploadGone) else f"{_for_people(str(exc))}."
            message = f"**Not enrolled.** {reason} Nothing was stored; add your photos again."
            return self.verdict_rows(getattr(exc, "verdicts", ()), photos), message, "", "", gr.update(), None, gr.update()
        receipt = outcome.receipt.to_dict()
        return (
            self.verdict_rows(outcome.verdicts, photos),
            self.receipt_text(receipt),
            receipt["subject_id"],
            receipt["deletion_token"],
            "",
            None,
            False,
        )

    @staticmethod
    def verdict_rows(verdicts: Sequence[PhotoVerdict], photos: Sequence[Any]) -> list[list]:
        """One row per photo: number (from 1), file name, yes/no, reason."""
        rows = []
        for v in verdicts:
            source = photos[v.index] if v.index < len(photos) else None
            file_name = Path(source).name if isinstance(source, (str, Path)) else ""
            rows.append([v.index + 1, file_name, "yes" if v.accepted else "no", v.reason])
        return rows

    @staticmethod
    def receipt_text(receipt: dict) -> str:
        """The enrolment receipt for people: id, expiry, what was stored, and why to keep the token."""
        stored = ", ".join(f"{count} × {model}" for model, count in receipt["templates_stored"].items())
        return (
            f"**Enrolled.** Subject id: `{receipt['subject_id']}` · expires {receipt['expires_at'][:10]} "
            f"(then deleted automatically) · templates stored: {stored}.\n\n"
            "⚠️ **Copy your deletion token now.** It is shown only this once and stored only as a hash, "
            "so nobody can show it to you again. With the subject id and the token you can see, export and "
            "delete your data in the *My data* tab; without it, only the operator can delete it before it expires."
        )

    # ------------------------------------------------------------------------- tab "My data"

    @_user_errors
    def describe(self, subject_id: str, token: str, request: gr.Request | None = None) -> dict:
        """What is stored about the subject (counts, dates, key id, ciphertext sizes); nothing decrypted.

        Only with the subject's own deletion token."""
        return self.demo.describe(
            _required(subject_id, "your subject id"), _required(token, "your deletion token"), _client(request)
        )

    @_user_errors
    def export(self, subject_id: str, token: str, request: gr.Request | None = None) -> dict:
        """The subject's own data (name, dates, consent, templates) as a JSON-ready dict; no photos exist
        to export. Only with the subject's own deletion token; nothing is written to disk."""
        return self.demo.export(
            _required(subject_id, "your subject id"), _required(token, "your deletion token"), _client(request)
        )

    def export_download(self, subject_id: str, token: str, request: gr.Request | None = None) -> tuple[dict, str]:
        """`export` for the page, which turns it into a download in the browser (EXPORT_DOWNLOAD_JS):
        no copy is written on the server, so no URL can serve it later. Also a line saying so."""
        data = self.export(subject_id, token, request)
        return data, (
            f"**Downloaded** as `facedemo-export-{data['subject_id']}.json`. It holds your name and templates "
            "in plain text: keep it somewhere safe, or delete it. The app kept no copy."
        )

    @_user_errors
    def forget(self, subject_id: str, token: str, request: gr.Request | None = None) -> dict:
        """Erase the subject (deletion token, or the operator's admin token); the signed erasure receipt.

        Every picture the app had rendered for browsers is deleted too: one may show the erased name."""
        receipt = self.demo.forget(
            _required(subject_id, "the subject id"), _required(token, "the deletion token"), _client(request)
        )
        if self.uploads is not None:
            self.uploads.drop_outputs()
        return receipt

    def forget_mine(
        self, subject_id: str, token: str, request: gr.Request | None = None
    ) -> tuple[str, dict, None, None, None, str, Any]:
        """The page's confirmed "Delete my data": the receipt in plain words and as JSON, then what the
        tab clears (what was shown as stored, the export, its message, the token) and the hidden
        confirmation."""
        receipt = self.forget(subject_id, token, request)
        return self.erasure_text(receipt), receipt, None, None, None, "", gr.update(visible=False)

    @staticmethod
    def erasure_text(receipt: dict) -> str:
        """The erasure receipt in plain sentences (Markdown): what is gone, what the check found and
        what deletion does not reach."""
        probe = receipt["probe"]
        others = probe["matched_other"]
        check = (
            f"We then searched the people still enrolled with your deleted templates: "
            f"{'one still matched you' if probe['matched_subject'] else 'none of them matches you any more'}"
        )
        if others:
            check += (
                f"; {others} of {probe['templates_probed']} came closer than the threshold to another enrolled "
                "person, who looks like you (or is you, enrolled a second time under another id)"
            )
        return (
            f"**Your data was deleted** on {receipt['erased_at'][:10]} at {receipt['erased_at'][11:19]} UTC: "
            f"your name, your {receipt['templates_deleted']} templates and your key are gone from the live vault. "
            f"{check}.\n\n{_for_people(receipt['copies_before_erasure'])}\n\nThe signed receipt below proves it; keep it."
        )

    @_user_errors
    def list_subjects(self, admin_token: str, request: gr.Request | None = None) -> list[list]:
        """Operator only: one row per enrolled subject (SUBJECT_HEADERS)."""
        listing = self.demo.list_subjects(_required(admin_token, "the operator's admin token"), _client(request))
        return [
            [s["subject_id"], s["name"], s["created"][:10], s["expires"][:10],
             ", ".join(f"{n} × {m}" for m, n in s["templates"].items())]
            for s in listing
        ]

    # ---------------------------------------------------------------------- tab "How it works"

    def audit_status(self, full: bool = False) -> str:
        """Whether the audit log's HMAC chain verifies, in one line of Markdown.

        full: check every entry; otherwise only what was added since the last check."""
        try:
            report = self.demo.audit_verify(full=full)
        except VaultError as exc:
            return f"**Audit log verifies: cannot tell.** {_for_people(str(exc))}"
        if report["ok"]:
            return "**Audit log verifies: yes.** No entry was edited or removed."
        return (
            f"**Audit log verifies: NO.** Entry {report['first_broken']} or one after it was "
            f"edited or removed ({report.get('reason') or 'chain broken'})."
        )

    def audit_status_full(self) -> str:
        """`audit_status` over every entry (the page's "verify again" button)."""
        return self.audit_status(full=True)

    # ---------------------------------------------------------------------------- the API

    @_user_errors
    def api_detect(self, photo: str) -> dict:
        """Detection only: {width, height, faces: [{face, box, score, landmarks}], faces_skipped}.

        box: x1, y1, x2, y2 and landmarks: five (x, y), in original-image pixels; score: 0..1.
        """
        with self._using(photo):
            analysis = self.demo.detect(_required_photo(photo))
        return {
            "width": analysis.width,
            "height": analysis.height,
            "faces": [{"face": n, **fa.face.to_dict()} for n, fa in enumerate(analysis.faces, 1)],
            "faces_skipped": analysis.faces_skipped,
        }

    @_user_errors
    def api_recognize(self, photo: str, threshold: float | None = None) -> dict:
        """Detection and recognition: as /detect plus, per face, identity (None when unknown), label
        ("Unknown" or the name), distance and margin (model units); model and threshold.

        threshold: None for the default, else a number from 0 to the model's ceiling (refused above it).
        """
        with self._using(photo):
            analysis = self.demo.analyse(_required_photo(photo), threshold)
        result = analysis.to_dict()
        result["faces"] = [
            {"face": n, **face, "label": _label(fa)}
            for n, (face, fa) in enumerate(zip(result["faces"], analysis.faces), 1)
        ]
        return result

    @_user_errors
    def api_enroll(self, name: str, photos: Sequence[str] | None, consent: bool) -> dict:
        """Enrol: the receipt (subject_id, deletion_token, created_at, expires_at, templates_stored,
        consent_text_version) and photos: [{photo (from 1), accepted, reason}]."""
        photos = list(photos or [])
        with self._using(photos):
            outcome = self.demo.enroll(name, photos, consent=bool(consent))
        return {
            **outcome.receipt.to_dict(),
            "photos": [{"photo": v.index + 1, "accepted": v.accepted, "reason": v.reason} for v in outcome.verdicts],
        }

def _client(request: gr.Request | None) -> str | None:
    """Who is asking, for the vault's limit on wrong tokens: the peer's address (None in tests)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def _required_photo(photo: str | None) -> str:
    if photo is None:
        raise _refusal("Please send a photo.")
    return photo


def photo_input(**kwargs: Any) -> gr.Image:
    """A gr.Image that passes the uploaded file to facedemo.images unopened.

    gr.Image opens every upload with Pillow before the handler runs, so a file that is not an
    image fails there with a bare "Error"; unopened, it reaches `images.load`, whose message says
    what is wrong. The override is set on the instance: a gr.Image subclass would make Gradio
    write a .pyi stub next to this module at every import.
    """
    component = gr.Image(**kwargs)
    opened = component.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return payload.path
        return opened(payload)

    component.preprocess = preprocess
    return component


def threshold_input(component: gr.Slider | gr.Number) -> gr.Slider | gr.Number:
    """The component with the value passed to the handler as sent.

    Gradio's own bounds check meets text or a list with a TypeError and no message a visitor can
    read; the handlers' check (recognition.checked_threshold) says what is wrong, and knows the
    model's ceiling. Set on the instance, for the reason given in `photo_input`.
    """
    component.preprocess = lambda payload: payload
    return component


# ----------------------------------------------------------------------------- examples


def write_examples(directory: Path) -> list[Path]:
    """Public-domain photos shipped with installed packages, written to `directory` for gr.Examples.

    Eileen Collins (scikit-image's astronaut), Grace Hopper (matplotlib's sample data) and a
    group photo composed of both. Nothing is downloaded; a package that is missing just means
    fewer examples.
    """
    directory.mkdir(parents=True, exist_ok=True)
    photos: dict[str, np.ndarray] = {}
    if find_spec("skimage") is not None:
        from skimage import data

        photos["astronaut"] = data.astronaut()
    if find_spec("matplotlib") is not None:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    if len(photos) == 2:
        photos["group"] = _side_by_side(photos["astronaut"], photos["grace_hopper"])
    paths = []
    for name, pixels in photos.items():
        path = directory / f"{name}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 24) -> np.ndarray:
    """Both photos at the height of the shorter one, next to each other on a grey background."""
    height = min(left.shape[0], right.shape[0])
    parts = [
        np.asarray(Image.fromarray(p).resize((round(p.shape[1] * height / p.shape[0]), height), Image.Resampling.LANCZOS))
        for p in (left, right)
    ]
    canvas = np.full((height, parts[0].shape[1] + gap + parts[1].shape[1], 3), 200, dtype=np.uint8)
    canvas[:, : parts[0].shape[1]] = parts[0]
    canvas[:, parts[0].shape[1] + gap :] = parts[1]
    return canvas


# ------------------------------------------------------------------------------ the page


def _model_card() -> str:
    """models/MODEL_CARD.md when it is installed, else one line per known model."""
    spec = find_spec("models")
    card = Path(spec.origin).parent / "MODEL_CARD.md" if spec and spec.origin else None
    if card is not None and card.is_file():
        return card.read_text(encoding="utf-8")
    return "\n".join(f"- **{spec.model_id}**: {spec.title}" for spec in MODELS.values())


def _how_it_works(demo: FaceDemo) -> str:
    retention = demo.config.retention_days
    ceiling = model_spec(demo.model_id).max_threshold
    key_line = (
        "⚠️ **Development mode**: no `FACEDEMO_MASTER_KEY` is set, so the master key is a file next to the data. "
        "Do not enrol real people here."
        if demo.dev_mode
        else "The master key comes from the `FACEDEMO_MASTER_KEY` secret and is never written to disk."
    )
    return f"""\
### The pipeline
1. **Detection**: MTCNN (three small CNNs, coarse to fine) finds each face: box, five landmarks, confidence.
2. **Alignment**: the five landmarks are mapped onto a fixed template by a similarity transform (rotation,
   scale, shift), giving an upright face chip of the size the embedding network expects.
3. **Embedding**: a CNN turns each chip into 128 numbers; photos of one person land close together.
   All faces of a photo go through the network in one batch.
4. **Matching**: each embedding is compared with the enrolled templates. The nearest person is accepted when
   the distance is below the threshold (active model **{demo.model_id}**, threshold **{demo.threshold:.2f}**);
   otherwise the face is Unknown. No enrolled person is given to two faces of one photo.

### Privacy notice
- **What is stored**: for each person who enrolled with consent, their name and one template per accepted photo
  and model, the consent record (text version `{CONSENT_VERSION}`), and dates. **Photos are never stored**: a
  photo you send is read in memory and its upload is deleted when your request ends, from a folder that only
  this app can read; rendered results live only in this app's private folder.
- **Encryption**: every person has their own random 256-bit key (AES-256-GCM) that encrypts their name and
  templates; that key is stored only wrapped by the master key. {key_line}
- **Who sees what**: recognition shows a name only for a face closer than the threshold to that person, and the
  threshold cannot be set above **{ceiling:.2f}** (beyond it strangers would be named); it never shows the ids that
  unlock a person's data. Only you, with your subject id and deletion token, can see or export your data; the
  operator can list who is enrolled and delete anyone, but cannot see or export templates. Wrong tokens are
  slowed down and logged.
- **Retention**: enrolments are deleted automatically {retention} days after enrolment.
- **Deletion**: *My data* deletes your key, name and templates from the live vault in one transaction and gives a
  signed receipt, which also says whether your deleted templates still come close to anyone enrolled. Copies of
  the vault made before the deletion (backups) still hold your wrapped key until the operator retires the master
  key of that time; the receipt names that key.
- **Audit**: enrolments, exports, deletions, purges and refused attempts are logged without names, photos or
  templates, in a chain of HMACs so that an edited or removed entry is detected.
"""


def build(h: Handlers, examples: Sequence[Path] = ()) -> gr.Blocks:
    """The whole page around the handlers' FaceDemo; `examples` are photo files offered under the upload.

    The app's upload folder sweeps what Gradio writes there (facedemo.app.uploads); Gradio's own
    sweep (every 10 minutes, files older than 15) is the fallback where no UploadFolder is used.
    """
    demo = h.demo
    # The slider stops at the model's ceiling: beyond it, strangers would be named as enrolled people.
    ceiling = model_spec(demo.model_id).max_threshold

    with gr.Blocks(title="facedemo: face detection vs recognition", delete_cache=(600, 900)) as page:
        # First, so that they get these names: gradio names the page's private events after their
        # functions too, and would give a later endpoint a suffix ("enroll_1").
        _api_endpoints(h)
        gr.Markdown("# Face detection vs face recognition")
        if demo.dev_mode:
            gr.Markdown(
                "⚠️ **Development mode**: no `FACEDEMO_MASTER_KEY` is set; the vault's key is a local file. "
                "Do not enrol real people here.",
                elem_id="dev-mode",
            )

        with gr.Tab("Detect vs Recognize", id="detect"):
            gr.Markdown(DIFFERENCE_NOTE)
            with gr.Row():
                photo = photo_input(
                    label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"],
                    height=320, elem_id="photo",
                )
                with gr.Column():
                    threshold = threshold_input(gr.Slider(
                        0.0, ceiling, value=demo.threshold, step=0.01, elem_id="threshold",
                        label=f"Recognition threshold ({demo.model_id} distance)",
                        info=(
                            "Below it: the same person. Changing it re-decides without running the networks. "
                            f"It stops at {ceiling:.2f}: higher, strangers would be named as enrolled people."
                        ),
                    ))
                    blur = gr.Checkbox(
                        label="Blur faces that are not recognised", elem_id="blur",
                        info="Hides bystanders in both images.",
                    )
                    go = gr.Button("Detect and recognize", variant="primary", elem_id="analyse")
                    gallery = gr.Examples(
                        [[str(p)] for p in examples], inputs=[photo], api_visibility="private", elem_id="examples",
                        label="Examples (public-domain photos shipped with scikit-image and matplotlib): click one",
                    ) if examples else None
            with gr.Row():
                detection_image = gr.Image(
                    label="Detection: where are the faces? (box, 5 landmarks, confidence)",
                    interactive=False, height=440, elem_id="detection-image",
                )
                recognition_image = gr.Image(
                    label="Recognition: who is it? (name or Unknown, distance)",
                    interactive=False, height=440, elem_id="recognition-image",
                )
            summary = gr.Markdown(elem_id="summary")
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="faces-table", label="Faces")
            # Per browser session; dropped after 15 minutes so that photos and names do not linger in memory.
            shown = gr.State(None, time_to_live=900)
            outputs = [detection_image, recognition_image, table, summary, shown]
            go.click(h.analyse, [photo, threshold, blur], outputs, **MODEL_EVENTS, **UI_ONLY)
            for control in (threshold, blur):
                control.change(h.redecide, [shown, threshold, blur], outputs, trigger_mode="always_last", **UI_ONLY)
            if gallery is not None:
                gallery.load_input_event.then(h.analyse, [photo, threshold, blur], outputs, **MODEL_EVENTS, **UI_ONLY)

        with gr.Tab("Enrol", id="enrol"):
            gr.Markdown(
                "Enrol yourself so that recognition can name you. Use 1–5 photos of **you alone**, face clearly "
                "visible (two or more recognise you better); each is checked and accepted or rejected with a reason."
            )
            with gr.Row():
                with gr.Column():
                    enrol_name = gr.Textbox(label="Name", max_length=100, elem_id="enrol-name")
                    enrol_photos = gr.File(
                        label="Photos of you", file_count="multiple", file_types=["image"], type="filepath",
                        elem_id="enrol-photos",
                    )
                    gr.Markdown(f"**Consent** (version {CONSENT_VERSION}): {CONSENT_TEXT}")
                    consent = gr.Checkbox(label="I consent to the above", elem_id="enrol-consent")
                    enrol_go = gr.Button("Enrol", variant="primary", elem_id="enrol-button")
                with gr.Column():
                    verdicts = gr.Dataframe(headers=VERDICT_HEADERS, interactive=False, label="Photos", elem_id="verdicts")
                    receipt = gr.Markdown("Your receipt will appear here.", elem_id="receipt")
                    receipt_subject = gr.Textbox(label="Subject id", interactive=False, buttons=["copy"], elem_id="receipt-subject")
                    receipt_token = gr.Textbox(
                        label="Deletion token (shown once: copy it now)", interactive=False, buttons=["copy"],
                        elem_id="receipt-token",
                    )
            enrol_go.click(
                h.enroll, [enrol_name, enrol_photos, consent],
                [verdicts, receipt, receipt_subject, receipt_token, enrol_name, enrol_photos, consent],
                **MODEL_EVENTS, **UI_ONLY,
            )

        with gr.Tab("My data", id="my-data"):
            gr.Markdown(
                "Enter the subject id and deletion token from your enrolment receipt to see what is stored about "
                "you, download it, or delete it. You see only your own data."
            )
            with gr.Row():
                my_subject = gr.Textbox(label="Subject id", elem_id="my-subject")
                my_token = gr.Textbox(label="Deletion token", type="password", elem_id="my-token")
            with gr.Row():
                show_go = gr.Button("Show what is stored", elem_id="describe-button")
                export_go = gr.Button("Export my data (JSON)", elem_id="export-button")
                forget_go = gr.Button("Delete my data", variant="stop", elem_id="forget-button")
            with gr.Row(visible=False, elem_id="forget-confirm-row") as confirm_row:
                gr.Markdown(
                    "**Delete everything stored about you?** Your name, templates and key are erased at once; "
                    "this cannot be undone."
                )
                confirm_go = gr.Button("Yes, delete my data", variant="stop", elem_id="forget-confirm")
                cancel_go = gr.Button("Cancel", elem_id="forget-cancel")
            stored = gr.JSON(label="Stored about you", elem_id="stored")
            # Holds the export only on its way to the browser's download; never shown, never a file.
            export_data = gr.JSON(visible=False)
            export_note = gr.Markdown(elem_id="export-note")
            erasure_note = gr.Markdown(elem_id="erasure-note")
            erasure = gr.JSON(label="Erasure receipt", elem_id="erasure")
            show_go.click(h.describe, [my_subject, my_token], stored, **UI_ONLY)
            export_go.click(h.export_download, [my_subject, my_token], [export_data, export_note], **UI_ONLY).success(
                None, export_data, None, js=EXPORT_DOWNLOAD_JS, **UI_ONLY
            )
            forget_go.click(_shown, None, confirm_row, **UI_ONLY)
            cancel_go.click(_hidden, None, confirm_row, **UI_ONLY)
            # The first tab's result is decided again at once, so the erased name leaves it too.
            confirm_go.click(
                h.forget_mine, [my_subject, my_token],
                [erasure_note, erasure, stored, export_data, export_note, my_token, confirm_row], **UI_ONLY,
            ).success(h.redecide, [shown, threshold, blur], outputs, **UI_ONLY)

            with gr.Accordion("Operator", open=False, elem_id="operator"):
                gr.Markdown(
                    "The operator can list everyone enrolled and delete anyone; the operator cannot see or export "
                    "anyone's templates."
                    + ("" if demo.config.admin_token else
                       " No operator token is configured (`FACEDEMO_ADMIN_TOKEN`), so these functions are off.")
                )
                admin_token = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
                list_go = gr.Button("List everyone enrolled", elem_id="list-button")
                subjects = gr.Dataframe(headers=SUBJECT_HEADERS, interactive=False, label="Enrolled", elem_id="subjects")
                admin_subject = gr.Textbox(label="Subject id to delete", elem_id="admin-subject")
                admin_forget_go = gr.Button("Delete this subject", variant="stop", elem_id="admin-forget-button")
                admin_erasure = gr.JSON(label="Erasure receipt", elem_id="admin-erasure")
                list_go.click(h.list_subjects, admin_token, subjects, **UI_ONLY)
                admin_forget_go.click(h.forget, [admin_subject, admin_token], admin_erasure, **UI_ONLY)

        with gr.Tab("How it works", id="how"):
            gr.Markdown(_how_it_works(demo))
            with gr.Row():
                audit = gr.Markdown(elem_id="audit")
                audit_go = gr.Button("Verify the audit log again", elem_id="audit-button")
            audit_go.click(h.audit_status_full, None, audit, **UI_ONLY)
            with gr.Accordion("Model card", open=True):
                gr.Markdown(_model_card())
        page.load(h.audit_status, None, audit, **UI_ONLY)
    return page


def _shown() -> dict:
    return gr.update(visible=True)


def _hidden() -> dict:
    return gr.update(visible=False)


def _api_endpoints(h: Handlers) -> None:
    """The named endpoints for gradio_client, on hidden components (the page has no use for them)."""
    with gr.Column(visible=False):
        photo = photo_input(type="filepath", label="photo")
        threshold = threshold_input(gr.Number(None, label="threshold"))
        name = gr.Textbox(label="name")
        photos = gr.File(file_count="multiple", type="filepath", label="photos")
        consent = gr.Checkbox(label="consent")
        subject_id = gr.Textbox(label="subject_id")
        token = gr.Textbox(label="token")
        result = gr.JSON(label="result")
        for api_name, fn, inputs, extra in (
            ("detect", h.api_detect, [photo], MODEL_EVENTS),
            ("recognize", h.api_recognize, [photo, threshold], MODEL_EVENTS),
            ("enroll", h.api_enroll, [name, photos, consent], MODEL_EVENTS),
            ("forget", h.forget, [subject_id, token], {}),
            ("export", h.export, [subject_id, token], {}),
        ):
            gr.Button(visible=False).click(fn, inputs, result, api_name=api_name, api_description=fn.__doc__, **extra)
