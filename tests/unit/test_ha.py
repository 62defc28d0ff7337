"""The announcement a new active gateway sends (etun/ha.py), and the role's bookkeeping.

The announcement a new active gateway sends (etun/ha.py), read back with scapy: a RARP request
from the far side's MAC to everyone, in its segment's tags; and the role's bookkeeping."""

import pytest
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from etun import _fast
from etun.ha import Role, rarp

MAC = bytes.fromhex("02000000000b")


def test_an_announcement_is_a_rarp_request_from_the_mac_to_everyone():
    frame = rarp(MAC)
    assert len(frame) == 60
    e = Ether(frame)
    assert (e.dst, e.src, e.type) == ("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:0b", 0x8035)
    a = ARP(bytes(e.payload))
    assert (a.op, a.hwsrc, a.hwdst, a.psrc, a.pdst) == (3, "02:00:00:00:00:0b", "02:00:00:00:00:0b",
                                                        "0.0.0.0", "0.0.0.0")


@pytest.mark.parametrize("vlan,layers", [((10,), [(Dot1Q, 10)]), ((100, 20), [(Dot1AD, 100), (Dot1Q, 20)])])
def test_an_announcement_carries_its_segments_tags(vlan, layers):
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    dp.set_segments([(0, vlan, False)])                  # the tags are the datapath's own
    frame = rarp(MAC, dp.segment_tags(0))
    assert len(frame) == 60 + 4 * len(vlan)
    layer = Ether(frame).payload
    for kind, vid in layers:
        assert isinstance(layer, kind) and layer.vlan == vid
        innermost, layer = layer, layer.payload
    assert innermost.type == 0x8035 and bytes(layer)[:8] == bytes.fromhex("0001080006040003")


def test_the_role_reports_itself_and_an_inactive_or_quiet_role_announces_nothing():
    role = Role(standby=True, announce=True, now_ms=1000)
    assert role.status(3500) == {"role": "standby", "since_s": 2.5, "switches": 0, "announce": True,
                                 "announced": 0}
    assert role.announce_macs(None, [(0, MAC)]) == 0          # a standby announces nothing
    quiet = Role(standby=False, announce=False, now_ms=0)
    assert quiet.announce_macs(None, [(0, MAC)]) == 0
