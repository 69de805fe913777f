"""The app's one entry to the pipeline and the encrypted vault: analyse, enrol, describe, export, forget."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from facedemo.alignment import align
from facedemo.app.config import Config
from facedemo.detection import detector_name
from facedemo.embedding import model_spec
from facedemo.images import ImageError, ImageSource, load
from facedemo.matching import Gallery, checked_threshold, decide, distances, nearest
from facedemo.pipeline import Pipeline
from facedemo.results import Analysis, Face
from privacy import VaultError
from privacy.vault import Vault, validate_name

logger = logging.getLogger(__name__)

CONSENT_VERSION = "2026-11-v1"
CONSENT_TEXT = (
    "I agree that facedemo computes face templates (numbers describing my face) from these photos "
    "and stores them, encrypted, to recognise me in photos uploaded to this demo. The photos themselves "
    "are not stored. I can see, export and delete my data at any time with my subject id and deletion "
    "token; otherwise it is deleted automatically when it expires."
)

# Enrolment quality gates. A usable face is confident and big enough for a 150 px chip to carry
# detail; sharpness is the variance of the Laplacian of the aligned grey chip (pixel units^2).
MIN_ENROL_SCORE = 0.95
MIN_ENROL_FACE_PX = 40
# A second face at least this fraction of the largest one's size makes an enrolment photo ambiguous.
COMPARABLE_FACE = 0.6
MIN_SHARPNESS = 15.0


class EnrolmentError(ValueError):
    """Enrolment was refused as a whole; the message says why, `verdicts` (when photos were
    checked) why each photo was or was not usable."""

    def __init__(self, message: str, verdicts: Sequence[PhotoVerdict] = ()) -> None:
        super().__init__(message)
        self.verdicts = tuple(verdicts)


@dataclass(frozen=True)
class PhotoVerdict:
    """Whether one enrolment photo was used (index counts from 0), and why not when it was not."""

    index: int
    accepted: bool
    reason: str


@dataclass(frozen=True)
class EnrolmentOutcome:
    """The vault's receipt (subject id, one-time deletion token, expiry) and a verdict per photo."""

    receipt: object
    verdicts: tuple[PhotoVerdict, ...]


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey H x W (or H x W x 3) chip; low = blurred."""
    grey = chip.astype(np.float32)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = (
        grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    )
    return float(lap.var())


def open_vault(config: Config, clock: Callable[[], datetime] | None = None) -> Vault:
    """The encrypted vault: SQLite in `config.data_dir`, or the shared PostgreSQL one at `config.database_url`,
    with the configured keys and retention."""
    return Vault.open(
        config.data_dir,
        master_key=config.master_key,
        admin_token=config.admin_token,
        retention_days=config.retention_days,
        key_rotation_days=config.key_rotation_days,
        clock=clock,
        database_url=config.database_url,
    )


class FaceDemo:
    """Pipeline (models loaded once) + encrypted vault, behind the operations the UI and CLI offer."""

    def __init__(
        self,
        config: Config | None = None,
        pipeline: Pipeline | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`clock` (timezone-aware now) is for tests of retention; by default the system clock."""
        self.config = config or Config.from_env()
        self.pipeline = pipeline or self.config.pipeline()
        self.vault = open_vault(self.config, clock)
        self._galleries: dict[str, tuple[int, Gallery]] = {}
        self._gallery_lock = threading.Lock()
        self._purge_stop = threading.Event()
        self._purge_thread: threading.Thread | None = None

    @property
    def dev_mode(self) -> bool:
        return self.vault.dev_mode

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    @property
    def threshold(self) -> float:
        return self.pipeline.threshold

    @property
    def detector_id(self) -> str:
        """The configured face detector ("mtcnn" or "yunet"), used when a request names none."""
        return self.pipeline.detector_id

    def installed_models(self) -> list[str]:
        """Models whose code loads here, the active model first (see Pipeline.installed_models)."""
        return self.pipeline.installed_models()

    def warm_up(self) -> None:
        """Load the detector and every installed model and run each once, so requests are fast."""
        self.pipeline.warm_up(self.installed_models())

    def gallery(self, model_id: str | None = None) -> Gallery:
        """The decrypted gallery of one model: stacked once, then kept in step with the vault change by change.

        An enrolment or erasure (here, or by another replica of a shared vault) adds or removes just that
        subject's rows; the gallery is stacked again from every subject only when the vault can no
        longer list the changes one by one (thousands at once)."""
        model_id = model_id or self.model_id
        with self._gallery_lock:
            cached = self._galleries.get(model_id)
            changes = self.vault.changes_since(model_id, None if cached is None else cached[0])
            if changes.complete:
                gallery = Gallery.from_subjects(changes.added, model_id)
            elif changes.version == cached[0]:
                return cached[1]
            else:
                gallery = cached[1].updated(changes.removed, changes.added)
            self._galleries[model_id] = (changes.version, gallery)
            return gallery

    def load_image(self, source: ImageSource) -> np.ndarray:
        return load(source, max_bytes=self.config.max_image_bytes, max_pixels=self.config.max_image_pixels)

    def detect(self, image: ImageSource, detector: str | None = None) -> Analysis:
        """Detection only: every face's box, landmarks and confidence. The vault is not touched and no
        face is embedded, so detection works on no biometric data (each decision is unknown).
        detector: "mtcnn" or "yunet"; None: the configured one (DetectorError for another name)."""
        return self.pipeline.analyse(self.load_image(image), detector=detector)

    def analyse(self, image: ImageSource, threshold: object = None, detector: str | None = None) -> Analysis:
        """Detection and recognition of every face against the enrolled people.

        threshold: model distance units, 0..the model's ceiling; None: the configured one
        (ThresholdError otherwise, before the photo is read). detector: as in `detect`, checked
        before the photo is read.
        """
        threshold = checked_threshold(model_spec(self.model_id), threshold) if threshold is not None else None
        detector = detector_name(detector) if detector is not None else None
        return self.pipeline.analyse(self.load_image(image), self.gallery(), threshold, detector=detector)

    def redecide(self, analysis: Analysis, threshold: object) -> Analysis:
        """An earlier analysis decided again at `threshold` against the people enrolled now (no
        network runs): a person deleted since is no longer named. ThresholdError as `analyse`."""
        return analysis.restricted_to(set(self.gallery(analysis.model_id).subject_ids)).with_threshold(threshold)

    def _enrolment_face(self, image: np.ndarray) -> tuple[Face | None, str]:
        """The face an enrolment photo is about, or None, and the reason for people.

        The dominant face is used, as on the Photo tab: the largest confident one. A face in the
        background is ignored and mentioned, unless it is as large as the dominant one (at least
        COMPARABLE_FACE of its size): then nobody can tell whose photo it is.
        """
        faces = self.pipeline.detect(image)
        if not faces:
            return None, "no face found"
        confident = [f for f in faces if f.score >= MIN_ENROL_SCORE]
        if not confident:
            return None, "no clear face found"
        face = max(confident, key=lambda f: f.area)
        side = min(face.width, face.height)
        rivals = [f for f in confident if f is not face and min(f.width, f.height) >= COMPARABLE_FACE * side]
        if rivals:
            return None, (
                f"{len(rivals) + 1} faces of similar size found; use a photo of you alone, or pick your face "
                "in it under 'From a group photo'"
            )
        problem = self._unusable(image, face)
        if problem:
            return None, problem
        others = len(faces) - 1
        if others:
            return face, f"accepted (the largest face; {others} smaller face{'s' if others > 1 else ''} ignored)"
        return face, "accepted"

    @staticmethod
    def _unusable(image: np.ndarray, face: Face) -> str | None:
        """Why `face` cannot be enrolled (too small, too blurred), or None when it can."""
        side = min(face.width, face.height)
        if side < MIN_ENROL_FACE_PX:
            return f"face too small ({side:.0f} px; at least {MIN_ENROL_FACE_PX} px needed)"
        if sharpness(align(image, face.landmarks)) < MIN_SHARPNESS:
            return "face too blurred"
        return None

    @staticmethod
    def _chosen_face(faces: Sequence[Face], choice: int | tuple[float, float]) -> Face:
        """The face a person picked in a group photo: its number (from 1, left to right, as /detect
        numbers them) or a point (x, y in the photo's pixels) inside its box; EnrolmentError otherwise."""
        if not faces:
            raise EnrolmentError("no face found in this photo")
        if isinstance(choice, tuple):
            x, y = choice
            inside = [f for f in faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
            if not inside:
                raise EnrolmentError(
                    f"no face where you clicked ({x:.0f}, {y:.0f}); click inside your face ({len(faces)} found)"
                )
            return min(inside, key=lambda f: f.area)  # the innermost, when boxes nest
        if isinstance(choice, bool) or not isinstance(choice, int) or not 1 <= choice <= len(faces):
            raise EnrolmentError(f"choose a face from 1 to {len(faces)} (the numbers on the Photo tab's boxes)")
        return faces[choice - 1]

    def enroll_face(
        self, name: str, photo: ImageSource, consent: bool, choice: int | tuple[float, float]
    ) -> EnrolmentOutcome:
        """Enrol one person from one face of a group photo: `choice` is the face's number (from 1,
        left to right) or a point (x, y pixels) the person clicked inside it.

        Only the chosen face is embedded and stored; the other faces are neither embedded nor kept,
        and the photo itself is decoded in memory only.
        """
        name = self._enrolment_request(name, consent)
        image = self.load_image(photo)
        faces = self.pipeline.detect(image)
        face = self._chosen_face(faces, choice)
        if face.score < MIN_ENROL_SCORE:
            raise EnrolmentError(f"the chosen face is not clear enough (confidence {face.score:.2f})")
        problem = self._unusable(image, face)
        if problem:
            raise EnrolmentError(f"the chosen face cannot be used: {problem}")
        templates = {m: self.pipeline.embed(image, [face], m).astype(np.float32) for m in self.installed_models()}
        receipt = self.vault.enroll(name, templates, consent_text_version=CONSENT_VERSION, consent_given=True)
        number = faces.index(face) + 1
        reason = f"accepted (face {number} of {len(faces)}; the other faces were not used)"
        return EnrolmentOutcome(receipt, (PhotoVerdict(0, True, reason),))

    @staticmethod
    def _enrolment_request(name: str, consent: bool) -> str:
        """The name, checked, once consent is given; EnrolmentError or NameError's refusal otherwise."""
        if consent is not True:
            raise EnrolmentError("enrolment needs explicit consent (the consent box in the app, --consent on the command line)")
        return validate_name(name)

    def enroll(
        self,
        name: str,
        photos: Sequence[ImageSource],
        consent: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> EnrolmentOutcome:
        """Enrol one person from photos that each show exactly one usable face.

        Templates are computed for every installed model, so switching models needs no
        re-enrolment. Photos are decoded in memory only and never stored.
        """
        name = self._enrolment_request(name, consent)
        photos = list(photos or [])
        if not photos:
            raise EnrolmentError("add at least one photo")
        if len(photos) > self.config.max_enrol_photos:
            raise EnrolmentError(f"{len(photos)} photos given; the limit is {self.config.max_enrol_photos}")
        models = self.installed_models()
        verdicts: list[PhotoVerdict] = []
        usable: list[int] = []  # photos with a usable face
        rows: dict[str, list[np.ndarray]] = {m: [] for m in models}  # their embeddings, per model
        for index, photo in enumerate(photos):
            if progress:
                progress(index, len(photos))
            try:
                image = self.load_image(photo)
            except ImageError as exc:
                verdicts.append(PhotoVerdict(index, False, str(exc)))
                continue
            face, reason = self._enrolment_face(image)
            verdicts.append(PhotoVerdict(index, face is not None, reason))
            if face is not None:
                usable.append(index)
                for model_id in models:
                    rows[model_id].append(self.pipeline.embed(image, [face], model_id)[0])
        if progress:
            progress(len(photos), len(photos))
        refused = self._other_people(usable, np.array(rows[self.model_id])) if usable else {}
        verdicts = [PhotoVerdict(v.index, False, refused[v.index]) if v.index in refused else v for v in verdicts]
        if not any(v.accepted for v in verdicts):
            reasons = "; ".join(f"photo {v.index + 1}: {v.reason}" for v in verdicts)
            raise EnrolmentError(f"no photo could be used ({reasons})", verdicts)
        keep = [n for n, index in enumerate(usable) if index not in refused]
        templates = {m: np.stack(r)[keep].astype(np.float32) for m, r in rows.items()}
        receipt = self.vault.enroll(name, templates, consent_text_version=CONSENT_VERSION, consent_given=True)
        return EnrolmentOutcome(receipt, tuple(verdicts))

    def _other_people(self, indices: list[int], embeddings: np.ndarray) -> dict[int, str]:
        """Photos (index -> reason) refused because their face is not the enrolment's person.

        One enrolment is one person: the reference is the photo whose face matches most of the
        others at the active threshold; a face that does not match it is refused. When no photo
        matches more than half of them, nobody can tell whose enrolment it is and all are refused.
        """
        if len(indices) < 2:
            return {}
        apart = distances(embeddings, embeddings, model_spec(self.model_id).metric)
        same = apart < self.threshold
        reference = int(np.argmax(same.sum(1)))
        if 2 * same[reference].sum() <= len(indices):
            numbers = ", ".join(str(i + 1) for i in indices)
            return {
                i: f"photos {numbers} do not show one person (no face matches more than half of the others); "
                "enrol one person at a time"
                for i in indices
            }
        return {
            i: f"not the same person as photo {indices[reference] + 1} (distance {apart[reference, n]:.2f}, "
            f"above the threshold {self.threshold:.2f}); one enrolment is one person"
            for n, i in enumerate(indices)
            if not same[reference, n]
        }

    def _probe(self, model_id: str, templates: np.ndarray) -> list[str | None]:
        """Who the deleted templates would be identified as now: proof they match nobody deleted."""
        spec = model_spec(model_id)
        gallery = self.gallery(model_id)
        if len(gallery) == 0:
            return [None] * len(templates)
        candidates = nearest(templates, gallery, spec)
        threshold = self.threshold if model_id == self.model_id else spec.default_threshold
        # Each template is its own probe photo: decide them one at a time, not jointly.
        return [decide([c], threshold)[0].subject_id for c in candidates]

    def describe(self, subject_id: str, token: str, client: str | None = None) -> dict:
        """What is stored about the subject, nothing decrypted; only with the subject's own token.

        client: who is asking (e.g. an IP address), for the vault's limit on wrong tokens."""
        return self.vault.describe(subject_id, token, client=client)

    def export(self, subject_id: str, token: str, client: str | None = None) -> dict:
        """The subject's own data, decrypted; only with the subject's own token."""
        return self.vault.export(subject_id, token, client=client)

    def forget(self, subject_id: str, token: str, client: str | None = None) -> dict:
        """Erase the subject (its token or the operator's); the signed receipt as a dict."""
        return self.vault.forget(subject_id, token, probe=self._probe, client=client).to_dict()

    def list_subjects(self, admin_token: str, client: str | None = None) -> list[dict]:
        return self.vault.list_subjects(admin_token, client=client)

    def purge_expired(self) -> list[str]:
        """Erase every subject past its retention date now; their ids."""
        return self.vault.purge_expired()

    def start_retention_timer(self, every_s: float = 3600.0) -> None:
        """Purge expired subjects every `every_s` seconds in a daemon thread until `close`.

        The vault also purges when it opens; the timer covers an app that runs for months.
        """
        if self._purge_thread is not None:
            return

        def loop() -> None:
            while not self._purge_stop.wait(every_s):
                try:
                    self.purge_expired()
                except VaultError as exc:
                    # Keep the timer alive: the next round may succeed (e.g. a locked database).
                    logger.warning("retention purge failed: %s", exc)

        self._purge_thread = threading.Thread(target=loop, name="retention-purge", daemon=True)
        self._purge_thread.start()

    def audit_verify(self, full: bool = False) -> dict:
        """The audit chain's check: every entry when `full`, else what was added since the last check."""
        report = self.vault.audit_verify(full=full)
        return {"ok": report.ok, "entries": report.entries, "first_broken": report.first_broken,
                "reason": report.reason}

    def close(self) -> None:
        self._purge_stop.set()
        if self._purge_thread is not None:
            self._purge_thread.join(timeout=5)
        self.vault.close()
