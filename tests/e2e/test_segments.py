"""Segments end to end: VLANs of a trunk, a QinQ path and a second NIC through one tunnel.

VLANs of a trunk, a QinQ path and a second NIC carried through one tunnel, each kept apart,
re-tagged at the far site, counted; a VLAN nobody selects and a segment the peer lacks stay off the
WAN and are named.

    site A (trunk on lan0)                                   site B
    ha: v10 = VLAN 10      198.18.10.1   office  <->  VLAN 30 on lan0    hb: v30 198.18.10.2
        v20 = VLAN 20      198.18.20.1   voice   <->  VLAN 20 on lan0        v20 198.18.20.2
        vq  = VLAN 100.20  198.18.30.1   qinq    <->  untagged lan1      hb2: eth0 198.18.30.2
        (VLAN 40)                        guest   <->  (none at B)

The hosts' VLAN interfaces are TAP devices of tests/e2e/vlanhost.py: this kernel has no 8021q
module, and etun needs none. One more test makes the hosts' own NICs VLAN access ports at kernel
speed (tc programs, tests/e2e/vlantag.py), so TCP with their TSO on crosses a VLAN segment.
"""

import sys

from tests.e2e import vlantag
from tests.e2e.topology import HOST_IP, segment_tables
from tests.poll import wait_until

SEGMENTS_A = segment_tables(("office", "lan0", "10"), ("voice", "lan0", "20"), ("qinq", "lan0", "100.20"),
                            ("guest", "lan0", "40"))
SEGMENTS_B = segment_tables(("office", "lan0", "30"), ("voice", "lan0", "20"), ("qinq", "lan1", None))
HOSTS_A = {"v10": ("10", "198.18.10.1"), "v20": ("20", "198.18.20.1"), "vq": ("100.20", "198.18.30.1")}
HOSTS_B = {"v30": ("30", "198.18.10.2"), "v20": ("20", "198.18.20.2")}
WAN_MTU = 820                    # max_packet 800 and its IPv4 header


def vlan_hosts(t, node: str, hosts: dict) -> None:
    t.spawn(node, [sys.executable, "tests/e2e/vlanhost.py", "eth0", *(f"{name}={path}" for name, (path, _) in hosts.items())],
            ready="ready")
    for name, (_, ip) in hosts.items():
        t.run(f"ip link set {name} up && ip addr add {ip}/24 dev {name}", node)


def build(topo):
    """The two sites of the module docstring, etun running at both with the peer up."""
    t = topo(lan_mtu=1508, wan_mtu=WAN_MTU)
    t.add_node("hb2")
    t.run(f"ip link add lan1 netns {t.ns('gb')} type veth peer name eth0 netns {t.ns('hb2')}")
    t.run("ip link set lan1 mtu 1508 up", "gb")
    t.run("ip link set eth0 mtu 1500 up && ip addr add 198.18.30.2/24 dev eth0", "hb2")
    vlan_hosts(t, "ha", HOSTS_A)
    vlan_hosts(t, "hb", HOSTS_B)
    for site, segments in (("a", SEGMENTS_A), ("b", SEGMENTS_B)):
        t.start_etun(site, t.write_config(site, segments=segments))
    t.wait_log("a", "peer up")
    t.wait_log("b", "peer up")
    # The first SESSION messages tell each site the other's segments.
    wait_until(lambda: t.status("a")["peer"]["segments"] is not None and t.status("b")["peer"]["segments"]
               is not None, timeout=10, what="both sites to learn the other's segments")
    return t


def craft(t, node: str, frames: list[str]) -> list[bytes]:
    """Send scapy frames (Python expressions over a, b: the two hosts' eth0 MACs) from `node`'s
    eth0; returns them as sent."""
    code = ("from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, Raw, sendp, raw\n"
            f"a, b = {t.mac('ha')!r}, {t.mac('hb')!r}\n"
            f"frames = [{', '.join(frames)}]\n"
            "sendp(frames, iface='eth0', verbose=False)\n"
            "print(' '.join(raw(f).hex() for f in frames))\n")
    path = t.workdir / f"craft-{node}.py"
    path.write_text(code)
    r = t.run(f"{sys.executable} {path}", node, check=False, capture=True)
    assert r.returncode == 0, r.stdout
    return [bytes.fromhex(h) for h in r.stdout.split()[-len(frames):]]


def test_every_segment_carries_full_size_df_pings_in_two_packets_each_way(topo):
    t = build(topo)
    for src, dst in (("198.18.10.1", "198.18.10.2"), ("198.18.20.1", "198.18.20.2"),
                     ("198.18.30.1", "198.18.30.2")):
        r = t.run(f"ping -n -q -c 3 -i 0.2 -W 2 -M do -s 1472 -I {src} {dst}", "ha", check=False, capture=True)
        assert r.returncode == 0, f"{src} -> {dst}:\n{r.stdout}"
    with t.capture("wan", "a0", "udp") as packets:
        r = t.run("ping -n -q -c 5 -i 0.2 -W 2 -M do -s 1472 -I 198.18.10.1 198.18.10.2", "ha",
                  check=False, capture=True)
    assert r.returncode == 0, r.stdout
    sizes = [len(p["UDP"].payload) for p in packets]
    assert max(sizes) + 8 < 800, sizes              # every tunnel datagram below max_packet
    big = [s for s in sizes if s > 700]
    # 5 requests and 5 replies of 1514 bytes, each exactly two datagrams of equal size.
    assert len(big) == 20 and len(set(big)) == 1, sizes
    st = {g["name"]: g for g in t.status("a")["segments"]}
    assert st["office"]["directions"]["outbound"]["frames"] >= 8 and st["office"]["vlan"] == "10"
    assert st["qinq"]["directions"]["inbound"]["frames"] >= 3 and st["qinq"]["at_peer"] is True
    r = t.transfer(3_000_000, to="198.18.10.2")
    assert r[0] == r[1], r


def test_vlan_ids_differ_between_sites_and_segments_never_mix(topo):
    t = build(topo)
    same_mac = "02:00:00:00:00:aa"
    ip = "IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=7, dport=9)"
    with t.capture("hb", "eth0", "vlan", settle=1.0) as at_b, t.capture("hb2", "eth0", "udp", settle=1.0) as at_b2:
        sent = craft(t, "ha", [
            f"Ether(src='{same_mac}', dst=b)/Dot1Q(vlan=10, prio=5)/{ip}/Raw(b'o'*1400)",
            f"Ether(src='{same_mac}', dst=b)/Dot1Q(vlan=20, prio=0)/{ip}/Raw(b'v'*1400)",
            f"Ether(src='{same_mac}', dst=b)/Dot1Q(vlan=10)/Dot1Q(vlan=5)/{ip}/Raw(b'd'*300)",
            f"Ether(src=a, dst=b)/Dot1AD(vlan=100)/Dot1Q(vlan=20, prio=2)/{ip}/Raw(b'q'*1450)",
        ])
    got_b = [bytes(p) for p in at_b]
    # VLAN 10 arrives as VLAN 30, priority kept, every other byte the same.
    office = sent[0][:14] + bytes([0xA0, 30]) + sent[0][16:]
    assert office in got_b, "VLAN 10 did not arrive as VLAN 30 byte-identical but for the tag"
    assert sent[1] in got_b, "VLAN 20 did not arrive as VLAN 20"
    # A deeper tag stays: 10.5 at A is 30.5 at B.
    assert sent[2][:14] + bytes([0, 30]) + sent[2][16:] in got_b
    # Nothing of VLAN 20 arrived in VLAN 30, nothing of VLAN 10 in VLAN 20: the same MAC in both.
    office_payloads = [f for f in got_b if f[14:16] == bytes([0xA0, 30]) or f[14:16] == bytes([0, 30])]
    assert all(b"v" * 100 not in f for f in office_payloads)
    assert all(b"o" * 100 not in f for f in got_b if f[14:16] == bytes([0, 20]))
    # QinQ 100.20 at A is untagged on B's second NIC, and back.
    assert sent[3][:12] + sent[3][20:] in [bytes(p) for p in at_b2], "the QinQ frame did not arrive untagged"
    with t.capture("ha", "eth0", "vlan", settle=1.0) as at_a:
        back = craft(t, "hb2", [f"Ether(src=b, dst=a)/{ip}/Raw(b'r'*1472)"])
    qinq = back[0][:12] + bytes.fromhex("88a80064" "81000014") + back[0][12:]
    assert qinq in [bytes(p) for p in at_a], "the untagged frame did not arrive as 802.1ad 100 / 802.1Q 20"


def test_an_unselected_vlan_and_a_segment_the_peer_lacks_stay_off_the_wan_counted_and_named(topo):
    t = build(topo)
    ip = "IP(src='198.18.0.1', dst='198.18.0.2')/UDP(sport=7, dport=9)"
    before = t.status("a")
    with t.capture("wan", "a0", "udp") as wan, t.capture("hb", "eth0", "vlan", settle=1.0) as at_b:
        craft(t, "ha", [f"Ether(src=a, dst=b)/Dot1Q(vlan=99)/{ip}/Raw(b'u'*1000)"] * 20
              + [f"Ether(src=a, dst=b)/Dot1Q(vlan=40)/{ip}/Raw(b'g'*1000)"] * 20)
    after = t.status("a")
    out = after["directions"]["outbound"]["drops"]
    assert out["unselected_vlan"] - before["directions"]["outbound"]["drops"]["unselected_vlan"] >= 20
    guest = {g["name"]: g for g in after["segments"]}["guest"]
    assert guest["at_peer"] is False and guest["directions"]["outbound"]["drops"]["unknown_segment"] >= 20
    assert after["peer"]["segments_only_here"] == ["guest"]
    # A 1018-byte frame would be two datagrams of 541 bytes: none crossed.
    assert not [p for p in wan if 500 < len(p["UDP"].payload) < 600]
    assert not [p for p in at_b if b"u" * 100 in bytes(p) or b"g" * 100 in bytes(p)]
    r = t.cli("a", "verify-peer", str(t.workdir / "a.toml"))
    assert r.returncode == 3 and "FAIL  segments: segments differ: guest only here" in r.stdout, r.stdout
    text = t.cli("a", "status", str(t.workdir / "a.toml")).stdout
    assert "SEGMENT MISMATCH: guest only here" in text and "segment guest: lan0 VLAN 40" in text, text
    assert "segments differ from the peer's: guest only here" in t.etuns["a"].text()
    assert "segments differ from the peer's: guest only at the peer" in t.etuns["b"].text()


def test_tcp_with_the_hosts_tso_on_crosses_a_vlan_segment_re_tagged(topo):
    """The hosts' eth0 as access ports of VLAN 10 (site A) and 30 (site B), tagged by the kernel:
    etun captures tagged TCP super-frames, selects the segment, cuts them and pushes VLAN 30."""
    t = topo(wan_mtu=WAN_MTU)
    for site, vid in (("a", 10), ("b", 30)):
        vlantag.access_port(t, f"h{site}", "eth0", vid)
        t.start_etun(site, t.write_config(site, segments=segment_tables(("office", "lan0", str(vid)))))
    t.wait_log("a", "peer up")
    t.wait_log("b", "peer up")
    with t.capture("hb", "eth0", "vlan 30 and icmp", settle=0.5) as tagged:
        r = t.run(f"ping -n -q -c 3 -i 0.2 -W 2 -M do -s 1472 {HOST_IP['b']}", "ha", check=False, capture=True)
    assert r.returncode == 0, r.stdout
    assert len(tagged) >= 3, "the echo requests did not arrive at site B tagged VLAN 30"
    before = t.status("a")
    r = t.transfer(20_000_000)
    assert r[0] == r[1], r
    after = t.status("a")
    office = after["segments"][0]
    assert office["name"] == "office" and office["directions"]["outbound"]["frames"] > 10_000
    sf = after["directions"]["outbound"]["superframes"] - before["directions"]["outbound"]["superframes"]
    assert sf > 0, "no super-frame: the hosts' TSO was off, the test proves less than it says"
    assert after["directions"]["outbound"]["drops"]["unselected_vlan"] == 0
