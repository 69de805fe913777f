"""Master-key rotation: the key an open vault works with, re-wrapping under a new key, and refusing to go on once
another process has rotated it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from privacy import VaultError, keys
from privacy.keys import MasterKey, MasterKeyError
from privacy.storage import Storage, iso_utc

if TYPE_CHECKING:
    from privacy.context import VaultContext


class KeyGuard:
    """The master key of an open vault, and whether another process has replaced it since.

    Once a rotation by another process is seen the refusal sticks: everything this process holds
    was decrypted with the old key, so it must be restarted with the new one.
    """

    def __init__(self, master: MasterKey, dev_mode: bool, data_dir: Path) -> None:
        self.master = master
        self.dev_mode = dev_mode  # the key lives in <data_dir>/master.key
        self.data_dir = data_dir
        self._rotated_elsewhere = False

    def _rotated_error(self) -> MasterKeyError:
        how = (
            f"(the new key is in {self.data_dir / keys.KEY_FILE_NAME})" if self.dev_mode
            else "with the new FACEDEMO_MASTER_KEY"
        )
        return MasterKeyError(f"the vault's master key was rotated by the operator; this app must be restarted {how}")

    def check_not_rotated(self) -> None:
        """Refuse when a rotation by another process was already seen (no database access)."""
        if self._rotated_elsewhere:
            raise self._rotated_error()

    def assert_current(self, store: Storage) -> None:
        """Inside a transaction or snapshot: refuse to read or write when another process rotated the master key."""
        self.check_not_rotated()
        stored = store.get_meta("key_check")
        if stored is None or not self.master.matches(stored):
            self._rotated_elsewhere = True
            raise self._rotated_error()


def rotate_master_key(ctx: VaultContext, new_key: str) -> int:
    """Re-wrap every subject's data key and the vault secret under `new_key`; the number of subjects (see `Vault`)."""
    new = MasterKey(keys.parse_master_key(new_key))
    guard = ctx.keys
    with ctx.session() as store:
        if new.matches(guard.master.check_value):
            raise VaultError("the new master key is the key already in use")
        old_key_id = guard.master.key_id
        now = ctx.now()
        with ctx.audit.transaction():
            guard.assert_current(store)
            wrapped = store.wrapped_keys()
            for subject_id, blob in wrapped:
                data_key = keys.open_subject_key(guard.master, subject_id, blob)
                store.replace_wrapped_key(subject_id, new.key_id, keys.seal_subject_key(new, subject_id, data_key))
            store.put_meta(
                {
                    "vault_secret": keys.seal_vault_secret(new, ctx.secrets.secret),
                    "key_check": new.check_value,
                    "key_id": new.key_id.encode(),
                    "key_created": iso_utc(now).encode(),  # the start of the new key epoch, for receipts
                }
            )
            ctx.audit.append(
                now, "rotate_key", {"old_key_id": old_key_id, "new_key_id": new.key_id, "subjects": len(wrapped)}
            )
            if guard.dev_mode:
                # Written before the commit, so a committed rotation always has its key on disk.
                keys.write_pending_key(guard.data_dir, new.raw)
        guard.master = new
        store.compact()  # the old wrapped keys leave the WAL
        if guard.dev_mode:
            keys.promote_pending_key(guard.data_dir)
    return len(wrapped)
