"""etun joins two LANs, end to end: MTU 1500 over a small-MTU WAN, the wire format, bulk TCP.

etun joins two LANs: full-size DF pings over a WAN of MTU 840, the wire format on that WAN,
bulk TCP intact, VLAN tags kept byte for byte, jumbo frames. Topology in tests/e2e/topology.py.
"""

import sys
import time

import pytest

from etun import _fast
from tests.e2e.topology import HOST_IP, HOST_IP6

pytestmark = pytest.mark.usefixtures("e2e_ready")


@pytest.mark.parametrize("mode", ["packet", "tap"])
@pytest.mark.parametrize("level", ["none", "auth", "encrypt"])
def test_a_full_size_df_ping_crosses_a_wan_of_mtu_840(topo, mode, level):
    t = topo(lan_mode=mode)
    t.start_pair(level)
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    r = t.ping("b", HOST_IP6["a"], size=1452, count=3)           # 1500-byte IPv6 packets
    assert " 0% packet loss" in r.stdout, r.stdout
    st = t.status("a")
    assert st["level"] == level and st["peer"]["up"]
    assert st["directions"]["inbound"]["reassembled"] >= 8


def test_the_wan_carries_small_balanced_packets_and_a_1514_byte_frame_in_exactly_two(topo):
    from scapy.all import UDP

    t = topo(host_offloads=False)
    t.start_pair()
    with t.capture("wan", "a0", "udp port 5555", settle=0.5) as packets:
        assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472, count=20).stdout
        t.run(f"ping -q -c 200 -i 0.002 -s 1200 {HOST_IP['b']} >/dev/null", "ha", check=False)
    frames: dict[tuple, list[int]] = {}
    datagrams = 0
    for pkt in packets:
        udp = pkt[UDP]
        body = bytes(udp.payload)
        datagrams += 1
        assert udp.len < 800, f"a {udp.len}-byte tunnel datagram"
        if body[0] & 15 not in (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET):
            continue                                        # handshake and SESSION messages
        index, count = body[2], body[3]
        base = int.from_bytes(body[10:16], "big") - index  # the 48-bit counter (PROTOCOL.md §2)
        frames.setdefault((pkt["IP"].src, body[8], base, count), []).append(len(body) - 32)
    assert datagrams > 400
    full = [sizes for sizes in frames.values() if sum(sizes) == 1514]
    assert len(full) >= 40                                   # 20 requests + 20 replies, both ways seen
    for sizes in frames.values():
        if len(sizes) == 2:
            assert max(sizes) - min(sizes) <= 1
    assert all(len(sizes) == 2 and sizes[0] == sizes[1] for sizes in full)


def test_64_mib_of_tcp_arrive_intact_with_the_hosts_offloads_on(topo):
    t = topo(host_offloads=True)
    t.start_pair()
    sent, got = t.transfer(64 << 20)
    assert sent == got and sent.startswith(str(64 << 20))
    out = t.status("a")["directions"]["outbound"]
    # The host's TSO super-frames were cut into wire-size frames, as its NIC would have.
    assert out["superframes"] > 100
    assert out["frames"] >= (64 << 20) // 1448
    assert out["bytes"] > 64 << 20
    # What gwB injected towards hostB was never captured again: gwB sent back only ACKs.
    back = t.status("b")["directions"]["outbound"]
    assert back["bytes"] < (64 << 20) // 10, back


@pytest.mark.parametrize("offloads", [False, True])
def test_tcp_between_ipv6_hosts_arrives_intact(topo, offloads):
    t = topo(host_offloads=offloads)
    t.start_pair()
    sent, got = t.transfer(32 << 20, to=HOST_IP6["b"])
    assert sent == got and sent.startswith(str(32 << 20))
    # Segments of one flow left gwB merged into super-frames (software GRO).
    assert t.status("b")["directions"]["inbound"]["superframes"] > 100


def test_vlan_and_qinq_frames_arrive_byte_identical(topo):
    t = topo(lan_mtu=1508)
    t.start_pair()
    mac_b = t.out("cat /sys/class/net/eth0/address", "hb").strip()
    mac_a = t.out("cat /sys/class/net/eth0/address", "ha").strip()
    craft = (
        "from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, Raw, sendp, raw\n"
        f"a, b = '{mac_a}', '{mac_b}'\n"
        "frames = [\n"
        "  Ether(src=a, dst=b)/Dot1Q(vlan=100, prio=5)/IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=1, dport=9)/Raw(b'q'*1400),\n"
        "  Ether(src=a, dst=b)/Dot1AD(vlan=200)/Dot1Q(vlan=300)/IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=2, dport=9)/Raw(b'Q'*1200),\n"
        "  Ether(src=a, dst=b, type=0x88a8)/Dot1Q(vlan=7)/Dot1Q(vlan=8)/IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=3, dport=9)/Raw(b'x'*1472),\n"
        "  Ether(src=a, dst=b)/Dot1Q(vlan=0, prio=3)/IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=4, dport=9)/Raw(b'p'*64),\n"
        "]\n"
        "sendp(frames, iface='eth0', verbose=False)\n"
        "print('\\n'.join(raw(f).hex() for f in frames))\n"
    )
    with t.capture("hb", "eth0", "vlan", settle=1.0) as packets:
        sent = t.out(f"{sys.executable} -c \"{craft}\"", "ha").split()
    got = [bytes(p).hex() for p in packets]
    assert len(sent) == 4
    assert bytes.fromhex(sent[2])[12:14] == b"\x88\xa8" and len(bytes.fromhex(sent[2])) == 1522
    for frame in sent:
        assert frame in got, f"frame {frame[:60]}... did not arrive byte-identical"


def test_jumbo_frames_cross_when_both_lans_run_mtu_9000(topo):
    t = topo(lan_mtu=9000)
    t.start_pair()
    r = t.ping("a", HOST_IP["b"], size=8972, count=3)
    assert " 0% packet loss" in r.stdout, r.stdout
    st = t.status("b")
    assert st["directions"]["inbound"]["reassembled"] >= 3
    assert st["directions"]["inbound"]["drops"]["oversized"] == 0


def test_sigterm_stops_both_sites_cleanly_and_promptly(topo):
    t = topo()
    t.start_pair()
    for site in "ab":
        started = time.monotonic()
        assert t.stop_etun(site) == 0
        assert time.monotonic() - started < 2.0
    assert not (t.workdir / "a.sock").exists()
