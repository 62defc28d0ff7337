"""The environment variables etun reads: parsed in one place, refused in one line.

ETUN_SPIN_US parsed, clamped, refused in one line (exit 2, before anything is touched); ETUN_DEBUG
on for anything but empty or 0."""

import pytest

from etun import env
from etun.errors import UsageError


@pytest.mark.parametrize("raw, want", [
    ("", 50), ("0", 0), ("6000", 6000), ("-5", 0), ("99999999", 1_000_000),
])
def test_spin_time_is_read_from_the_environment_and_clamped(monkeypatch, raw, want):
    monkeypatch.setenv("ETUN_SPIN_US", raw)
    assert env.spin_us() == want


def test_a_spin_time_that_is_not_a_number_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("ETUN_SPIN_US", "6ms")
    with pytest.raises(UsageError, match=r'^ETUN_SPIN_US: expected microseconds 0\.\.1000000, got "6ms"$'):
        env.spin_us()


@pytest.mark.parametrize("raw, on", [("", False), ("0", False), ("1", True), ("yes", True)])
def test_debug_is_on_for_anything_but_empty_or_zero(monkeypatch, raw, on):
    monkeypatch.setenv("ETUN_DEBUG", raw)
    assert env.debug() is on
