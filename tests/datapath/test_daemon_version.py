"""A peer that speaks etun protocol version 1 is told apart with one clear log line, at most every 30 s.

Version-1 datagrams go over UDP to a running rx pump (tests/pumps.py), which refuses them; the
daemon's own Daemon.explain_refused, called as its tick calls it, reads what was refused and logs
(docs/PROTOCOL.md, introduction). Times given to explain_refused are the test's own.
"""

import contextlib
import logging
import os
import socket

import pytest

from etun import _fast, keys
from etun.config import load_config
from etun.daemon import DROP_LOG_INTERVAL_MS, Daemon
from tests.poll import wait_until
from tests.pumps import paired_lan

LINE = ("packets claiming to come from {} speak etun protocol version 1, this etun speaks 2: "
        "run the same etun version at both sites")


def version_1_datagram(level: int = 2, ptype: int = 1) -> bytes:
    """A version-1 packet as the first byte tells it: ver 1 in bits 7-6, then level and type."""
    return bytes([1 << 6 | level << 4 | ptype]) + os.urandom(59)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A Daemon of a real site.toml given what setup() gives explain_refused (the running
    engine's Datapath, no line logged yet, the key file's fingerprint), a sender of datagrams
    to that engine, and a function that sends one and waits until the pump counted it."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    key = tmp_path / "site.key"
    key.write_bytes(os.urandom(keys.MATERIAL_LEN))
    key.chmod(0o600)
    path = tmp_path / "site.toml"
    path.write_text(f'[lan]\ninterface = "eth1"\n[tunnel]\npeer = "203.0.113.7:5555"\n'
                    f'[security]\nkey_file = "{key}"\n')
    d = Daemon(load_config(path))
    with contextlib.ExitStack() as stack:
        _, _, dp, _, address = stack.enter_context(paired_lan())
        assert d.level == _fast.LEVEL_ENCRYPT == dp.level
        d.datapath = dp
        d.refused_logged_ms = {}
        d.fingerprint = keys.load_secrets(key).fingerprint
        sender = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sender.bind(("127.0.0.1", 0))

        def arrive(datagram: bytes, source: socket.socket = sender, counted_as: str = "version") -> None:
            counted = dp.counters()["rx"][counted_as] + 1
            source.sendto(datagram, address)
            wait_until(lambda: dp.counters()["rx"][counted_as] == counted, timeout=5, interval=0.002,
                       what=f"the datagram dropped by the rx pump as {counted_as}")

        yield d, sender, arrive


def lines(etun_log) -> list[str]:
    return [r.getMessage() for r in etun_log.records if r.name == "etun" and r.levelno >= logging.INFO]


def line(sender: socket.socket) -> str:
    return LINE.format("%s:%d" % sender.getsockname())


def test_a_version_1_datagram_is_dropped_as_version_and_told_in_one_clear_line(site, etun_log):
    d, sender, arrive = site
    arrive(version_1_datagram())
    d.explain_refused(1_000)
    assert lines(etun_log) == [line(sender)]
    d.explain_refused(1_200)                    # the next tick: nothing new refused, nothing said
    assert lines(etun_log) == [line(sender)]


def test_version_1_datagrams_within_30_s_are_told_once_and_again_after(site, etun_log):
    d, sender, arrive = site
    assert DROP_LOG_INTERVAL_MS == 30_000
    # A version-1 peer keeps sending, of every level and kind: a datagram before each tick,
    # 5 ticks a second, for 30 s.
    for now in range(1_000, 31_000, 200):
        arrive(version_1_datagram(level=now % 3, ptype=1 + now % 7))
        d.explain_refused(now)
    assert lines(etun_log) == [line(sender)]
    assert d.datapath.counters()["rx"]["version"] == 150
    arrive(version_1_datagram())
    d.explain_refused(31_000)                   # 30 s after the first line
    assert lines(etun_log) == [line(sender)] * 2


def test_the_line_names_the_address_the_latest_version_1_datagram_claimed(site, etun_log):
    d, sender, arrive = site
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        arrive(version_1_datagram(), other)
        arrive(version_1_datagram(), sender)
    d.explain_refused(5_000)
    assert lines(etun_log) == [line(sender)]


def test_datagrams_of_our_own_version_are_never_told_as_another_version(site, etun_log):
    d, sender, arrive = site
    arrive(bytes([2 << 6 | 2 << 4 | 1]) + bytes(59), counted_as="malformed")     # version 2, no fragments
    d.explain_refused(1_000)
    assert lines(etun_log) == []
    assert d.datapath.counters()["rx"]["version"] == 0
