"""What the page tells people, apart from its layout: the difference note, how it works, the privacy notice
(each sentence of which a test proves; README's Privacy section names the tests) and the model card."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from facedemo.app.service import CONSENT_VERSION, FaceDemo
from facedemo.embedding import model_spec
from models.registry import MODELS

DIFFERENCE = """\
**Detection** answers *where are the faces?* It finds every face and gives its box, five landmarks
(eyes, nose tip, mouth corners) and a confidence that it is a face. It knows nothing about who anyone is.

**Recognition** answers *who is it?* It turns each detected face into an embedding (128 numbers) and
compares it with the people who enrolled with consent. A face closer than the threshold to an enrolled
person gets that name; otherwise it is **Unknown**. Moving the threshold re-decides at once, without
running the networks again: lower is stricter (fewer false matches, more Unknown).
"""



def model_card() -> str:
    """models/MODEL_CARD.md when it is installed, else one line per known model."""
    spec = find_spec("models")
    card = Path(spec.origin).parent / "MODEL_CARD.md" if spec and spec.origin else None
    if card is not None and card.is_file():
        return card.read_text(encoding="utf-8")
    return "\n".join(f"- **{spec.model_id}**: {spec.title}" for spec in MODELS.values())


def how_it_works(demo: FaceDemo) -> str:
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
