"""ETUN_SPIN_US, the one tuning knob outside site.toml: parsed, clamped, refused in one line."""

import pytest

from etun import daemon
from etun.errors import RuntimeFailure


@pytest.mark.parametrize("raw, want", [
    ("", daemon.DEFAULT_SPIN_US), ("0", 0), ("6000", 6000), ("-5", 0), ("99999999", 1_000_000),
])
def test_spin_time_is_read_from_the_environment_and_clamped(monkeypatch, raw, want):
    monkeypatch.setenv("ETUN_SPIN_US", raw)
    assert daemon.spin_us() == want


def test_a_spin_time_that_is_not_a_number_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("ETUN_SPIN_US", "6ms")
    with pytest.raises(RuntimeFailure, match='^ETUN_SPIN_US: expected microseconds, got "6ms"$'):
        daemon.spin_us()
