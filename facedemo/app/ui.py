"""The Gradio page: one builder per tab, wired to the handlers (facedemo.app.handlers).

`build` lays out the page; each tab's builder places its components and connects their events. The
named API endpoints sit on hidden components so that gradio_client finds them under stable names.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from facedemo.app import notice
from facedemo.app.album_handlers import PEOPLE_HEADERS, PHOTO_HEADERS, AlbumHandlers
from facedemo.app.albums import KEEP_SECONDS
from facedemo.app.handlers import (
    DETECTOR_NAMES,
    NO_FACE_CHOSEN,
    SUBJECT_HEADERS,
    TABLE_HEADERS,
    VERDICT_HEADERS,
    Handlers,
)
from facedemo.app.service import CONSENT_TEXT, CONSENT_VERSION
from facedemo.embedding import model_spec
from facedemo.images import file_extensions

# Events that run the networks share one queue group, so that at most the queue's default limit
# of them run at once however many tabs are open (the networks themselves run one at a time).
MODEL_EVENTS = {"concurrency_id": "models", "concurrency_limit": "default"}
# The page's own events; the API is the named endpoints.
UI_ONLY = {"api_visibility": "private"}

# On a phone's width every tab stays in the tab bar (gradio moves those that do not fit behind
# "..."), and the faces table keeps its first columns, face and identity, in view.
PAGE_CSS = """
@media (max-width: 520px) {
  .tab-container button { padding: 6px 7px !important; font-size: 14px !important; }
}
"""

# Gradio's own words for the upload box, in this page's terms; "common.upload" has no English text
# in gradio, which would otherwise show its key to screen readers.
PAGE_WORDS = gr.I18n(en={
    "common.upload": "Upload a photo",
    "upload_text.drop_image": "Drop a photo here",
    "upload_text.click_to_upload": "click to choose",
    "upload_text.drop_file": "Drop photos here",
    "upload_text.paste_clipboard": "Paste a photo",
    "common.complete": "Uploaded",
})


def launch_options() -> dict[str, Any]:
    """What `gr.Blocks.launch` needs besides the server settings: the page's style and words."""
    return {"css": PAGE_CSS, "i18n": PAGE_WORDS}


# The formats facedemo.images decodes, offered by the file picker: an SVG or a PDF is refused there,
# before it is uploaded, rather than previewed and then refused.
PHOTO_TYPES = file_extensions()

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


def as_sent(component: gr.Slider | gr.Number) -> gr.Slider | gr.Number:
    """The component with the value passed to the handler as sent (a threshold, a face number).

    Gradio's own check meets text or a list with a TypeError and no message a visitor can read;
    the handlers' checks (matching.checked_threshold, the face number's) say what is wrong, and
    know the model's ceiling. Set on the instance, for the reason given in `photo_input`.
    """
    component.preprocess = lambda payload: payload
    return component


@dataclass(frozen=True)
class DetectTab:
    """What other tabs re-use of the first one: re-deciding its result after a deletion."""

    shown: gr.State
    threshold: gr.Slider
    blur: gr.Checkbox
    outputs: list[Any]


def build(h: Handlers, examples: Sequence[Path] = ()) -> gr.Blocks:
    """The whole page around the handlers' FaceDemo; `examples` are photo files offered under the upload.

    The app's upload folder sweeps what Gradio writes there (facedemo.app.uploads); Gradio's own
    sweep (every 10 minutes, files older than 15) is the fallback where no UploadFolder is used.
    """
    with gr.Blocks(title="facedemo: face detection vs recognition", delete_cache=(600, 900)) as page:
        # First, so that they get these names: gradio names the page's private events after their
        # functions too, and would give a later endpoint a suffix ("enroll_1").
        albums = AlbumHandlers(h.demo, h.uploads)
        _api_endpoints(h, albums)
        gr.Markdown("# Face detection vs face recognition")
        if h.demo.dev_mode:
            gr.Markdown(
                "⚠️ **Development mode**: no `FACEDEMO_MASTER_KEY` is set; the vault's key is a local file. "
                "Do not enrol real people here.",
                elem_id="dev-mode",
            )
        detect = _detect_tab(h, examples)
        _album_tab(albums)
        _enrol_tab(h)
        _my_data_tab(h, detect)
        audit = _how_it_works_tab(h)
        page.load(h.audit_status, None, audit, **UI_ONLY)
        # gradio keeps a closed tab's gr.State for an hour (state_holder's STATE_TTL_WHEN_CLOSED),
        # whatever its time_to_live: the session's photo and result go when the tab closes.
        page.unload(_state_dropper(page))
    return page


def _state_dropper(page: gr.Blocks):
    def drop_session_state(request: gr.Request) -> None:
        page.state_holder.delete_state(request.session_hash)

    return drop_session_state


def _detect_tab(h: Handlers, examples: Sequence[Path]) -> DetectTab:
    demo = h.demo
    # The slider stops at the model's ceiling: beyond it, strangers would be named as enrolled people.
    ceiling = model_spec(demo.model_id).max_threshold
    with gr.Tab("Photo", id="detect"):
        gr.Markdown(notice.LEDE, elem_id="lede")
        with gr.Row():
            photo = photo_input(
                label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"],
                height=320, elem_id="photo",
            )
            with gr.Column():
                threshold = as_sent(gr.Slider(
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
                detector = gr.Radio(
                    [(name, key) for key, name in DETECTOR_NAMES.items()], value=demo.detector_id,
                    label="Face detector", elem_id="detector",
                    info="MTCNN (a cascade of three small CNNs) or YuNet (one CNN): used at the next detection.",
                )
                go = gr.Button("Detect and recognize", variant="primary", elem_id="analyse")
                # Right under the button, where the person is looking: the result in two sentences, or
                # why there is none (kept until the next photo).
                summary = gr.Markdown(elem_id="summary")
                gallery = gr.Examples(
                    [[str(p)] for p in examples], inputs=[photo], api_visibility="private", elem_id="examples",
                    label="Examples (public-domain photos shipped with scikit-image and matplotlib): click one",
                    example_labels=[notice.example_title(p) for p in examples],
                ) if examples else None
        # Sent as JPEG: gradio's default, WebP, took 90-150 ms to encode the two 1280-px pictures,
        # half of the analysis itself; JPEG takes 4-6 ms (facedemo.tools.bench_page).
        with gr.Row():
            detection_image = gr.Image(
                label="Detection: where are the faces?",
                interactive=False, height=440, elem_id="detection-image", format="jpeg",
            )
            recognition_image = gr.Image(
                label="Recognition: who is it?",
                interactive=False, height=440, elem_id="recognition-image", format="jpeg",
            )
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="faces-table", label="Faces")
        gr.Markdown(notice.DIFFERENCE, elem_id="difference")
        # Per browser session; dropped after 15 minutes so that photos and names do not linger in memory.
        shown = gr.State(None, time_to_live=900)
        outputs = [detection_image, recognition_image, table, summary, shown]
        go.click(h.analyse, [photo, threshold, blur, detector], outputs, **MODEL_EVENTS, **UI_ONLY)
        for control in (threshold, blur):
            control.change(h.redecide, [shown, threshold, blur], outputs, trigger_mode="always_last", **UI_ONLY)
        if gallery is not None:
            gallery.load_input_event.then(h.analyse, [photo, threshold, blur, detector], outputs, **MODEL_EVENTS, **UI_ONLY)
    return DetectTab(shown, threshold, blur, outputs)


def _album_tab(a: AlbumHandlers) -> None:
    with gr.Tab("Album", id="album"):
        gr.Markdown(
            "For photos of an event: add many photos (or one zip). Every face is found and recognised; "
            "people who enrolled (and so consented) stay sharp, everyone else is hidden in the download. "
            "Unknown faces are grouped by person for this page only: nothing about them is stored."
        )
        with gr.Row():
            with gr.Column():
                files = gr.File(
                    label="Photos or one zip", file_count="multiple", file_types=[*PHOTO_TYPES, ".zip"],
                    type="filepath", elem_id="album-files",
                )
                go = gr.Button("Analyse the album", variant="primary", elem_id="album-button")
            with gr.Column():
                summary = gr.Markdown("The album's summary will appear here.", elem_id="album-summary")
                me = gr.Dropdown(
                    choices=[], label="These unknown faces are me: keep them sharp", elem_id="album-me",
                    info="Only for your own face: everyone else who is not enrolled stays hidden.",
                )
                with gr.Row():
                    download_go = gr.Button("Make the anonymised zip", elem_id="album-download-button")
                    clear_go = gr.Button("Drop the photos now", elem_id="album-clear")
                ready = gr.Markdown(elem_id="album-ready")
                download = gr.File(label="Anonymised album", interactive=False, elem_id="album-zip")
        sheet = gr.Gallery(label="Contact sheet", columns=4, height="auto", elem_id="album-sheet",
                           allow_preview=True, buttons=[])
        with gr.Row():
            photos = gr.Dataframe(headers=PHOTO_HEADERS, interactive=False, label="Photos", elem_id="album-photos")
            people = gr.Dataframe(headers=PEOPLE_HEADERS, interactive=False, label="Enrolled people found",
                                  elem_id="album-people")
        strips = gr.Image(label="Unknown people, grouped by appearance (for this page only)", interactive=False,
                          elem_id="album-unknown", buttons=[])
        state = gr.State(None, time_to_live=KEEP_SECONDS)
        go.click(a.analyse, [files, state], [sheet, photos, people, strips, summary, me, state],
                 **MODEL_EVENTS, **UI_ONLY).then(lambda: None, None, files, **UI_ONLY)
        download_go.click(a.download, [state, me], [download, ready], **MODEL_EVENTS, **UI_ONLY)
        clear_go.click(a.forget, [state], [state, ready], **UI_ONLY)


def _enrol_tab(h: Handlers) -> None:
    with gr.Tab("Enrol", id="enrol"):
        gr.Markdown(
            "Enrol yourself so that recognition can name you. Use 1–5 photos of **you alone**, face clearly "
            "visible (two or more recognise you better); each is checked and accepted or rejected with a reason."
        )
        with gr.Row():
            with gr.Column():
                name = gr.Textbox(label="Name", max_length=100, elem_id="enrol-name")
                photos = gr.File(
                    label="Photos of you", file_count="multiple", file_types=PHOTO_TYPES, type="filepath",
                    elem_id="enrol-photos",
                )
                gr.Markdown(f"**Consent** (version {CONSENT_VERSION}): {CONSENT_TEXT}")
                consent = gr.Checkbox(label="I consent to the above", elem_id="enrol-consent")
                go = gr.Button("Enrol", variant="primary", elem_id="enrol-button")
            with gr.Column():
                verdicts = gr.Dataframe(headers=VERDICT_HEADERS, interactive=False, label="Photos", elem_id="verdicts")
                receipt = gr.Markdown("Your receipt will appear here.", elem_id="receipt")
                subject = gr.Textbox(label="Subject id", interactive=False, buttons=["copy"], elem_id="receipt-subject")
                token = gr.Textbox(
                    label="Deletion token (shown once: copy it now)", interactive=False, buttons=["copy"],
                    elem_id="receipt-token",
                )
        go.click(
            h.enroll, [name, photos, consent], [verdicts, receipt, subject, token, name, photos, consent],
            **MODEL_EVENTS, **UI_ONLY,
        )
        with gr.Accordion("From a group photo: click your face", open=False, elem_id="group-enrol"):
            gr.Markdown(
                "Add a photo with other people in it and click your own face. Only that face is turned into "
                "a template and stored; the other faces are not analysed and nothing of them is kept. "
                "The name and consent above apply."
            )
            group_photo = photo_input(
                label="Group photo", type="filepath", sources=["upload", "clipboard"], height=360,
                elem_id="group-photo",
            )
            point = gr.State(None)
            chosen = gr.Markdown(NO_FACE_CHOSEN, elem_id="group-chosen")
            group_go = gr.Button("Enrol the face I clicked", variant="primary", elem_id="group-enrol-button")
            group_note = gr.Markdown(elem_id="group-note")
        group_photo.select(h.pick_face, None, [point, chosen], **UI_ONLY)
        group_go.click(
            h.enroll_face, [name, group_photo, point, consent],
            [verdicts, receipt, subject, token, name, group_photo, consent, point, chosen, group_note],
            **MODEL_EVENTS, **UI_ONLY,
        )


def _my_data_tab(h: Handlers, detect: DetectTab) -> None:
    with gr.Tab("My data", id="my-data"):
        gr.Markdown(
            "Enter the subject id and deletion token from your enrolment receipt to see what is stored about "
            "you, download it, or delete it. You see only your own data."
        )
        with gr.Row():
            subject = gr.Textbox(label="Subject id", elem_id="my-subject")
            token = gr.Textbox(label="Deletion token", type="password", elem_id="my-token")
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
        note = gr.Markdown(elem_id="my-data-note")
        erasure_note = gr.Markdown(elem_id="erasure-note")
        erasure = gr.JSON(label="Erasure receipt", elem_id="erasure")
        show_go.click(h.describe_mine, [subject, token], [stored, note], **UI_ONLY)
        export_go.click(h.export_download, [subject, token], [export_data, note], **UI_ONLY).success(
            None, export_data, None, js=EXPORT_DOWNLOAD_JS, **UI_ONLY
        )
        forget_go.click(_shown, None, confirm_row, **UI_ONLY)
        cancel_go.click(_hidden, None, confirm_row, **UI_ONLY)
        # The first tab's result is decided again at once, so the erased name leaves it too.
        confirm_go.click(
            h.forget_mine, [subject, token],
            [erasure_note, erasure, stored, export_data, note, token, confirm_row], **UI_ONLY,
        ).success(h.redecide, [detect.shown, detect.threshold, detect.blur], detect.outputs, **UI_ONLY)
        _operator_section(h)


def _operator_section(h: Handlers) -> None:
    with gr.Accordion("Operator", open=False, elem_id="operator"):
        gr.Markdown(
            "The operator can list everyone enrolled and delete anyone; the operator cannot see or export "
            "anyone's templates."
            + ("" if h.demo.config.admin_token else
               " No operator token is configured (`FACEDEMO_ADMIN_TOKEN`), so these functions are off.")
        )
        on = h.demo.config.admin_token is not None
        admin_token = gr.Textbox(label="Admin token", type="password", elem_id="admin-token", interactive=on)
        list_go = gr.Button("List everyone enrolled", elem_id="list-button", interactive=on)
        subjects = gr.Dataframe(headers=SUBJECT_HEADERS, interactive=False, label="Enrolled", elem_id="subjects")
        subject = gr.Textbox(label="Subject id to delete", elem_id="admin-subject", interactive=on)
        forget_go = gr.Button("Delete this subject", variant="stop", elem_id="admin-forget-button", interactive=on)
        erasure = gr.JSON(label="Erasure receipt", elem_id="admin-erasure")
        list_go.click(h.list_subjects, admin_token, subjects, **UI_ONLY)
        forget_go.click(h.forget, [subject, admin_token], erasure, **UI_ONLY)


def _how_it_works_tab(h: Handlers) -> gr.Markdown:
    """The tab; its audit line, which the page fills in at every load."""
    with gr.Tab("How it works", id="how"):
        gr.Markdown(notice.how_it_works(h.demo))
        figure = notice.example_figure(h.demo)
        if figure is not None:
            gr.Image(figure, label="The flow, drawn by the app from its example photos", interactive=False,
                     elem_id="how-figure", buttons=[])
        with gr.Row():
            audit = gr.Markdown(elem_id="audit")
            audit_go = gr.Button("Verify the audit log again", elem_id="audit-button")
        audit_go.click(h.audit_status_full, None, audit, **UI_ONLY)
        with gr.Accordion("Model card (sources, weights, measured accuracy)", open=False, elem_id="model-card"):
            gr.Markdown(notice.model_card())
    return audit


def _shown() -> dict:
    return gr.update(visible=True)


def _hidden() -> dict:
    return gr.update(visible=False)


def _api_endpoints(h: Handlers, albums: AlbumHandlers) -> None:
    """The named endpoints for gradio_client, on hidden components (the page has no use for them)."""
    with gr.Column(visible=False):
        photo = photo_input(type="filepath", label="photo")
        threshold = as_sent(gr.Number(None, label="threshold"))
        name = gr.Textbox(label="name")
        photos = gr.File(file_count="multiple", type="filepath", label="photos")
        consent = gr.Checkbox(label="consent")
        face = as_sent(gr.Number(None, label="face", precision=0))
        subject_id = gr.Textbox(label="subject_id")
        token = gr.Textbox(label="token")
        result = gr.JSON(label="result")
        zipped = gr.File(label="zip")
        keep_cluster = as_sent(gr.Number(None, label="keep_cluster", precision=0))
        gr.Button(visible=False).click(
            albums.api_anonymize, [photos, keep_cluster], zipped, api_name="anonymize",
            api_description=albums.api_anonymize.__doc__, **MODEL_EVENTS,
        )
        for api_name, fn, inputs, extra in (
            ("album", albums.api_album, [photos], MODEL_EVENTS),
            ("detect", h.api_detect, [photo], MODEL_EVENTS),
            ("recognize", h.api_recognize, [photo, threshold], MODEL_EVENTS),
            ("enroll", h.api_enroll, [name, photos, consent], MODEL_EVENTS),
            ("enroll_face", h.api_enroll_face, [name, photo, face, consent], MODEL_EVENTS),
            ("forget", h.forget, [subject_id, token], {}),
            ("export", h.export, [subject_id, token], {}),
        ):
            gr.Button(visible=False).click(fn, inputs, result, api_name=api_name, api_description=fn.__doc__, **extra)
