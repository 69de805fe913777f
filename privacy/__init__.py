"""Protection of biometric data: an encrypted template vault with consent, export, verifiable deletion and an audit log.

This package knows nothing of models or UI: it stores vectors it is given. Its one error type at
the boundary is `VaultError` (defined here so that every module of the package can raise it
without importing the others); `privacy.vault` re-exports it.
"""


class VaultError(Exception):
    """The vault refused an operation or cannot be used; the message says what to do about it."""
