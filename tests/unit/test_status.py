"""The peer, session and MAC-table parts of the status document (etun/status.py), from what the daemon holds."""

import socket
from types import SimpleNamespace

import pytest

from etun import status
from etun.config import load_config
from etun.transport import pack_sockaddr


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "berlin.toml"
    path.write_text('[[segment]]\nname = "office"\ninterface = "eth1"\nvlan = 10\n'
                    '[[segment]]\nname = "voice"\ninterface = "eth1"\nvlan = 20\n'
                    '[tunnel]\npeer = "peer.example:5555"\n[security]\nlevel = "none"\n')
    return load_config(path)


def session(**fields):
    """What status.py reads of an etun.session.Session."""
    s = SimpleNamespace(peer_site="paris", rtt_ms=0.61, peer_segments=("office", "lab"), established=True,
                        role="initiator", born_ms=1_000, current_id=7, handshakes=3)
    s.__dict__.update(fields)
    s.segments_only_here = lambda: ["voice"]
    s.segments_only_there = lambda: ["lab"]
    return s


def test_the_peer_table_names_the_configured_and_the_current_address_and_when_it_was_last_heard(config):
    address = pack_sockaddr(socket.AF_INET, "203.0.113.7", 5555)
    assert status.peer_status(config, session(), True, address, 2, 8_000, 10_200) == {
        "configured": "peer.example:5555", "address": "203.0.113.7:5555", "site": "paris", "up": True,
        "last_seen_s": 2.2, "rtt_ms": 0.61, "roams": 2, "segments": ["office", "lab"],
        "segments_only_here": ["voice"], "segments_only_there": ["lab"],
    }


def test_a_peer_never_heard_from_has_no_address_site_segments_or_last_seen_time(config):
    peer = status.peer_status(config, session(peer_site="", peer_segments=None, rtt_ms=None), False, None, 0, 0,
                              10_000)
    assert {k: peer[k] for k in ("address", "site", "up", "last_seen_s", "rtt_ms", "segments")} == {
        "address": None, "site": None, "up": False, "last_seen_s": None, "rtt_ms": None, "segments": None}


def test_the_session_table_has_an_age_only_while_there_is_a_session():
    assert status.session_status(session(), 9_550) == {"established": True, "role": "initiator", "age_s": 8.6,
                                                       "handshakes": 3}
    assert status.session_status(session(current_id=None, established=False), 9_550)["age_s"] is None


def test_the_mac_table_is_listed_by_segment_side_and_mac_with_each_segment_named(config):
    macs = [("02:00:00:00:00:15", 0, "remote", 1_900), ("02:00:00:00:00:0b", 1, "local", 400),
            ("02:00:00:00:00:0c", 0, "local", 12_345), ("02:00:00:00:00:0a", 0, "local", 50), ("02:aa", 9, "local", 0)]
    assert status.build_macs(config, macs) == {"macs": [
        {"mac": "02:00:00:00:00:0a", "segment": "office", "side": "local", "age_s": 0.1},
        {"mac": "02:00:00:00:00:0c", "segment": "office", "side": "local", "age_s": 12.3},
        {"mac": "02:00:00:00:00:15", "segment": "office", "side": "remote", "age_s": 1.9},
        {"mac": "02:00:00:00:00:0b", "segment": "voice", "side": "local", "age_s": 0.4},
        {"mac": "02:aa", "segment": "9", "side": "local", "age_s": 0.0},
    ]}
