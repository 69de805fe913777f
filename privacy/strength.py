"""A conservative estimate of a secret's entropy in bits, to refuse weak operator (admin) tokens.

The estimate is the smaller of two description lengths:

1. Uniform: length x log2(alphabet). The alphabet is the sum of the character classes the token
   uses (lowercase 26, uppercase 26, digits 10, "-" and "_" 2, other printable ASCII 31, anything
   else 256), except that a token made only of base64url characters that mixes upper and lower case
   counts the whole base64url alphabet (64): that is what `secrets.token_urlsafe` draws from, and
   1 token in 100 of `token_urlsafe(16)` happens to hold no digit, "-" or "_".
2. Patterns: the cheapest cut of the token into pieces, each costing log2(5) bits to say which kind
   it is plus its own cost:
   - one character: log2(alphabet);
   - a run of 3 or more copies of one character ("aaaa"): log2(alphabet) + log2(length);
   - a sequence of 3 or more characters with code points stepping by +1 or -1 ("abcd", "9876"):
     log2(alphabet) + log2(length) + 1;
   - a repeat of 3 or more characters seen earlier in the token ("PassPass"):
     log2(position) + log2(length);
   - a common word, password or keyboard row of 4 or more letters from `COMMON_WORDS`, in any case
     and with common digit-for-letter swaps ("P@ssw0rd"): log2(len(COMMON_WORDS)) + 1 bit for
     capitalised or upper-case (1 bit per letter for other mixes) + 1 bit when letters were swapped.

Random tokens score their uniform length (the pattern cut costs them 2.3 bits a character more),
while tokens people make up are priced by their patterns: "aaaaaaaaaaaaaaaa" scores 11 bits,
"password12345678" 21. Text that only looks random to these rules (several uncommon words in
mixed case) can still be over-estimated: the estimate refuses what is demonstrably weak, it
cannot certify a human choice; generate the token instead.
"""
from __future__ import annotations

import math
import string

GENERATE_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'

_BASE64URL = frozenset(string.ascii_letters + string.digits + "-_")
_OTHER_ASCII = frozenset(string.punctuation + " ") - {"-", "_"}
_KIND_BITS = math.log2(5)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})

# Common passwords, words people put in tokens, and keyboard rows; 4 letters or more, lowercase.
COMMON_WORDS = frozenset(
    """
    password passwd pass word admin administrator root user login logon guest test tests testing
    secret secrets token tokens operator access master default changeme change letmein welcome hello
    world open sesame shadow dragon monkey football baseball soccer hockey batman superman trustno
    iloveyou love princess sunshine starwars freedom whatever qwerty qwertz azerty asdf asdfgh zxcv
    zxcvbn qazwsx wsxedc uiop hjkl 1qaz 2wsx abcd abcdef example sample demo face faces facedemo
    vault server service system local localhost staging production prod develop development key keys
    private public security secure summer winter spring autumn monday friday january december
    computer internet google github gradio python linux windows apple orange banana cheese coffee
    flower purple yellow silver golden black white blue green michael jennifer thomas jessica
    charlie daniel matthew jordan hunter ranger buster killer pepper ginger maggie cookie mustang
    harley diamond thunder tigger robert andrew george joshua summer2024 please allow enter insert
    select delete update temp temporary backup config setting settings foobar hunter2 abc123 pass123
    """.split()
)
_WORD_LENGTHS = sorted({len(w) for w in COMMON_WORDS}, reverse=True)


def alphabet_size(token: str) -> int:
    """The alphabet the uniform estimate assumes for `token` (see the module docstring)."""
    chars = set(token)
    if chars <= _BASE64URL and chars & set(string.ascii_lowercase) and chars & set(string.ascii_uppercase):
        return 64
    size = 0
    for group, count in (
        (string.ascii_lowercase, 26), (string.ascii_uppercase, 26), (string.digits, 10), ("-_", 2),
    ):
        if chars & set(group):
            size += count
    if chars & _OTHER_ASCII:
        size += len(_OTHER_ASCII)
    if any(ord(c) > 127 or (ord(c) < 128 and c not in _BASE64URL and c not in _OTHER_ASCII) for c in chars):
        size += 256
    return max(size, 1)


def _case_bits(original: str) -> float:
    if original.islower() or not any(c.isalpha() for c in original):
        return 0.0
    if original.isupper() or (original[0].isupper() and original[1:].islower()):
        return 1.0
    return float(sum(1 for c in original if c.isalpha()))


def entropy_bits(token: str) -> float:
    """Conservative entropy estimate of `token` in bits (see the module docstring for the rules)."""
    n = len(token)
    if n == 0:
        return 0.0
    char_bits = math.log2(alphabet_size(token))
    uniform = n * char_bits
    lowered = token.lower()
    unleet = lowered.translate(_LEET)
    word_bits = math.log2(len(COMMON_WORDS))
    # lcp[i][j] (j < i): length of the common prefix of token[i:] and token[j:], for repeats.
    lcp = [[0] * n for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = lcp[i], lcp[i + 1]
        for j in range(i - 1, -1, -1):
            if token[i] == token[j]:
                row[j] = below[j + 1] + 1
    best = [math.inf] * (n + 1)  # best[i]: cheapest description of token[i:]
    best[n] = 0.0
    for i in range(n - 1, -1, -1):
        options = [_KIND_BITS + char_bits + best[i + 1]]
        run = 1
        while i + run < n and token[i + run] == token[i]:
            run += 1
        for k in range(3, run + 1):
            options.append(_KIND_BITS + char_bits + math.log2(k) + best[i + k])
        for step in (1, -1):
            k = 1
            while i + k < n and ord(token[i + k]) - ord(token[i + k - 1]) == step:
                k += 1
            for length in range(3, k + 1):
                options.append(_KIND_BITS + char_bits + math.log2(length) + 1 + best[i + length])
        longest = max(lcp[i][:i], default=0)
        for k in range(3, longest + 1):
            options.append(_KIND_BITS + math.log2(i) + math.log2(k) + best[i + k])
        for length in _WORD_LENGTHS:
            if i + length > n:
                continue
            piece = token[i : i + length]
            if lowered[i : i + length] in COMMON_WORDS:
                options.append(_KIND_BITS + word_bits + _case_bits(piece) + best[i + length])
            elif unleet[i : i + length] in COMMON_WORDS:
                options.append(_KIND_BITS + word_bits + _case_bits(piece) + 1 + best[i + length])
        best[i] = min(options)
    return min(uniform, best[0])
