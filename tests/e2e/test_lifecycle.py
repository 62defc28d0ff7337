"""etun over time and odd wiring, end to end.

A restart, an IPv6 underlay, a peer that moves, an underlay that shares the LAN NIC (promise 7), GRO
on the LAN NIC. Topology in tests/e2e/topology.py."""

import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.topology import ETUN_PORT, GW_IP, GW_IP6, HOST_IP, ROUTER_IP
from tests.poll import wait_until

pytestmark = pytest.mark.usefixtures("e2e_ready")


def test_traffic_resumes_after_one_side_restarts(topo):
    t = topo()
    t.start_pair()
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472).stdout
    assert t.stop_etun("b") == 0
    t.start_etun("b", t.workdir / "b.toml")
    t.wait_log("b", "peer up")
    t.wait_log("a", "peer restarted")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    assert t.status("a")["peer"]["up"]


def test_traffic_resumes_after_an_outage_in_which_the_sender_moved_many_key_indices(topo):
    t = topo()
    # rekey = 1 s: during a 20-second outage each sender moves about 20 key indices on, far
    # beyond the c + 1 a receiver opens on its own; the next SESSION message tells it where to go.
    t.start_pair(rekey=1)
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"]).stdout
    before = t.status("b")["keys"]["recv_index"]
    t.run("ip link set b0 down", "wan")
    time.sleep(20)
    t.run("ip link set b0 up", "wan")
    wait_until(lambda: " 0% packet loss" in t.ping("a", HOST_IP["b"], count=2).stdout, timeout=20,
               what="traffic to resume after the outage")
    st = t.status("b")
    assert st["keys"]["recv_index"] >= before + 15, (before, st["keys"])
    assert st["peer"]["up"]


def test_a_lan_interface_that_disappears_stops_etun_with_one_line_and_exit_1(topo):
    t = topo()
    t.start_pair()
    t.run("ip link del lan0", "ga")
    e = t.etuns["a"]
    wait_until(lambda: e.proc.poll() is not None, timeout=5, what="etun to stop")
    assert e.proc.returncode == 1
    assert e.text().splitlines()[-1] == "etun: LAN interface lan0 failed: Network is down"


def test_an_ipv6_underlay_carries_the_tunnel(topo):
    t = topo(wan_mtu=1280)              # IPv6's minimum MTU; datagrams stay below 800 bytes anyway
    for site, other in (("a", "b"), ("b", "a")):
        t.start_etun(site, t.write_config(site, listen=f"[::]:{ETUN_PORT}",
                                          peer=f"[{GW_IP6[other]}]:{ETUN_PORT}"))
    t.wait_log("a", "peer up")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    assert t.status("a")["peer"]["address"] == f"[{GW_IP6['b']}]:{ETUN_PORT}"


def test_a_dns_peer_is_resolved_and_re_resolved_while_it_is_silent(topo):
    t = topo()
    hosts = Path(f"/etc/netns/{t.ns('ga')}/hosts")
    hosts.parent.mkdir(parents=True, exist_ok=True)
    try:
        # `ip netns exec` shows this file as /etc/hosts; first the name points nowhere useful.
        # B does not know where A is either, so only A's re-resolution can bring them together
        # (B then answers A's initiations where they come from, and follows A there).
        hosts.write_text("198.19.2.99 gw-b.example\n")
        t.start_etun("a", t.write_config("a", peer=f"gw-b.example:{ETUN_PORT}"))
        t.start_etun("b", t.write_config("b", peer=f"198.19.1.99:{ETUN_PORT}"))
        time.sleep(3)
        assert "peer up" not in t.etuns["a"].text()
        hosts.write_text(f"{GW_IP['b']} gw-b.example\n")        # the name moves, as DNS would
        t.wait_log("a", "now resolves to 198.19.2.1:5555", timeout=20)
        t.wait_log("a", "peer up", timeout=10)
        assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472).stdout
    finally:
        shutil.rmtree(hosts.parent, ignore_errors=True)


def test_a_peer_that_changes_its_address_is_followed(topo):
    t = topo()
    t.start_pair()
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"]).stdout
    moved = "198.19.2.7"
    t.run(f"ip addr del {GW_IP['b']}/24 dev wan0 && ip addr add {moved}/24 dev wan0 && "
          f"ip route replace default via {ROUTER_IP['b']}", "gb")
    # B keeps sending (SESSION keepalives, 2 s here); A moves to where they come from.
    wait_until(lambda: t.status("a")["peer"]["address"] == f"{moved}:{ETUN_PORT}", timeout=10,
               what="site A to follow site B to its new address")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    assert t.status("a")["peer"]["roams"] >= 1
    t.wait_log("a", "peer moved to")


def share_lan_nic(t, underlay_dev: str) -> None:
    """Rewire site A so its underlay runs over the LAN NIC: hostA, the WAN router and gwA's
    lan0 share one switch (a bridge in hostA's namespace); gwA's own WAN link is gone."""
    t.run("ip link del wan0", "ga")
    t.run("ip link add sw0 type bridge && ip link set sw0 up && ip link set eth0 master sw0 && "
          "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 "
          "net.bridge.bridge-nf-call-arptables=0", "ha")
    t.run(f"ip addr del {HOST_IP['a']}/24 dev eth0 && ip addr add {HOST_IP['a']}/24 dev sw0", "ha")
    t.run(f"ip link add up0 netns {t.ns('ha')} type veth peer name a0 netns {t.ns('wan')}")
    t.run("ip link set up0 master sw0 && ip link set up0 up", "ha")
    t.run(f"ip link set a0 up && ip addr add {ROUTER_IP['a']}/24 dev a0", "wan")
    if underlay_dev != "lan0":
        t.run(f"ip link add {underlay_dev} link lan0 type macvlan mode bridge && ip link set {underlay_dev} up", "ga")
        # Else lan0 may answer the router's ARP for the macvlan's address with its own MAC
        # (arp_ignore=0, the weak host model): tunnel packets then arrive as PACKET_HOST on
        # lan0, the kernel filters them from the capture, and the content check never runs.
        t.run("sysctl -qw net.ipv4.conf.lan0.arp_ignore=1", "ga")
    t.run(f"ip addr add {GW_IP['a']}/24 dev {underlay_dev} && "
          f"ip route add default via {ROUTER_IP['a']} dev {underlay_dev}", "ga")


def test_a_peer_that_restarts_at_a_new_address_is_followed(topo):
    t = topo()
    t.start_pair()
    assert t.stop_etun("b") == 0
    moved = "198.19.2.7"                      # say, a home router that got a new address on reboot
    t.run(f"ip addr del {GW_IP['b']}/24 dev wan0 && ip addr add {moved}/24 dev wan0 && "
          f"ip route replace default via {ROUTER_IP['b']}", "gb")
    t.start_etun("b", t.workdir / "b.toml")
    # A still sends to the old address; it answers B's initiation where it comes from, and the
    # session's first authenticated packet from there moves A's peer address: A follows B.
    t.wait_log("a", f"peer moved to {moved}:{ETUN_PORT}", timeout=15)
    t.wait_log("b", "peer up")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout


@pytest.mark.parametrize("underlay", ["lan0", "mv0"])
def test_own_tunnel_packets_are_never_tunneled_when_the_underlay_shares_the_lan_nic(topo, underlay):
    t = topo()
    share_lan_nic(t, underlay)
    t.start_pair()
    r = t.ping("a", HOST_IP["b"], size=1472, count=10)
    assert " 0% packet loss" in r.stdout, r.stdout
    sent, got = t.transfer(8 << 20)
    assert sent == got
    out = t.status("a")["directions"]["outbound"]
    # No loop: site A sent about what hostA sent (8 MiB), not its own tunnel traffic again.
    assert out["bytes"] < 8.5 * (1 << 20) + 2_000_000, out
    if underlay == "mv0":
        # The macvlan's frames reach promiscuous lan0 under another MAC: caught by content.
        assert out["drops"]["own_tunnel"] > 100, out


def test_gro_on_the_lan_nic_is_noticed_and_its_super_frames_cross_intact(topo):
    t = topo(host_offloads=False)
    t.run("ethtool -K lan0 gro on", "ga")
    t.start_pair()
    assert "GRO on lan0 left on" in t.etuns["a"].text()
    sent, got = t.transfer(16 << 20)
    assert sent == got
    out = t.status("a")["directions"]["outbound"]
    assert out["superframes"] > 0
