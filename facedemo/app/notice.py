"""What the page tells people, apart from its layout: the difference note, how it works, the privacy notice
(each sentence of which a test proves; README's Privacy section names the tests) and the model card."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np

from facedemo import render
from facedemo.alignment import align
from facedemo.app import examples
from facedemo.app.service import CONSENT_VERSION, FaceDemo
from facedemo.embedding import model_spec
from facedemo.matching import distances
from models.registry import MODELS

LEDE = (
    "Add a photo and press the button: on the left, what **detection** finds (where the faces are); "
    "on the right, what **recognition** concludes (who each one is, or Unknown). Photos added here are not stored."
)


def example_title(path: Path) -> str:
    """An example photo's name for people: 'grace_hopper.jpg' -> 'Grace Hopper'."""
    return Path(path).stem.replace("_", " ").title()


DIFFERENCE = """\
**Detection** answers *where are the faces?* It finds every face and gives its box, five landmarks
(eyes, nose tip, mouth corners) and a confidence that it is a face. It knows nothing about who anyone is.

**Recognition** answers *who is it?* It turns each detected face into an embedding (128 numbers) and
compares it with the people who enrolled with consent. A face closer than the threshold to an enrolled
person gets that name; otherwise it is **Unknown**. Moving the threshold re-decides at once, without
running the networks again: lower is stricter (fewer false matches, more Unknown).
"""



def model_card() -> str:
    """models/MODEL_CARD.md without its title (the page's accordion names it), else one line per model."""
    spec = find_spec("models")
    card = Path(spec.origin).parent / "MODEL_CARD.md" if spec and spec.origin else None
    if card is not None and card.is_file():
        text = card.read_text(encoding="utf-8")
        return text.split("\n", 1)[1].lstrip() if text.startswith("# ") else text
    return "\n".join(f"- **{spec.model_id}**: {spec.title}" for spec in MODELS.values())


def how_it_works(demo: FaceDemo) -> str:
    """Plain words first (what happens to a photo, what is kept about people), the technical names after."""
    retention = demo.config.retention_days
    ceiling = model_spec(demo.model_id).max_threshold
    key_line = (
        "⚠️ **Development mode**: no `FACEDEMO_MASTER_KEY` is set, so the master key is a file next to the data. "
        "Do not enrol real people here."
        if demo.dev_mode
        else "The master key comes from the `FACEDEMO_MASTER_KEY` secret and is never written to disk."
    )
    return f"""\
### What happens to a photo
1. **Find the faces** (detection). Three small neural networks look at the photo at several sizes and mark every
   face: a box, five points (eyes, nose tip, mouth corners) and how sure they are that it is a face.
2. **Straighten each face** (alignment). The five points are moved to where a standard face has them: the face is
   turned, scaled and shifted into a small upright square, the same for every photo.
3. **Describe each face with numbers** (embedding). Another network turns that square into 128 numbers. Photos of
   the same person give similar numbers; different people give different ones.
4. **Compare with the people who enrolled** (matching). The distance between the numbers says how alike two faces
   are. Below the threshold (**{demo.threshold:.2f}** now) the face gets that person's name; otherwise it is
   **Unknown**. One person's name never goes to two faces of the same photo.

The picture below is made by the app itself from its example photos: the faces it found, the squares it made
of them, and the distances it measured against the threshold.

### Privacy notice
- **What is stored**: for each person who enrolled with consent, their name and one template per accepted photo
  and model, the consent record (text version `{CONSENT_VERSION}`), and dates. **Photos are never stored**: a
  photo you send is read in memory and its upload is deleted when your request ends, from a folder that only
  this app can read; the pictures it draws for you are deleted within a minute, and at once when anyone deletes
  their data.
- **Encryption**: every person has their own random key that locks (encrypts) their name and
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
  templates, each entry sealed to the one before it so that an edited or removed entry is detected.

### The technical names
MTCNN (a cascade of three CNNs) for detection; a least-squares similarity transform (Umeyama) onto a 5-point
template for alignment; **{demo.model_id}** for the embedding ({model_spec(demo.model_id).title}); encryption with
AES-256-GCM, each person under their own key; the audit log is chained with HMAC-SHA256 so that an edited or
removed entry shows. Details, sources and measured accuracy: the model card below.
"""


def example_figure(demo: FaceDemo) -> np.ndarray | None:
    """The flow drawn from the example photos by the running models: Eileen Collins and Grace Hopper
    found in the group photo, their aligned chips, and the distances from Eileen Collins to a mirrored
    photo of herself and to Grace Hopper. None when the example packages are missing."""
    photos = examples.photos()
    if "group" not in photos:
        return None
    spec = model_spec(demo.model_id)
    group, mirrored = photos["group"], np.ascontiguousarray(photos["astronaut"][:, ::-1])
    faces, again = demo.pipeline.detect(group), demo.pipeline.detect(mirrored)
    if len(faces) != 2 or len(again) != 1:
        return None
    collins, hopper = demo.pipeline.embed(group, faces)
    mirror = demo.pipeline.embed(mirrored, again)[0]
    apart = distances(collins[None], np.stack([mirror, hopper]), spec.metric)[0]
    return render.explainer(
        group, faces, [align(group, f.landmarks, spec.template, spec.chip_size) for f in faces],
        [("Eileen Collins and her mirrored photo", float(apart[0])), ("Eileen Collins and Grace Hopper", float(apart[1]))],
        demo.threshold,
    )

