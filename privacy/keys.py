"""Keys of the vault: the master key, per-subject data keys (envelope encryption), derived HMAC keys, and the
recipes that seal each kind of blob.

Everything here is a thin layer over `cryptography`: AES-256-GCM for sealing, HKDF-SHA256 for
derivation. A sealed blob is `nonce (12 bytes) || ciphertext || tag (16 bytes)`; the associated
data names what the blob is and where it belongs, so a blob moved elsewhere fails to open.
The recipes (`seal_subject_key`, `seal_record`, `seal_template`, `seal_vault_secret` and their
`open_*` twins) are the only place that builds associated data: JSON of
["facedemo-vault-v1", what, where...], e.g. ["facedemo-vault-v1","template",subject,record,model].
Changing it makes every existing vault unreadable (tests/test_privacy_format.py pins it).
"""
from __future__ import annotations

import base64
import binascii
import errno
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy import VaultError

KEY_BYTES = 32  # AES-256 and HMAC-SHA256 keys alike
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per seal, so one key may seal ~2^32 blobs safely
KEY_FILE_NAME = "master.key"
# Written during a development-mode key rotation before the database commits, so that a crash
# between the commit and the key file's replacement is completed at the next open.
PENDING_KEY_FILE_NAME = "master.key.pending"


class MasterKeyError(VaultError):
    """The master key is missing, malformed, unreadable, or not the key this vault was made with."""


def random_id(nbytes: int) -> str:
    """Urlsafe random text of `nbytes` random bytes that never starts with "-".

    Subject ids and deletion tokens are typed as command-line arguments, where a leading "-"
    reads as an option (1 draw in 64 did). Redrawing keeps the other draws uniform and costs
    under 0.1 bit of the entropy.
    """
    while True:
        text = secrets.token_urlsafe(nbytes)
        if not text.startswith("-"):
            return text


def generate_master_key() -> str:
    """A new master key: urlsafe base64 text of 32 random bytes (44 characters), for FACEDEMO_MASTER_KEY."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def parse_master_key(text: str) -> bytes:
    """The 32 key bytes of a master key given as urlsafe base64 text; MasterKeyError when it is not one.

    The error message never repeats the key.
    """
    hint = (
        "the master key must be urlsafe base64 of 32 bytes (44 characters); "
        'create one with: python -c "from privacy.keys import generate_master_key as g; print(g())"'
    )
    if not isinstance(text, str):
        raise MasterKeyError(hint)
    compact = text.strip()
    padded = compact + "=" * (-len(compact) % 4)
    try:
        # b64decode(validate=True) rejects stray characters, which urlsafe_b64decode silently drops.
        raw = base64.b64decode(padded.translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(hint) from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(f"{hint} (it decodes to {len(raw)} bytes)")
    return raw


def write_key_file(path: Path, raw: bytes) -> None:
    """Write a master key as text to a new file `path` (mode 0600, flushed to disk); never overwrites."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyError(f"{path} already exists; refusing to overwrite a master key") from None
    except OSError as exc:
        raise MasterKeyError(f"cannot create the master key file {path}: {exc.strerror}") from None
    text = base64.urlsafe_b64encode(raw) + b"\n"
    try:
        try:
            if os.write(fd, text) != len(text):
                raise OSError(errno.ENOSPC, "the key was only partly written")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # A key file cut short (disk full) would be refused as malformed at every later start:
        # remove it, so that the next start, with space freed, begins cleanly.
        path.unlink(missing_ok=True)
        raise MasterKeyError(f"cannot write the master key file {path}: {exc.strerror or exc}") from None


def create_key_file(path: Path) -> bytes:
    """Create `path` holding a new master key (development mode); return the key bytes."""
    raw = secrets.token_bytes(KEY_BYTES)
    write_key_file(path, raw)
    return raw


def write_pending_key(data_dir: Path, raw: bytes) -> None:
    """Store the key a development-mode rotation is about to commit, next to the current key file."""
    pending = data_dir / PENDING_KEY_FILE_NAME
    pending.unlink(missing_ok=True)  # left by a rotation that never committed; that key was never used
    write_key_file(pending, raw)


def promote_pending_key(data_dir: Path) -> None:
    """Replace the key file by the pending key file (atomically and durably)."""
    try:
        os.replace(data_dir / PENDING_KEY_FILE_NAME, data_dir / KEY_FILE_NAME)
    except FileNotFoundError:
        pass  # another process finished the same rotation
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself must survive a crash
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    """The master key stored in `path`; MasterKeyError when others may read the file or it is malformed."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc}") from None
    if mode & 0o077:
        raise MasterKeyError(
            f"the master key file {path} is accessible by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    try:
        return parse_master_key(text)
    except MasterKeyError as exc:
        raise MasterKeyError(f"{path}: {exc}") from None


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from `secret` with HKDF-SHA256 (info = "facedemo <purpose>")."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=f"facedemo {purpose}".encode()).derive(
        secret
    )


def associated_data(*parts: str) -> bytes:
    """Unambiguous associated data naming what a sealed blob is and where it belongs."""
    # JSON of a list cannot collide the way plain concatenation could ("ab","c" vs "a","bc").
    return json.dumps(["facedemo-vault-v1", *parts], separators=(",", ":")).encode("utf-8")


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt `plaintext` bound to `aad`: nonce || ciphertext || tag (len(plaintext) + 28 bytes)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt a blob made by `seal` with the same key and `aad`; VaultError naming `what` when it fails.

    Failure means a wrong key, a modified blob, or a blob moved from another row or subject.
    """
    if not isinstance(blob, bytes) or len(blob) < NONCE_BYTES + 16:
        raise VaultError(f"{what} is truncated or missing: the vault has been tampered with or corrupted")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise VaultError(f"{what} failed authentication: the vault has been tampered with or corrupted") from None


def new_data_key() -> bytes:
    """A fresh random 256-bit data key for one subject."""
    return AESGCM.generate_key(bit_length=256)


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` (32 bytes)."""
    return hmac.new(key, message, "sha256").digest()


@dataclass(frozen=True)
class MasterKey:
    """The vault's master key: wraps subject data keys and the vault secret, and identifies itself.

    `key_id` (16 hex characters) names the key in the database and the audit log without revealing it;
    `check_value` (32 bytes) is stored in the database so that a wrong key is refused before anything
    is decrypted or written.
    """

    raw: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return derive_key(self.raw, "key id")[:8].hex()

    @property
    def check_value(self) -> bytes:
        return derive_key(self.raw, "key check")

    def matches(self, stored_check_value: bytes) -> bool:
        """Whether this is the key whose check value the vault stored (constant-time comparison)."""
        return hmac.compare_digest(self.check_value, bytes(stored_check_value))

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        """Seal a data key under the master key (AES-256-GCM key wrapping), bound to `aad`."""
        return seal(self.raw, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes, what: str) -> bytes:
        """Open a key sealed by `wrap`; VaultError naming `what` when it fails."""
        return unseal(self.raw, wrapped, aad, what)


# ------------------------------------------------------------------------------------ recipes


def _aad_subject_key(subject_id: str) -> bytes:
    return associated_data("subject key", subject_id)


def _aad_record(subject_id: str) -> bytes:
    return associated_data("subject record", subject_id)


def _aad_template(subject_id: str, record_id: str, model_id: str) -> bytes:
    return associated_data("template", subject_id, record_id, model_id)


_AAD_VAULT_SECRET = associated_data("vault secret")


def seal_subject_key(master: MasterKey, subject_id: str, data_key: bytes) -> bytes:
    """A subject's data key wrapped by the master key, bound to the subject id."""
    return master.wrap(data_key, _aad_subject_key(subject_id))


def open_subject_key(master: MasterKey, subject_id: str, wrapped: bytes) -> bytes:
    """The data key sealed by `seal_subject_key`; VaultError when it fails (wrong key, moved or modified)."""
    return master.unwrap(wrapped, _aad_subject_key(subject_id), f"the data key of subject {subject_id}")


def seal_record(data_key: bytes, subject_id: str, record: bytes) -> bytes:
    """A subject's record (JSON of name and template record ids) sealed with its data key, bound to the subject id."""
    return seal(data_key, record, _aad_record(subject_id))


def open_record(data_key: bytes, subject_id: str, blob: bytes) -> bytes:
    """The record sealed by `seal_record`; VaultError when it fails."""
    return unseal(data_key, blob, _aad_record(subject_id), f"the record of subject {subject_id}")


def seal_template(data_key: bytes, subject_id: str, record_id: str, model_id: str, vector: bytes) -> bytes:
    """One template (its float32 little-endian bytes) sealed with the subject's data key, bound to its row and model."""
    return seal(data_key, vector, _aad_template(subject_id, record_id, model_id))


def open_template(data_key: bytes, subject_id: str, record_id: str, model_id: str, blob: bytes) -> bytes:
    """The template bytes sealed by `seal_template`; VaultError when it fails (for example a blob moved to another row)."""
    what = f"template {record_id} of subject {subject_id}"
    return unseal(data_key, blob, _aad_template(subject_id, record_id, model_id), what)


def seal_vault_secret(master: MasterKey, secret: bytes) -> bytes:
    """The vault secret (from which `VaultKeys` derives) wrapped by the master key."""
    return master.wrap(secret, _AAD_VAULT_SECRET)


def open_vault_secret(master: MasterKey, wrapped: bytes) -> bytes:
    """The vault secret sealed by `seal_vault_secret`; VaultError when it fails."""
    return master.unwrap(wrapped, _AAD_VAULT_SECRET, "the vault secret")


def new_vault_secret() -> bytes:
    """A fresh random 256-bit vault secret (once, when a vault is created)."""
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class VaultKeys:
    """The vault secret and the keys derived from it: audit chain, erasure receipts and deletion-token digests.

    Derived from the vault secret rather than the master key, so that a master-key rotation
    re-wraps the secret and leaves the audit chain, receipts and token digests valid.
    """

    secret: bytes = field(repr=False)
    audit: bytes = field(init=False, repr=False)
    receipt: bytes = field(init=False, repr=False)
    token: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audit", derive_key(self.secret, "audit"))
        object.__setattr__(self, "receipt", derive_key(self.secret, "receipt"))
        object.__setattr__(self, "token", derive_key(self.secret, "deletion token"))
