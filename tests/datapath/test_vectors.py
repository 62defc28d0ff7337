"""RFC 8439 ChaCha20, RFC 4231 HMAC-SHA-256 and RFC 5869 HKDF-Expand vectors through the compiled datapath."""

import pytest

from etun import _fast
from tests.vectors import CHACHA20, HKDF_SHA256, HMAC_SHA256


@pytest.mark.parametrize("v", CHACHA20, ids=lambda v: v["name"])
def test_chacha20_matches_rfc8439(v):
    assert _fast.chacha20(v["key"], v["nonce"], v["plaintext"], v["counter"]) == v["ciphertext"]


@pytest.mark.parametrize("v", CHACHA20, ids=lambda v: v["name"])
def test_chacha20_decrypts_rfc8439_ciphertext(v):
    assert _fast.chacha20(v["key"], v["nonce"], v["ciphertext"], v["counter"]) == v["plaintext"]


@pytest.mark.parametrize("v", HMAC_SHA256, ids=lambda v: v["name"])
def test_hmac_sha256_matches_rfc4231(v):
    # Keys longer than a block (cases 6 and 7) exercise the hash-the-key path of the pad setup.
    assert _fast.hmac_sha256(v["key"], v["data"])[: v["truncate"]] == v["mac"]


@pytest.mark.parametrize("v", HKDF_SHA256, ids=lambda v: v["name"])
def test_hkdf_expand_matches_rfc5869(v):
    assert _fast.hkdf_expand(v["prk"], v["info"], v["length"]) == v["okm"]
