"""What the vault accepts from its callers: a person's name, model ids and consent versions, template arrays, the operator token."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

import numpy as np

from privacy import VaultError, erasure, strength

NAME_MAX_CHARS = 100
# Zero-width non-joiner and joiner: part of correct spelling in Persian and Indic scripts ("می‌خواهم").
# Every other invisible or control character is refused.
NAME_JOINERS = frozenset("\u200c\u200d")
ADMIN_TOKEN_MIN_CHARS = 16
ADMIN_TOKEN_MAX_CHARS = erasure.TOKEN_MAX_CHARS
ADMIN_TOKEN_MIN_BITS = 128  # by strength.entropy_bits, a conservative estimate
MAX_TEMPLATE_DIM = 65536
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,40}")  # model ids and consent text versions
# Line and paragraph breaks, tabs and other control characters: a program that passes one to
# `Vault.enroll` has not passed the name through `validate_name` (which turns them into spaces).
_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def validate_name(name: object) -> str:
    """A person's display name as the vault stores it; VaultError, with a message for that person, when it cannot be one.

    The name is put in Unicode NFC form, trimmed, and every run of whitespace (spaces of any
    width, tabs, line breaks) becomes one space. The result must have 1 to NAME_MAX_CHARS (100)
    characters, at least one letter (of any script), and no control, format, private-use,
    unassigned or surrogate characters (such as a NUL, a terminal escape, a right-to-left override
    or a zero-width space), except the zero-width non-joiner and joiner (U+200C, U+200D) that
    Persian and Indic spelling need. Idempotent: validate_name(validate_name(x)) == validate_name(x).
    Messages: "the name must be text", "the name is empty: please give a name",
    "the name is N characters long; the limit is 100", "the name must contain at least one letter",
    "the name contains control or invisible characters".
    """
    if not isinstance(name, str):
        raise VaultError("the name must be text")
    clean = " ".join(unicodedata.normalize("NFC", name).split())
    if not clean:
        raise VaultError("the name is empty: please give a name")
    if len(clean) > NAME_MAX_CHARS:
        raise VaultError(f"the name is {len(clean)} characters long; the limit is {NAME_MAX_CHARS}")
    if any(not c.isprintable() and c not in NAME_JOINERS for c in clean):
        raise VaultError("the name contains control or invisible characters")
    if not any(c.isalpha() for c in clean):
        raise VaultError("the name must contain at least one letter")
    return clean


def validate_stored_name(name: object) -> str:
    """`validate_name`, refusing rather than collapsing tabs, line breaks and other control characters.

    What `Vault.enroll` applies: a caller is expected to pass a name already checked with
    `validate_name` (the app does), so a control character here is a caller's mistake, not typing.
    """
    if isinstance(name, str) and any(unicodedata.category(c) in _BREAKING_CATEGORIES for c in name):
        raise VaultError("the name contains control characters (such as tabs or line breaks)")
    return validate_name(name)


def validate_identifier(value: object, what: str) -> str:
    """A model id or consent text version: 1-40 characters of letters, digits, '_', '.', ':' or '-'."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise VaultError(f"{what} must be 1-40 characters of letters, digits, '_', '.', ':' or '-' (got {value!r})")
    return value


def validate_templates(templates: object) -> dict[str, np.ndarray]:
    """model id -> C-contiguous (k x D) float32 array of finite values, k >= 1, 1 <= D <= 65536."""
    if not isinstance(templates, Mapping) or not templates:
        raise VaultError("templates must map each model id to a (k x D) array, for at least one model")
    clean: dict[str, np.ndarray] = {}
    for model_id, value in templates.items():
        validate_identifier(model_id, "a model id")
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise VaultError(f"templates of model {model_id!r} must be floating point, not {array.dtype}")
        if array.ndim != 2 or array.shape[0] < 1 or not 1 <= array.shape[1] <= MAX_TEMPLATE_DIM:
            raise VaultError(
                f"templates of model {model_id!r} must be a 2-D array (k templates x D components, k >= 1, "
                f"1 <= D <= {MAX_TEMPLATE_DIM}); got shape {array.shape}"
            )
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
            as_float32 = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(as_float32).all():
            raise VaultError(
                f"templates of model {model_id!r} contain NaN or infinite values (or values beyond float32)"
            )
        clean[model_id] = as_float32
    return clean


def check_admin_token(token: object) -> None:
    """Refuse an operator token that is malformed or has less than ADMIN_TOKEN_MIN_BITS of estimated entropy."""
    hint = f"generate one with: {strength.GENERATE_HINT}"
    if not isinstance(token, str):
        raise VaultError(f"the admin token must be text; {hint}")
    if len(token) < ADMIN_TOKEN_MIN_CHARS:
        raise VaultError(f"the admin token must be at least {ADMIN_TOKEN_MIN_CHARS} characters long; {hint}")
    if not erasure.well_formed_token(token):
        raise VaultError(
            f"the admin token must be at most {ADMIN_TOKEN_MAX_CHARS} characters of UTF-8 text without control "
            f"characters or lone surrogates; {hint}"
        )
    bits = strength.entropy_bits(token)
    if bits < ADMIN_TOKEN_MIN_BITS:
        raise VaultError(
            f"the admin token is too weak: about {bits:.0f} bits of entropy by a conservative estimate, "
            f"{ADMIN_TOKEN_MIN_BITS} are needed (it is short, repetitive, a sequence or made of common words); {hint}"
        )
