"""The bridge (etun/bridge.pxi): learning, aging, loops, storms and the guard presets.

The bridge (etun/bridge.pxi) through its test primitive: learning, aging, the table's bound,
a host that moved versus a MAC that flaps (a loop), holds, storms; and the guard presets."""

import random

import pytest
from etun._fast import DIR_RX, DIR_TX, bridge_frame, filter_check
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, ICMPv6ND_RA, IPv6, IPv6ExtHdrHopByHop, Raw
from scapy.layers.dhcp6 import DHCP6_Reply

from etun import _fast

A1, A2, B1 = "02:00:00:00:0a:01", "02:00:00:00:0a:02", "02:00:00:00:0b:01"
BCAST = "ff:ff:ff:ff:ff:ff"
T0 = 1_000_000            # a test clock, ms
BRIDGE_TOUCH = 100        # ms: a MAC seen again this much later is refreshed (bridge.pxi)


def frame(src: str, dst: str) -> bytes:
    return bytes.fromhex(dst.replace(":", "") + src.replace(":", "")) + b"\x88\xb5" + b"x" * 46


def bridge(**settings) -> _fast.Datapath:
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    dp.set_bridge(**settings)
    return dp


def test_unicast_between_two_local_hosts_stays_on_the_lan_once_learnt():
    dp = bridge()
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0) is None          # A2 unknown yet: it crosses
    assert bridge_frame(dp, DIR_TX, frame(A2, A1), T0 + 1) == "local_destination"
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 2) == "local_destination"
    assert dp.counters()["tx"]["local_destination"] == 2


def test_broadcast_multicast_and_remote_unicast_still_cross():
    dp = bridge()
    bridge_frame(dp, DIR_RX, frame(B1, A1), T0)                          # B1 learnt remote
    bridge_frame(dp, DIR_TX, frame(A2, BCAST), T0)
    assert bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0 + 1) is None
    assert bridge_frame(dp, DIR_TX, frame(A1, "01:00:5e:00:00:01"), T0 + 1) is None
    assert bridge_frame(dp, DIR_TX, frame(A1, B1), T0 + 1) is None
    assert bridge_frame(dp, DIR_TX, frame(A1, "02:00:00:00:0c:01"), T0 + 1) is None   # unknown unicast


def test_learning_off_tunnels_local_unicast_but_still_lists_the_macs():
    dp = bridge(learning=False)
    bridge_frame(dp, DIR_TX, frame(A2, BCAST), T0)
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 1) is None
    assert {(mac, side) for mac, _, side, _ in dp.bridge_macs(T0 + 1)} == {(A1, "local"), (A2, "local")}


def test_a_mac_ages_out_after_mac_age():
    dp = bridge(mac_age_s=10)
    bridge_frame(dp, DIR_TX, frame(A2, BCAST), T0)
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 9_000) == "local_destination"
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 10_001) is None
    assert A2 not in [mac for mac, *_ in dp.bridge_macs(T0 + 10_001)]
    assert dp.bridge_stats(0, T0 + 10_001)["macs"] == {"local": 1, "remote": 0}


def test_macs_list_side_segment_and_age():
    dp = bridge()
    bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0)
    bridge_frame(dp, DIR_RX, frame(B1, BCAST), T0 + 500)
    bridge_frame(dp, DIR_RX, frame(B1, BCAST), T0 + 700, segment=3)
    assert sorted(dp.bridge_macs(T0 + 1000)) == [(A1, 0, "local", 1000), (B1, 0, "remote", 500),
                                                 (B1, 3, "remote", 300)]


def unicast_mac(rng) -> str:
    return (rng.getrandbits(48) & ~(1 << 40)).to_bytes(6, "big").hex(":")    # group bit clear


FILLED = _fast.BRIDGE_ENTRIES * 5 // 8    # 40,960: the first MAC without room comes near 47,616+


def test_the_table_holds_five_eighths_of_its_slots_and_beyond_its_bound_counts_what_it_could_not_learn():
    dp = bridge()
    rng = random.Random(7)
    macs = sorted({unicast_mac(rng) for _ in range(FILLED + 200)})[:FILLED]
    for src in macs:
        bridge_frame(dp, DIR_TX, frame(src, BCAST), T0)
    st = dp.bridge_stats(0, T0)
    assert st["macs"]["local"] == FILLED and st["tx"]["full"] == 0 and st["tx"]["learnt"] == FILLED
    assert len(dp.bridge_macs(T0)) == FILLED                       # each MAC moved on is there once
    for src in macs[:1000]:                                        # ... and found: known, not learnt again
        bridge_frame(dp, DIR_TX, frame(src, BCAST), T0 + BRIDGE_TOUCH)
    st = dp.bridge_stats(0, T0 + BRIDGE_TOUCH)
    assert st["tx"]["learnt"] == FILLED and st["macs"]["local"] == FILLED
    for _ in range(100_000):
        bridge_frame(dp, DIR_RX, frame(unicast_mac(rng), BCAST), T0 + 1)
    st = dp.bridge_stats(0, T0 + 1)
    total = st["macs"]["local"] + st["macs"]["remote"]
    assert total <= _fast.BRIDGE_ENTRIES and st["rx"]["full"] > 0
    assert total + st["rx"]["full"] == FILLED + 100_000
    # Once they aged, the slots serve new MACs again.
    later = T0 + 301_000
    bridge_frame(dp, DIR_TX, frame(A1, BCAST), later)
    assert dp.bridge_stats(0, later)["macs"] == {"local": 1, "remote": 0}


def test_a_host_spraying_macs_on_one_segment_fills_its_share_and_the_others_still_learn():
    dp = bridge(mac_age_s=10)
    dp.set_segments([(0, (10,), False), (0, (20,), False)])
    share = dp.bridge_stats(0, T0)["share"]
    assert share == 24_576 // 2
    rng = random.Random(11)
    spray = 60_000                                  # without the share, more than the table holds
    for _ in range(spray):                          # a host on VLAN 10 spraying source MACs
        bridge_frame(dp, DIR_TX, frame(unicast_mac(rng), BCAST), T0, segment=0)
    st = dp.bridge_stats(0, T0)
    assert st["entries"] == share == st["macs"]["local"] == st["tx"]["learnt"]
    assert st["tx"]["over_share"] == spray - share and st["tx"]["full"] == 0
    macs = {unicast_mac(rng) for _ in range(share)}
    for src in macs:                                # VLAN 20's hosts, as many, are learnt all the same
        bridge_frame(dp, DIR_TX, frame(src, BCAST), T0 + 1, segment=1)
    other = dp.bridge_stats(1, T0 + 1)
    assert other["macs"]["local"] == other["entries"] == len(macs)
    assert other["tx"]["full"] == other["tx"]["over_share"] == 0
    # At its share a segment still takes its own aged slots: MACs seen again after aging are
    # learnt, in place of the aged ones, without the sweep.
    again = T0 + 10_001
    old = [mac for mac, seg, *_ in dp.bridge_macs(T0 + 2) if seg == 0][:200]
    for mac in old:
        bridge_frame(dp, DIR_TX, frame(mac, BCAST), again, segment=0)
    assert dp.bridge_stats(0, again)["macs"]["local"] == len(old)
    # The sweep empties the aged slots and gives the shares back.
    assert dp.bridge_sweep(again) == share - len(old) + len(macs)
    assert dp.bridge_stats(0, again)["entries"] == len(old) and dp.bridge_stats(1, again)["entries"] == 0


def test_one_mac_on_every_segment_is_learnt_on_each_even_in_a_busy_table():
    """Its second bucket differs per segment (with a hash that mixed only upwards it was one of
    eight, whatever the seed, and a MAC on 32 segments lost some)."""
    dp = bridge()
    dp.set_segments([(0, (10 + k,), False) for k in range(_fast.SEGMENTS_MAX)])
    rng = random.Random(5)
    for k in range(_fast.SEGMENTS_MAX):             # 500 hosts on each segment ...
        for _ in range(500):
            bridge_frame(dp, DIR_TX, frame(unicast_mac(rng), BCAST), T0, segment=k)
    router = "02:00:00:00:00:fe"                    # ... and a router on a stick on all of them
    for k in range(_fast.SEGMENTS_MAX):
        bridge_frame(dp, DIR_RX, frame(router, BCAST), T0 + 1, segment=k)
    assert sorted(seg for mac, seg, *_ in dp.bridge_macs(T0 + 1) if mac == router) == list(range(_fast.SEGMENTS_MAX))


def test_one_segment_alone_may_fill_the_whole_table():
    dp = bridge()
    assert dp.bridge_stats(0, T0)["share"] == _fast.BRIDGE_ENTRIES


def test_a_host_that_moved_to_the_other_site_is_not_a_loop():
    dp = bridge()
    bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0)                   # A1 at our site
    for k in range(20):                                                # ... then at the other
        assert bridge_frame(dp, DIR_RX, frame(A1, BCAST), T0 + 300 + 200 * k) is None
    for k in range(20):                                                # ... and back, a minute later
        assert bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0 + 60_000 + 200 * k) is None
    st = dp.bridge_stats(0, T0 + 70_000)
    assert st["rx"]["flips"] == 1 and st["tx"]["moves"] == 1
    assert st["rx"]["loops"] == st["tx"]["loops"] == 0


def flap(dp, mac: str, start: int, times: int, step: int = 10) -> list:
    """The MAC seen alternately on the LAN and from the tunnel, `step` ms apart, as in a loop."""
    return [bridge_frame(dp, (DIR_TX, DIR_RX)[k % 2], frame(mac, BCAST), start + k * step) for k in range(times)]


def test_a_mac_flapping_between_the_sides_is_a_loop_and_its_direction_is_held_off():
    dp = bridge()
    assert flap(dp, A1, T0, 4) == [None, None, None, None]
    st = dp.bridge_stats(0, T0 + 30)
    # The third fast flip in a row came from the tunnel: that direction loops.
    assert st["rx"]["loops"] == 1 and st["rx"]["held"] and st["rx"]["loop_macs"] == [A1]
    assert st["rx"]["hold_ms"] == _fast.BRIDGE_HOLD_MS and st["rx"]["episodes"] == 1
    assert bridge_frame(dp, DIR_RX, frame(B1, A1), T0 + 50) == "loop"
    assert dp.counters()["rx"]["loop"] == 1
    # It resumes by itself when the hold is over.
    assert bridge_frame(dp, DIR_RX, frame(B1, A2), T0 + 30 + 2001) is None


def test_a_loop_that_persists_doubles_its_hold_and_is_one_episode():
    dp = bridge()
    flap(dp, A1, T0, 4)
    end = dp.bridge_stats(0, T0)["rx"]["hold_until_ms"]
    flap(dp, A1, end + 10, 4)                                        # back as soon as it resumed
    st = dp.bridge_stats(0, end + 50)
    assert st["rx"]["hold_ms"] == 2 * _fast.BRIDGE_HOLD_MS and st["rx"]["episodes"] == 1
    assert st["rx"]["loops"] >= 2
    quiet = st["rx"]["hold_until_ms"] + 60_000                         # a minute later: a new loop
    flap(dp, A2, quiet, 4)
    st = dp.bridge_stats(0, quiet + 50)
    assert st["rx"]["hold_ms"] == _fast.BRIDGE_HOLD_MS and st["rx"]["episodes"] == 2
    assert st["rx"]["loop_macs"] == [A2]


def test_loop_protection_log_counts_the_loop_and_carries_on():
    dp = bridge(loop_protection="log")
    assert flap(dp, A1, T0, 8) == [None] * 8
    st = dp.bridge_stats(0, T0 + 80)
    assert st["rx"]["episodes"] == 1 and not st["rx"]["held"] and not st["tx"]["held"]


def test_loop_protection_off_never_detects_one():
    dp = bridge(loop_protection="off")
    assert flap(dp, A1, T0, 8) == [None] * 8
    st = dp.bridge_stats(0, T0 + 80)
    assert st["rx"]["loops"] == st["tx"]["loops"] == 0 and st["rx"]["flips"] > 0


def test_flooded_frames_over_the_storm_limit_are_dropped_per_second_and_direction():
    dp = bridge(storm_limit=10)
    bridge_frame(dp, DIR_RX, frame(B1, BCAST), T0)                     # B1 learnt remote: 1 of rx's 10
    got = [bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0 + k) for k in range(15)]
    assert got == [None] * 10 + ["storm"] * 5
    assert bridge_frame(dp, DIR_TX, frame(A1, B1), T0 + 20) is None       # known unicast: not flooded
    assert bridge_frame(dp, DIR_TX, frame(A1, "02:00:00:00:0c:09"), T0 + 20) == "storm"   # unknown: flooded
    assert bridge_frame(dp, DIR_RX, frame(B1, BCAST), T0 + 20) is None   # the other direction has its own
    assert bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0 + 1000) is None  # a new second
    assert dp.counters()["tx"]["storm"] == 6


def test_storm_limit_zero_means_no_limit():
    dp = bridge(storm_limit=0)
    assert all(bridge_frame(dp, DIR_TX, frame(A1, BCAST), T0) is None for _ in range(10_000))


def test_segments_learn_apart():
    dp = bridge()
    bridge_frame(dp, DIR_TX, frame(A2, BCAST), T0, segment=1)
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 1, segment=0) is None
    assert bridge_frame(dp, DIR_TX, frame(A1, A2), T0 + 1, segment=1) == "local_destination"


# -- guard presets (etun/guard.pxi) ----------------------------------------------------------

GUARDED = {
    "stp": Ether(src=A1, dst="01:80:c2:00:00:00") / Raw(b"\x42\x42\x03" + bytes(40)),
    "lldp": Ether(src=A1, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(bytes(40)),
    "dhcp-server": Ether(src=A1, dst=BCAST) / IP(src="198.18.0.9", dst="255.255.255.255")
    / UDP(sport=67, dport=68) / BOOTP(op=2) / DHCP(options=[("message-type", "offer"), "end"]),
    "ipv6-ra": Ether(src=A1, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1")
    / IPv6ExtHdrHopByHop() / ICMPv6ND_RA(),
}
ALSO_GUARDED = {
    "stp": Ether(src=A1, dst="01:00:0c:cc:cc:cd") / Raw(bytes(40)),                       # PVST+
    "lldp": Ether(src=A1, dst="01:80:c2:00:00:0e", type=0x8100) / Raw(b"\x00\x05\x88\xcc" + bytes(40)),   # tagged
    "dhcp-server": Ether(src=A1, dst=BCAST) / IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=547, dport=546)
    / DHCP6_Reply(),
    "ipv6-ra": Ether(src=A1, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6ND_RA(),
}
NOT_GUARDED = [
    Ether(src=A1, dst="01:80:c2:00:00:02") / Raw(bytes(46)),                                # LACP's group
    Ether(src=A1, dst=BCAST) / IP(dst="255.255.255.255") / UDP(sport=68, dport=67) / BOOTP(op=1),   # a client
    Ether(src=A1, dst=BCAST) / IPv6(dst="ff02::2") / UDP(sport=546, dport=547) / Raw(bytes(8)),
    Ether(src=A1, dst="33:33:00:00:00:02") / IPv6(dst="ff02::2", nh=58) / Raw(b"\x85" + bytes(15)),   # an RS
]


@pytest.mark.parametrize("name", _fast.GUARD_NAMES)
def test_each_guard_preset_denies_its_frames_before_any_rule_and_counts_them(name):
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    allow_all = [(True, "oui", bytes.fromhex("020000"))]                 # the sender's OUI: allowed
    dp.set_filter(_fast.FILTER_NIC_INGRESS, True, allow_all, guards=[name])
    for f in (GUARDED[name], ALSO_GUARDED[name]):
        assert filter_check(dp, _fast.FILTER_NIC_INGRESS, bytes(f)) == (False, name)
    for other in set(_fast.GUARD_NAMES) - {name}:
        assert filter_check(dp, _fast.FILTER_NIC_INGRESS, bytes(GUARDED[other]))[0]
    for f in NOT_GUARDED:
        assert filter_check(dp, _fast.FILTER_NIC_INGRESS, bytes(f))[0]
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS)["guards"] == {name: 2}
    # A reload that keeps the guard keeps its count.
    dp.set_filter(_fast.FILTER_NIC_INGRESS, True, [], guards=_fast.GUARD_NAMES)
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS)["guards"][name] == 2


def test_no_guard_no_guard_counts():
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS)["guards"] == {}
    assert filter_check(dp, _fast.FILTER_NIC_INGRESS, bytes(GUARDED["stp"])) == (True, None)
