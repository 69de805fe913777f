"""Tests of the operator token's strength check: weak tokens refused at open, generated ones accepted."""
from __future__ import annotations

import secrets
import string

import pytest

from privacy.keys import generate_master_key
from privacy.strength import entropy_bits
from privacy.vault import Vault, VaultError

KEY = generate_master_key()


@pytest.mark.parametrize(
    "token",
    [
        "aaaaaaaaaaaaaaaa",
        "password12345678",
        "operator-token-for-tests-0123456789",  # the tests' old token: words and a digit sequence
        "operator-token-for-limit-tests",
        "operator-token-for-the-load-test",
        "P@ssw0rdP@ssw0rd1234567890",
        "abcdefghijklmnopqrstuvwxyz",
        "correcthorsebatterystaple",
        "ababababababababababababababababab",
        "Qwerty123!Qwerty123!Qwerty123!",
        "0123456789012345678901234567890123456789",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    ],
)
def test_weak_admin_token_is_refused_at_open_with_how_to_generate_one(tmp_path, token):
    with pytest.raises(VaultError, match="too weak") as error:
        Vault.open(tmp_path, master_key=KEY, admin_token=token)
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in str(error.value)
    assert token not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


@pytest.mark.parametrize("token", ["\ud800" * 40, "a\x00" + secrets.token_urlsafe(32), "x" * 257, ["list"]])
def test_malformed_admin_token_is_refused_at_open(tmp_path, token):
    with pytest.raises(VaultError, match="admin token"):
        Vault.open(tmp_path, master_key=KEY, admin_token=token)


def test_too_short_admin_token_is_refused_at_open(tmp_path):
    with pytest.raises(VaultError, match="at least 16 characters.*token_urlsafe"):
        Vault.open(tmp_path, master_key=KEY, admin_token="admin")


def test_every_generated_token_of_24_bytes_or_more_passes():
    # 16 random bytes are exactly 128 bits: a conservative estimate falls short for about 2 in 100,000
    # of them, which is why the refusal message (and README) suggest token_urlsafe(32).
    for nbytes in (24, 32, 64):
        for _ in range(1000 if nbytes == 24 else 100):
            token = secrets.token_urlsafe(nbytes)
            assert entropy_bits(token) >= 128, token


def test_a_random_token_without_digits_or_symbols_passes():
    # 1 in 100 tokens of secrets.token_urlsafe(16) holds only letters.
    for _ in range(200):
        token = "".join(secrets.choice(string.ascii_letters) for _ in range(22))
        assert entropy_bits(token) >= 128, token


def test_generated_admin_token_opens_the_vault(tmp_path):
    token = secrets.token_urlsafe(16)
    with Vault.open(tmp_path, master_key=KEY, admin_token=token) as v:
        assert v.list_subjects(token) == []


def test_estimate_prices_patterns_far_below_their_length():
    assert entropy_bits("aaaaaaaaaaaaaaaa") < 20
    assert entropy_bits("password12345678") < 30
    assert entropy_bits("") == 0.0
    assert entropy_bits("Xk3_") == pytest.approx(4 * 6)  # short base64url text: 6 bits a character
