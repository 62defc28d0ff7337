"""Filter semantics exactly as docs/CONFIG.md states them, case by numbered case, through the compiled tables."""

import gc
import socket

import pytest

from etun import _fast

A = bytes.fromhex("02aaaaaaaa01")          # a host at site A
B = bytes.fromhex("02bbbbbbbb02")          # a host at site B
INTEL = bytes.fromhex("001b21000042")      # OUI 00:1b:21
STP = bytes.fromhex("0180c2000000")        # STP BPDUs go here
IPV4, IPV6, ARP, DOT1Q, DOT1AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8


def frame(dst: bytes, src: bytes, *types: int) -> bytes:
    """dst, src, then each 2-byte type; a VLAN type is followed by its 2-byte TCI."""
    out = dst + src
    for t in types:
        out += t.to_bytes(2, "big")
        if t in (DOT1Q, DOT1AD):
            out += b"\x00\x64"
    return out.ljust(60, b"\0")


RULES = [
    (False, "mac", STP),                       # 0  deny mac 01:80:c2:00:00:00
    (True, "oui", INTEL[:3]),                  # 1  allow oui 00:1b:21
    (False, "ethertype", IPV6),                # 2  deny ethertype 0x86dd
    (True, "mac", B),                          # 3  allow mac B
    (False, "mac", A),                         # 4  deny mac A
    (False, "oui", B[:3]),                     # 5  deny oui of B (never decides: mac 3 is more specific)
    (True, "ethertype", DOT1Q),                # 6  allow frames carrying an 802.1Q tag
    (False, "ethertype", IPV4),                # 7  deny IPv4
    (False, "ethertype", DOT1AD),              # 8  deny frames carrying an 802.1ad tag
    (True, "mac", STP),                        # 9  a second rule for STP's MAC: the first (0) decides
]

# (frame, allowed?, deciding rule or None for the default allow)
TABLE = [
    (frame(STP, INTEL, 0x0026), False, 0),                 # 1  mac beats oui: dst STP denied
    (frame(INTEL, STP, 0x0026), False, 0),                 # 2  ... source counts as well
    (frame(B, A, IPV4), True, 3),                          # 3  mac rules 3 and 4 match: 3 comes first
    (frame(A, B, IPV4), True, 3),                          # 4  ... whichever side each is on
    (frame(A, INTEL, IPV6), False, 4),                     # 5  mac A (4) beats oui Intel (1) and IPv6 (2)
    (frame(INTEL, bytes(6), IPV6), True, 1),               # 6  oui beats ethertype
    (frame(bytes(5) + b"\1", bytes(6), IPV6), False, 2),   # 7  plain IPv6: ethertype 2
    (frame(bytes(5) + b"\1", bytes(6), DOT1Q, IPV6), False, 2),   # 8  IPv6 behind a tag: 2 before 6
    (frame(bytes(5) + b"\1", bytes(6), DOT1Q, IPV4), True, 6),    # 9  tag rule 6 before IPv4 rule 7
    (frame(bytes(5) + b"\1", bytes(6), IPV4), False, 7),   # 10 untagged IPv4: 7
    (frame(bytes(5) + b"\1", bytes(6), DOT1AD, DOT1Q, IPV4), True, 6),  # 11 QinQ: 802.1Q at depth 2 -> 6
    (frame(bytes(5) + b"\1", bytes(6), DOT1AD, ARP), False, 8),   # 12 802.1ad tag alone -> 8
    (frame(bytes(5) + b"\1", bytes(6), ARP), True, None),  # 13 nothing matches: default allow
    (frame(bytes(5) + b"\1", bytes(6), 0x0026), True, None),      # 14 an 802.3 length is no EtherType
]


@pytest.fixture
def dp():
    d = _fast.Datapath(2)
    d.set_filter(_fast.FILTER_NIC_INGRESS, True, RULES)
    return d


def test_filters_follow_the_numbered_table(dp):
    for number, (f, allowed, rule) in enumerate(TABLE, start=1):
        assert _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, f) == (allowed, rule), f"case {number}"


def test_every_rule_and_the_default_count_their_hits(dp):
    for f, _, _ in TABLE:
        _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, f)
    stats = dp.filter_stats(_fast.FILTER_NIC_INGRESS)
    assert stats["rules"] == [2, 1, 2, 2, 1, 0, 2, 1, 1, 0]
    assert stats["default"] == 2


def test_frames_are_counted_by_the_ethertype_behind_their_tags(dp):
    for f, _, _ in TABLE:
        _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, f)
    seen = dp.filter_stats(_fast.FILTER_NIC_INGRESS)["ethertypes"]
    assert seen[IPV4] == 5 and seen[IPV6] == 4 and seen[ARP] == 2
    assert seen[0] == 3                              # 802.3 length frames


def test_every_ethertype_is_reported_at_either_edge_of_the_blocks_the_report_skips():
    d = _fast.Datapath(2)
    counts = {0x0600: 1, 0x07FF: 2, 0x0800: 3, 0x88B5: 1, 0xFDFF: 4, 0xFE00: 1, 0xFFFF: 5}
    for ethertype, n in counts.items():
        for _ in range(n):
            _fast.filter_check(d, _fast.FILTER_NIC_INGRESS, frame(A, B, ethertype))
    _fast.filter_check(d, _fast.FILTER_NIC_INGRESS, frame(A, B, 0x05FF))   # a length: counted as 0
    assert d.filter_stats(_fast.FILTER_NIC_INGRESS)["ethertypes"] == {0: 1, **counts}
    assert d.filter_stats(_fast.FILTER_TUNNEL_INGRESS)["ethertypes"] == {}


def test_a_default_deny_denies_what_no_rule_matches():
    d = _fast.Datapath(2)
    d.set_filter(_fast.FILTER_TUNNEL_INGRESS, False, [(True, "ethertype", ARP)])
    assert _fast.filter_check(d, _fast.FILTER_TUNNEL_INGRESS, frame(A, B, ARP)) == (True, 0)
    assert _fast.filter_check(d, _fast.FILTER_TUNNEL_INGRESS, frame(A, B, IPV4)) == (False, None)


def test_the_two_directions_are_separate(dp):
    assert _fast.filter_check(dp, _fast.FILTER_TUNNEL_INGRESS, frame(STP, A, 0x0026)) == (True, None)


def test_bad_rules_are_refused():
    d = _fast.Datapath(2)
    with pytest.raises(ValueError):
        d.set_filter(_fast.FILTER_NIC_INGRESS, True, [(True, "mac", b"\1\2")])
    with pytest.raises(ValueError):
        d.set_filter(_fast.FILTER_NIC_INGRESS, True, [(True, "ethertype", 0x05DC)])


def test_a_thousand_rules_compile_and_the_first_of_duplicates_decides():
    rules = [(i % 2 == 0, "mac", i.to_bytes(6, "big")) for i in range(1, 1001)]
    rules += [(False, "mac", (500).to_bytes(6, "big"))]
    d = _fast.Datapath(2)
    d.set_filter(_fast.FILTER_NIC_INGRESS, True, rules)
    assert _fast.filter_check(d, _fast.FILTER_NIC_INGRESS, frame((500).to_bytes(6, "big"), A, IPV4)) == (True, 499)


def test_a_direction_that_is_neither_is_refused_everywhere():
    dp = _fast.Datapath(2)
    for call in (lambda: dp.set_filter(2, True, []), lambda: _fast.filter_check(dp, -1, frame(A, B, IPV4)),
                 lambda: dp.filter_stats(7)):
        with pytest.raises(ValueError, match="direction must be"):
            call()


def test_a_new_table_keeps_the_counts_of_the_rules_it_shares_with_the_old_one():
    dp = _fast.Datapath(2)
    old = [(False, "mac", A), (True, "ethertype", IPV4), (False, "oui", INTEL[:3])]
    dp.set_filter(_fast.FILTER_NIC_INGRESS, True, old)
    for f in (frame(A, B, IPV4), frame(B, B, IPV4), frame(B, B, IPV4), frame(INTEL, B, ARP), frame(B, B, ARP)):
        _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, f)
    before = dp.filter_stats(_fast.FILTER_NIC_INGRESS)
    assert before["rules"] == [1, 2, 1] and before["default"] == 1
    new = [(True, "ethertype", IPV4), (False, "mac", B), (False, "mac", A)]
    dp.set_filter(_fast.FILTER_NIC_INGRESS, True, new)
    after = dp.filter_stats(_fast.FILTER_NIC_INGRESS)
    assert after["rules"] == [2, 0, 1]                  # kept rules move with their counts; a new one starts at 0
    assert after["default"] == 1                        # the default's action stayed
    assert after["ethertypes"] == before["ethertypes"]  # EtherType counts never depend on the rules
    dp.set_filter(_fast.FILTER_NIC_INGRESS, False, new)
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS)["default"] == 0   # deny is another default


def test_an_engine_registers_for_filter_swaps_and_a_collected_one_frees_its_place():
    dp = _fast.Datapath(2)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    engines = [_fast.Engine(dp, a.fileno(), _fast.LAN_TAP, udp.fileno(), 0, False, False) for _ in range(4)]
    with pytest.raises(RuntimeError, match="at most 4 Engines per datapath"):
        _fast.Engine(dp, a.fileno(), _fast.LAN_TAP, udp.fileno(), 0, False, False)
    dp.set_filter(_fast.FILTER_NIC_INGRESS, False, [])  # takes each engine's tx_lock: none is running
    cycle = [engines]
    cycle.append(cycle)                                 # garbage the collector must break
    del engines, cycle
    gc.collect()
    again = _fast.Engine(dp, a.fileno(), _fast.LAN_TAP, udp.fileno(), 0, False, False)
    dp.set_filter(_fast.FILTER_NIC_INGRESS, True, RULES)
    del again
    for s in (a, b, udp):
        s.close()
