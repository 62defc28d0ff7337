"""The peer's liveness and the re-resolution of a silent DNS peer (etun/peer.py), tick by tick on a made-up clock."""

import socket

import pytest

from etun import peer
from etun.config import Address
from etun.errors import RuntimeFailure
from etun.transport import pack_sockaddr

KEEPALIVE_MS = 10_000
SILENT_MS = peer.SILENT_KEEPALIVES * KEEPALIVE_MS
OLD = pack_sockaddr(socket.AF_INET, "203.0.113.7", 5555)
NEW = pack_sockaddr(socket.AF_INET, "203.0.113.8", 5555)


@pytest.fixture
def lookups(monkeypatch):
    """Every name lookup PeerWatch makes, answered with the next of `answers` (NEW by default)."""
    made, answers = [], []

    def resolve(configured, family):
        made.append((configured.host, family))
        answer = answers.pop(0) if answers else NEW
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(peer, "resolve_peer", resolve)
    return made, answers


@pytest.mark.parametrize("host,name", [("peer.example", True), ("203.0.113.7", False), ("2001:db8::7", False)])
def test_a_host_is_a_name_unless_it_is_an_address_literal(host, name):
    assert peer.is_name(host) is name


def test_the_peer_is_up_from_the_first_authenticated_packet_of_a_settled_session_until_three_keepalives_of_silence():
    w = peer.PeerWatch(Address("203.0.113.7", 5555), socket.AF_INET, KEEPALIVE_MS, 0)
    assert w.update(0, False, 1_000) is None and not w.up             # never heard: down, no change
    assert w.update(1_000, False, 1_000) is None                      # heard, but no settled session
    assert w.update(1_000, True, 1_000) is True and w.up              # came up
    assert w.update(1_000, True, 1_000 + SILENT_MS - 1) is None       # still up, just
    assert w.update(1_000, True, 1_000 + SILENT_MS) is False          # went down
    assert w.update(1_000, True, 1_000 + SILENT_MS + 5) is None


def test_a_peer_given_by_address_is_never_looked_up(lookups):
    w = peer.PeerWatch(Address("203.0.113.7", 5555), socket.AF_INET, KEEPALIVE_MS, 0)
    assert w.resolve(0, OLD, 10 * SILENT_MS) is None
    assert lookups[0] == []


def test_a_silent_dns_peer_is_looked_up_again_at_most_every_three_keepalives_and_moves_when_its_address_changed(
        lookups):
    made, answers = lookups
    w = peer.PeerWatch(Address("peer.example", 5555), socket.AF_INET, KEEPALIVE_MS, 0)
    assert w.resolve(0, OLD, SILENT_MS - 1) is None and made == []            # too soon after the start
    assert w.resolve(0, OLD, SILENT_MS) == NEW                                # silent long enough: moved
    assert w.resolve(0, NEW, SILENT_MS + 1) is None and len(made) == 1        # not again so soon
    answers.append(NEW)
    assert w.resolve(0, NEW, 2 * SILENT_MS) is None and len(made) == 2        # the same address: stay
    assert made[0] == ("peer.example", socket.AF_INET)


def test_a_dns_peer_that_is_heard_from_is_not_looked_up(lookups):
    w = peer.PeerWatch(Address("peer.example", 5555), socket.AF_INET, KEEPALIVE_MS, 0)
    now = 10 * SILENT_MS
    assert w.resolve(now - 1, OLD, now) is None and lookups[0] == []


def test_a_failed_lookup_keeps_the_address_and_is_logged(lookups, etun_log):
    made, answers = lookups
    answers.append(RuntimeFailure("cannot resolve peer peer.example:5555: Name or service not known"))
    w = peer.PeerWatch(Address("peer.example", 5555), socket.AF_INET, KEEPALIVE_MS, 0)
    assert w.resolve(0, OLD, SILENT_MS) is None
    assert "cannot resolve peer peer.example:5555: Name or service not known" in etun_log.text


def test_a_short_keepalive_still_waits_ten_seconds_between_lookups(lookups):
    made, _ = lookups
    w = peer.PeerWatch(Address("peer.example", 5555), socket.AF_INET, 1_000, 0)
    assert w.resolve(0, OLD, peer.RESOLVE_MIN_MS - 1) is None and made == []
    assert w.resolve(0, OLD, peer.RESOLVE_MIN_MS) == NEW
