"""The page's event handlers: plain functions over the service that take and return plain data.

`Handlers` holds one handler per event. Each calls `FaceDemo` (the pipeline and the encrypted vault)
and `render`, and returns arrays, lists, dicts and strings, so tests call them without a browser.
The named API endpoints (/detect, /recognize, /enroll, /forget, /export) are handlers too, returning
JSON-ready dicts. Refusals a person can act on become a message in the page, never a stack trace.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from facedemo import render
from facedemo.app.service import EnrolmentError, EnrolmentOutcome, FaceDemo, PhotoVerdict
from facedemo.app.uploads import UploadFolder, UploadGone
from facedemo.detection import DetectorError
from facedemo.images import ImageError
from facedemo.matching import ThresholdError
from facedemo.results import Analysis, FaceAnalysis
from privacy import VaultError

USER_ERRORS = (ImageError, EnrolmentError, VaultError, ThresholdError, DetectorError)



# What the page calls each detector (facedemo.detection.DETECTORS).
DETECTOR_NAMES = {"mtcnn": "MTCNN", "yunet": "YuNet"}
# Who is where comes first: on a phone's width only the first columns are seen without scrolling.
TABLE_HEADERS = ["face", "identity", "distance", "margin", "reason", "confidence", "quality", "box (x1, y1, x2, y2) px"]
VERDICT_HEADERS = ["photo", "file", "used", "reason"]
SUBJECT_HEADERS = ["subject id", "name", "created", "expires", "templates"]

@dataclass(frozen=True)
class Shown:
    """The photo last analysed in one browser session and its analysis, kept so that a new
    threshold or blur choice is re-decided and re-drawn without running any model.

    The photo is kept display-sized (render.fit) and JPEG-compressed, about 0.1-0.3 MB instead of
    3 MB, because every open browser session holds one until its state expires (15 minutes).
    """

    photo: bytes  # the display-sized photo as JPEG; the analysis has the full size
    analysis: Analysis
    detector: str | None = None  # the detector that found the faces ("mtcnn", "yunet"), named in the summary

    @classmethod
    def of(cls, image: np.ndarray, analysis: Analysis, detector: str | None = None) -> Shown:
        """What a session keeps of `image` (H x W x 3 uint8 RGB, any size) and its analysis."""
        return cls(render.jpeg(render.fit(image)), analysis, detector)

    @property
    def image(self) -> np.ndarray:
        """The display-sized photo, H x W x 3 uint8 RGB."""
        return render.from_jpeg(self.photo)

    def redecided(self, analysis: Analysis) -> Shown:
        return Shown(self.photo, analysis, self.detector)


def refusal(message: str) -> gr.Error:
    """The message shown in the page; a refusal is expected, so the server log gets no stack trace for it."""
    return gr.Error(message, print_exception=False)


def for_people(message: str) -> str:
    message = message.strip()
    return message[:1].upper() + message[1:]


def _user_errors(handler: Callable) -> Callable:
    """Show FaceDemo's refusals in the page as a message (gr.Error), never as a stack trace."""

    @functools.wraps(handler)  # keeps the signature: gradio finds a gr.Progress parameter through it
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except USER_ERRORS as exc:
            raise refusal(for_people(str(exc))) from None
        except UploadGone:
            raise refusal(UPLOAD_GONE) from None

    return wrapper


NO_FACE_CHOSEN = "No face chosen yet: click your face in the photo."
UPLOAD_GONE = "That photo is no longer on the server (each upload is deleted once it is used): please add it again."


def _required(value: str | None, what: str) -> str:
    # Copied ids and tokens often carry a stray space or line break.
    text = (value or "").strip()
    if not text:
        raise refusal(f"Please enter {what}.")
    return text


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _label(fa: FaceAnalysis) -> str:
    return fa.decision.identity if fa.decision.accepted else "Unknown"


def _box(fa: FaceAnalysis, width: int, height: int) -> str:
    """'x1, y1, x2, y2' in the photo's pixels; a face cut by the photo's edge is clipped to it and
    marked, since the detector places its box where the whole face would be, partly outside."""
    x1, y1, x2, y2 = fa.face.box
    clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    text = ", ".join(str(round(v)) for v in clipped)
    return text + " (cut by the edge)" if clipped != (x1, y1, x2, y2) else text


def _quality(fa: FaceAnalysis) -> str:
    """'good: 120 px, detail 0.45' or 'poor: 12 px, detail 0.02' (facedemo.quality), '–' when not assessed."""
    q = fa.quality
    if q is None:
        return "–"
    return f"{'good' if q.usable else 'poor'}: {q.size:.0f} px, detail {q.detail:.2f}"


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

    # ------------------------------------------------------------------------------- tab "Photo"

    def analyse(
        self, photo: str | None, threshold: float | None, blur: bool, detector: str | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None, list[list], str, Shown | None]:
        """Detect and recognise the faces of one photo (a file path).

        Returns the detection image, the recognition image, one table row per face (see
        TABLE_HEADERS), a summary in Markdown and the `Shown` state for later re-decisions.
        threshold: in the active model's distance unit; None means the model's default.
        detector: "mtcnn" or "yunet"; None means the configured one.
        A refusal (no photo, not an image, a threshold above the ceiling...) comes back as the
        summary, "⚠️ " and why, with no images, rows or state: the message stays where the result
        would be until the next action, and covers no input.
        """
        result, why = _in_page(lambda: self._analysed(photo, threshold, blur, detector))
        return result if result is not None else (None, None, [], why, None)

    @_user_errors
    def _analysed(
        self, photo: str | None, threshold: float | None, blur: bool, detector: str | None
    ) -> tuple[np.ndarray, np.ndarray, list[list], str, Shown]:
        if photo is None:
            raise refusal("Please add a photo first: upload a file, use the webcam or paste from the clipboard.")
        with self._using(photo):
            image = self.demo.load_image(photo)
        detector = detector or self.demo.detector_id
        shown = Shown.of(image, self.demo.analyse(image, threshold, detector), detector)
        return self._present(shown, blur)

    @_user_errors
    def redecide(
        self, shown: Shown | None, threshold: float, blur: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None, list[list], str, Shown | None]:
        """The last photo decided again at `threshold` against the people enrolled now, and re-drawn;
        no model runs, and nobody deleted since is named. Empty before any photo."""
        if shown is None:
            return None, None, [], "", None
        return self._present(shown.redecided(self.demo.redecide(shown.analysis, threshold)), blur)

    def _present(self, shown: Shown, blur: bool) -> tuple[np.ndarray, np.ndarray, list[list], str, Shown]:
        faces = shown.analysis.faces
        size = (shown.analysis.width, shown.analysis.height)
        hidden = render.unknown_flags(faces) if blur else None
        image = shown.image
        detection = render.draw_detection(image, [fa.face for fa in faces], blur=hidden, source_size=size)
        recognition = render.draw_recognition(image, faces, blur_unknown=blur, source_size=size)
        summary = self.summary(shown.analysis, shown.detector)
        return detection, recognition, self.face_rows(shown.analysis), summary, shown

    @staticmethod
    def face_rows(analysis: Analysis) -> list[list]:
        """One row per face: number, identity, distance, margin, the reason for the identity,
        confidence, quality and box (as TABLE_HEADERS)."""
        rows = []
        for number, fa in enumerate(analysis.faces, 1):
            d = fa.decision
            rows.append([number, _label(fa), _number(d.distance), _number(d.margin), d.reason or "–",
                         _number(fa.face.score), _quality(fa), _box(fa, analysis.width, analysis.height)])
        return rows

    @staticmethod
    def summary(analysis: Analysis, detector: str | None = None) -> str:
        """What detection and recognition found, in two plain sentences (Markdown); `detector` is named."""
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
        by = f" ({DETECTOR_NAMES.get(detector, detector)})" if detector else ""
        found = f"**Detection{by}:** {len(faces)} face{'s' if len(faces) != 1 else ''} found{skipped}."
        if all(fa.decision.distance is None for fa in faces):
            return found + " **Recognition:** nobody is enrolled yet, so every face is Unknown (see the Enrol tab)."
        known = sum(fa.decision.accepted for fa in faces)
        poor = sum(1 for fa in faces if fa.quality is not None and not fa.quality.usable)
        rule = analysis.rule
        judged = any(fa.candidates and fa.candidates[0].others_median is not None for fa in faces)
        second = (
            f"; with this many people enrolled: below {rule.strict_threshold:.2f}, or up to "
            f"{rule.loose_threshold:.2f} with a clear margin over the others"
            if judged and rule.loose_threshold > rule.strict_threshold else ""
        )
        return (
            f"{found} **Recognition:** {known} identified, {len(faces) - known} unknown"
            f"{f' ({poor} too poor to decide)' if poor else ''}, at threshold {analysis.threshold:.2f} "
            f"({analysis.model_id}; a distance below the threshold means the same person{second}). "
            "The table's last column says why."
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
            reason = UPLOAD_GONE if isinstance(exc, UploadGone) else f"{for_people(str(exc))}."
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

    def pick_face(self, event: gr.SelectData) -> tuple[list[float] | None, str]:
        """Where the person clicked in their group photo (x, y in the photo's pixels), and a line
        saying so. Nothing is sent but the point: the photo goes to the server only with "Enrol"."""
        clicked = _point(getattr(event, "index", None))
        if clicked is None:
            return None, NO_FACE_CHOSEN
        x, y = clicked
        return [x, y], f"Chosen: the face at ({x:.0f}, {y:.0f}). Click again to choose another."

    def enroll_face(
        self, name: str, photo: str | None, point: Sequence[float] | None, consent: bool
    ) -> tuple[list[list], str, str, str, Any, None, Any, None, str, str]:
        """Enrol a person from the face they clicked in a group photo (a file path); only that face
        is embedded and stored. Returns what `enroll` returns, then the cleared chosen point, its
        line, and a note by the button (the outcome in one line, where the person is looking). The
        photo is emptied either way: its upload is deleted when this request ends."""
        def refused(reason: str) -> tuple:
            message = f"**Not enrolled.** {reason} Nothing was stored; add your photo again."
            return [], message, "", "", gr.update(), None, gr.update(), None, NO_FACE_CHOSEN, f"⚠️ {message}"

        if photo is None:
            return refused("Please add a group photo first.")
        clicked = _point(point)
        if clicked is None:
            with self._using(photo):  # refused or not, the request's upload is deleted when it ends
                return refused("Please click your face in the photo first.")
        try:
            with self._using(photo):
                outcome = self.demo.enroll_face(name, photo, bool(consent), clicked)
        except (*USER_ERRORS, UploadGone) as exc:
            return refused(UPLOAD_GONE if isinstance(exc, UploadGone) else f"{for_people(str(exc))}.")
        receipt = outcome.receipt.to_dict()
        rows = self.verdict_rows(outcome.verdicts, [photo])
        return (rows, self.receipt_text(receipt), receipt["subject_id"], receipt["deletion_token"], "", None, False,
                None, NO_FACE_CHOSEN, "**Enrolled.** Your receipt, subject id and deletion token are at the top of this tab.")

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

    def describe_mine(self, subject_id: str, token: str, request: gr.Request | None = None) -> tuple[dict | None, str]:
        """`describe` for the page: what is stored, or None and why not (a message that stays in the tab)."""
        return _in_page(lambda: self.describe(subject_id, token, request))

    def export_download(self, subject_id: str, token: str, request: gr.Request | None = None) -> tuple[dict | None, str]:
        """`export` for the page, which turns it into a download in the browser (EXPORT_DOWNLOAD_JS):
        no copy is written on the server, so no URL can serve it later. Also a line saying so, or None
        and why not."""
        data, why = _in_page(lambda: self.export(subject_id, token, request))
        if data is None:
            return None, why
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
    ) -> tuple[str, dict | None, Any, Any, Any, Any, Any]:
        """The page's confirmed "Delete my data": the receipt in plain words and as JSON, then what the
        tab clears (what was shown as stored, the export, the tab's message, the token) and the hidden
        confirmation. Refused: why, in place of the receipt, and nothing else changes."""
        receipt, why = _in_page(lambda: self.forget(subject_id, token, request))
        hidden = gr.update(visible=False)
        if receipt is None:
            return why, None, gr.update(), gr.update(), gr.update(), gr.update(), hidden
        return self.erasure_text(receipt), receipt, None, None, "", "", hidden

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
            f"{check}.\n\n{for_people(receipt['copies_before_erasure'])}\n\nThe signed receipt below proves it; keep it."
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
            return f"**Audit log verifies: cannot tell.** {for_people(str(exc))}"
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
            return _enrolment_json(self.demo.enroll(name, photos, consent=bool(consent)))

    @_user_errors
    def api_enroll_face(self, name: str, photo: str | None, face: int | None, consent: bool) -> dict:
        """Enrol from one face of a group photo: `face` is its number (from 1, as /detect numbers
        them). Only that face is embedded and stored. Returns what /enroll returns."""
        with self._using(photo):
            return _enrolment_json(self.demo.enroll_face(name, _required_photo(photo), bool(consent), _face_number(face)))


def _enrolment_json(outcome: EnrolmentOutcome) -> dict:
    """The enrolment receipt and a verdict per photo, as the API returns them."""
    return {
        **outcome.receipt.to_dict(),
        "photos": [{"photo": v.index + 1, "accepted": v.accepted, "reason": v.reason} for v in outcome.verdicts],
    }


def _point(point: object) -> tuple[float, float] | None:
    """A clicked point (x, y pixels) as `pick_face` keeps it, or None when there is none."""
    try:
        x, y = (float(v) for v in point)
    except (TypeError, ValueError):
        return None
    return x, y


def _face_number(face: object) -> int:
    """A face's number as sent (a whole number from a client); refused with a message otherwise."""
    try:
        if not isinstance(face, bool) and float(face).is_integer():
            return int(float(face))
    except (TypeError, ValueError, OverflowError):
        pass
    raise refusal("Please give the number of your face (a whole number from 1, as /detect numbers them).")


def _in_page(call: Callable[[], Any]) -> tuple[Any, str]:
    """A handler run for the page: (its result, "") or (None, the refusal as Markdown). The message stays
    where the person is looking until the next action; a toast would vanish, an error badge would
    cover the output."""
    try:
        return call(), ""
    except gr.Error as exc:
        return None, f"⚠️ {exc.message}"


def _client(request: gr.Request | None) -> str | None:
    """Who is asking, for the vault's limit on wrong tokens: the peer's address (None in tests)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def _required_photo(photo: str | None) -> str:
    if photo is None:
        raise refusal("Please send a photo.")
    return photo
