"""Tests of the one name validator, `privacy.vault.validate_name`: what a person may be called and how it is stored."""
from __future__ import annotations

import unicodedata

import pytest

from privacy.keys import generate_master_key
from privacy.vault import NAME_MAX_CHARS, Vault, VaultError, validate_name
from tests.privacy_helpers import random_templates

MODEL = "test_model"
KEY = generate_master_key()


@pytest.mark.parametrize(
    "name",
    ["Eileen Collins", "Zoë Ó Briain", "李小龍", "Анна-Мария", "Грейс Хоппер", "葛麗絲·霍普", "غريس هوبر",
     "ग्रेस हॉपर", "Zoë O'Brien-Ñúñez", "Ἀριστοτέλης", "Nguyễn Thị Minh Khai", "x" * NAME_MAX_CHARS],
)
def test_names_in_any_script_are_returned_unchanged(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["می\u200cخواهم", "محمد\u200cرضا", "क्\u200dष"])
def test_zero_width_joiner_and_non_joiner_are_kept_for_persian_and_indic_spelling(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name, stored",
    [
        ("Grace\tBrewster\n Hopper", "Grace Brewster Hopper"),
        ("  Ada   Lovelace  ", "Ada Lovelace"),
        ("Ada\u00a0Lovelace\u2028", "Ada Lovelace"),  # no-break space, line separator
        ("Ada\r\nLovelace", "Ada Lovelace"),
    ],
)
def test_whitespace_is_trimmed_and_every_run_becomes_one_space(name, stored):
    assert validate_name(name) == stored


def test_names_are_stored_in_nfc_form():
    decomposed = unicodedata.normalize("NFD", "Zoë Ødegård")
    assert decomposed != "Zoë Ødegård"
    assert validate_name(decomposed) == "Zoë Ødegård"


def test_the_length_limit_counts_characters_after_normalisation():
    assert validate_name("É" * NAME_MAX_CHARS) == "É" * NAME_MAX_CHARS
    assert validate_name("E\u0301" * NAME_MAX_CHARS) == "É" * NAME_MAX_CHARS  # 200 code points before NFC
    assert len(validate_name("a   " * 50)) == 99  # 200 characters typed, 99 once the spaces are collapsed
    with pytest.raises(VaultError, match=f"the name is {NAME_MAX_CHARS + 1} characters long; the limit is {NAME_MAX_CHARS}"):
        validate_name("A" * (NAME_MAX_CHARS + 1))


@pytest.mark.parametrize(
    "name, message",
    [
        (None, "the name must be text"),
        (b"Ada", "the name must be text"),
        ("", "the name is empty: please give a name"),
        ("   \t\n", "the name is empty: please give a name"),
        ("1234", "the name must contain at least one letter"),
        ("😀😀", "the name must contain at least one letter"),
        ("- . -", "the name must contain at least one letter"),
        ("Ada\x00Lovelace", "the name contains control or invisible characters"),  # NUL
        ("bell\x07", "the name contains control or invisible characters"),
        ("\x1b[31mAda", "the name contains control or invisible characters"),  # terminal escape
        ("Ada\u202eecalevoL", "the name contains control or invisible characters"),  # right-to-left override
        ("Ada\u200bLovelace", "the name contains control or invisible characters"),  # zero-width space
        ("Ada\u00adLovelace", "the name contains control or invisible characters"),  # soft hyphen
        ("\ufeffAda", "the name contains control or invisible characters"),  # byte order mark
        ("Ada\ue000", "the name contains control or invisible characters"),  # private use
        ("Ada\ud800", "the name contains control or invisible characters"),  # lone surrogate
    ],
)
def test_unusable_names_are_refused_with_the_message_people_see(name, message):
    with pytest.raises(VaultError) as error:
        validate_name(name)
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["  Ada \t Lovelace ", "E\u0301milie", "می\u200cخواهم", "x" * NAME_MAX_CHARS])
def test_validation_is_idempotent(name):
    assert validate_name(validate_name(name)) == validate_name(name)


def test_enrolment_stores_the_validated_name(tmp_path):
    with Vault.open(tmp_path, master_key=KEY) as vault:
        vault.enroll("  Ada   E\u0301milie  ", {MODEL: random_templates(1)}, "v1", True)
        assert [s.name for s in vault.subjects(MODEL)] == ["Ada Émilie"]


@pytest.mark.parametrize("name", ["1234", "Ada\u202eecalevoL", "Ada\u200bLovelace"])
def test_enrolment_refuses_what_validate_name_refuses_and_stores_nothing(tmp_path, name):
    with Vault.open(tmp_path, master_key=KEY) as vault:
        with pytest.raises(VaultError):
            vault.enroll(name, {MODEL: random_templates(1)}, "v1", True)
        assert vault.subjects(MODEL) == []


def test_enrolment_refuses_line_breaks_a_caller_did_not_pass_through_validate_name(tmp_path):
    with Vault.open(tmp_path, master_key=KEY) as vault:
        with pytest.raises(VaultError, match="control characters"):
            vault.enroll("Grace\nHopper", {MODEL: random_templates(1)}, "v1", True)
        vault.enroll(validate_name("Grace\nHopper"), {MODEL: random_templates(1)}, "v1", True)
        assert [s.name for s in vault.subjects(MODEL)] == ["Grace Hopper"]
