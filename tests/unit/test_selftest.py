"""The start-up self-test: passes on a good build, and a broken piece stops etun with one clear line."""

import pytest

from etun import _fast, selftest
from etun.errors import RuntimeFailure


def test_the_selftest_passes_on_this_build():
    selftest.run_selftest()


def test_a_cipher_giving_wrong_answers_stops_etun_with_one_line(monkeypatch):
    monkeypatch.setattr(_fast, "chacha20", lambda *a: b"\0" * 114)
    with pytest.raises(RuntimeFailure) as caught:
        selftest.run_selftest()
    message = str(caught.value)
    assert message.startswith("self-test failed: ChaCha20 (RFC 8439 2.4.2) gives a wrong answer")
    assert message.endswith("the build or bundle is broken") and "\n" not in message

