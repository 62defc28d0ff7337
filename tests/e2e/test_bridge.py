"""etun as a switch port, end to end: learning, loops held off, storms cut, guards kept home.

etun as a switch port, end to end (etun/bridge.pxi, [bridge]): learning keeps a site's own
unicast off the WAN, a second path between the sites is a loop etun holds off and recovers from,
a broadcast flood is cut to storm_limit, and each guard preset keeps its frames at home.

Each site's LAN is a Linux bridge (the switch, in namespace ha / hb) with two hosts and the
gateway's lan0; the loop test joins the two switches a second way, with a veth of their own:

      a1      a2                                                        b1      b2
       \\      /                                                          \\      /
    [ha: br0 switch]--lan0 gwA (etun) ==== WAN ==== gwB (etun) lan0--[hb: br0 switch]
            \\_______________________ x0: the second path _______________________/

Base topology (WAN, gateways) in tests/e2e/topology.py.
"""

import shlex
import sys
import time

import pytest

from tests.poll import wait_until

pytestmark = pytest.mark.usefixtures("e2e_ready")

HOSTS = {"a1": 11, "a2": 12, "b1": 21, "b2": 22}            # 198.18.0.<n>, MAC 02:00:00:00:00:<n>
IP = {h: f"198.18.0.{n}" for h, n in HOSTS.items()}
MAC = {h: f"02:00:00:00:00:{n:02x}" for h, n in HOSTS.items()}
BCAST = "ff:ff:ff:ff:ff:ff"
NO_BRIDGE_NF = ("sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 "
                "net.bridge.bridge-nf-call-arptables=0")
QUIET = "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


def switched(t, hub: str = "") -> None:
    """Turn each site's host namespace into a switch (br0 over eth0, its link to the gateway)
    with two hosts of its own; `hub` names a site whose switch floods every frame (a hub). IPv6
    is off on hosts and switches, so the only frames are the test's own."""
    for site in "ab":
        sw = f"h{site}"
        t.run(f"{QUIET} && ip addr flush dev eth0 && ip link add br0 type bridge && "
              "ip link set eth0 master br0 && ip link set br0 up", sw)
        t.run(NO_BRIDGE_NF, sw, check=False)     # only when br_netfilter is loaded
        # Forward LLDP (01:80:c2:00:00:0e) as a plain switch does not, so etun sees it; BPDUs
        # pass anyway while the bridge runs no spanning tree.
        t.run("ip link set br0 type bridge group_fwd_mask 0x4000", sw)
        if site == hub:
            t.run("ip link set br0 type bridge ageing_time 0", sw)
        for host in (f"{site}1", f"{site}2"):
            t.add_node(host)
            t.run(f"ip link add eth0 netns {t.ns(host)} type veth peer name p{host} netns {t.ns(sw)}")
            t.run(f"ip link set p{host} master br0 up", sw)
            t.run(f"{QUIET} && ip link set eth0 address {MAC[host]} up && ip addr add {IP[host]}/24 dev eth0",
                  host)


def ping(t, src: str, dst: str, count: int = 3, interval: float = 0.2, wait: int = 2):
    return t.run(f"ping -n -q -c {count} -i {interval} -W {wait} {IP[dst]}", src, check=False, capture=True,
                 timeout=count * interval + wait + 10)


def send(t, host: str, frames: list[str], repeat: int = 1, per_s: float = 0) -> None:
    """Frames (hex) from a host's eth0, `repeat` times over, at most `per_s` a second (0: at once)."""
    script = ("import socket, sys, time; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
              "s.bind(('eth0', 0)); fs = [bytes.fromhex(h) for h in sys.argv[3:]]; "
              "n, gap, t0 = int(sys.argv[1]), float(sys.argv[2]), time.monotonic()\n"
              "for i in range(n):\n"
              "    [s.send(f) for f in fs]\n"
              "    d = t0 + (i + 1) * gap - time.monotonic()\n"
              "    d > 0 and time.sleep(d)")
    gap = 1 / per_s if per_s else 0
    t.run(f"{sys.executable} -c {shlex.quote(script)} {repeat} {gap} {' '.join(frames)}", host, timeout=120)


def eth(src: str, dst: str, ethertype: int = 0x88B5, body: bytes = b"") -> str:
    return (bytes.fromhex(dst.replace(":", "") + src.replace(":", "")) + ethertype.to_bytes(2, "big")
            + body.ljust(46, b"\0")).hex()


def drops(st: dict, direction: str) -> dict:
    return st["directions"][direction]["drops"]


def test_unicast_between_two_hosts_of_a_site_stays_off_the_wan_after_one_exchange(topo):
    t = topo()
    switched(t, hub="a")            # site A's switch floods everything, so etun sees a1 <-> a2
    t.start_pair()
    assert ping(t, "a1", "a2", count=1).returncode == 0            # the one exchange: ARP, echo
    assert ping(t, "a1", "b1", count=1).returncode == 0
    before = t.status("a")
    with t.capture("wan", "a0", "udp port 5555") as local_wan:
        local = ping(t, "a1", "a2", count=20, interval=0.05)
    mid = t.status("a")
    with t.capture("wan", "a0", "udp port 5555") as remote_wan:
        remote = ping(t, "a1", "b1", count=20, interval=0.05)
    assert local.returncode == 0 and remote.returncode == 0, local.stdout + remote.stdout
    kept = drops(mid, "outbound")["local_destination"] - drops(before, "outbound")["local_destination"]
    assert kept >= 40, kept                       # 20 requests and 20 replies stayed on the LAN
    assert mid["directions"]["outbound"]["frames"] - before["directions"]["outbound"]["frames"] <= 2
    assert len(local_wan) <= 6, f"{len(local_wan)} WAN packets (keepalives only expected)"
    assert len(remote_wan) >= 40, f"A <-> B: {len(remote_wan)} WAN packets for 20 pings"
    macs = t.cli("a", "status", "--macs", str(t.workdir / "a.toml"))
    assert macs.returncode == 0, macs.stdout
    for host, side in (("a1", "local"), ("a2", "local"), ("b1", "remote")):
        assert any(line.startswith(MAC[host]) and f" {side} " in line for line in macs.stdout.splitlines()), \
            (host, macs.stdout)


def link_packets(t, node: str, dev: str) -> int:
    import json
    st = json.loads(t.out(f"ip -s -j link show {dev}", node))[0]["stats64"]
    return st["rx"]["packets"] + st["tx"]["packets"]


def loop_lines(t, site: str) -> tuple[int, int]:
    """How many loops a site's log says began, and how many it says are gone."""
    lines = [line for line in t.etuns[site].text().splitlines() if "bridging loop on segment" in line]
    return sum(": MAC " in line for line in lines), sum(" is gone" in line for line in lines)


def loop_logged(t, site: str) -> bool:
    return loop_lines(t, site)[0] > 0


def loops_all_gone(t, site: str) -> bool:
    began, gone = loop_lines(t, site)
    return gone == began


def test_a_second_path_between_the_sites_is_a_loop_etun_holds_off_logs_and_recovers_from(topo):
    t = topo()
    switched(t)
    t.start_pair()
    assert ping(t, "a1", "b1").returncode == 0 and ping(t, "b2", "a2").returncode == 0
    print("-- the second path: a veth between the two switches", file=sys.stderr)
    t.run(f"ip link add x0 netns {t.ns('ha')} type veth peer name x0 netns {t.ns('hb')}")
    try:
        for sw in ("ha", "hb"):
            t.run("ip link set x0 master br0 up", sw)
        time.sleep(0.5)
        start = time.monotonic()
        # Broadcasts from both sites for half a second: a loop both ways round, even if the
        # second path's ports forward only a moment after they came up.
        send(t, "a1", [eth(MAC["a1"], BCAST)], repeat=10, per_s=40)
        send(t, "b1", [eth(MAC["b1"], BCAST)], repeat=10, per_s=40)
        # One site holding the loop off breaks it for both: the other may never see enough flips
        # of its own (CI saw exactly that once), so the checks below are of the site(s) that did.
        wait_until(lambda: any(loop_logged(t, s) for s in "ab"), timeout=5, interval=0.05,
                   what="a bridging loop logged at either site")
        # Stopped within 2 s: from then on, the second path carries a trickle, not a storm.
        time.sleep(max(0.0, start + 2 - time.monotonic()))
        n0 = link_packets(t, "ha", "x0")
        time.sleep(1)
        assert link_packets(t, "ha", "x0") - n0 < 50, "the storm goes on"
        held_off = [s for s in "ab" if loop_logged(t, s)]
        loop_drops = 0
        for s in held_off:
            st, text = t.status(s), t.etuns[s].text()
            loop_drops += sum(drops(st, d)["loop"] for d in ("outbound", "inbound"))
            assert sum(st["bridge"]["segments"][0][d]["loops"] for d in ("outbound", "inbound")) >= 1, s
            assert MAC["a1"] in text or MAC["b1"] in text, s                 # it names the MACs
            assert loop_lines(t, s)[0] == 1, s                               # once, however long
        # The looping frames were dropped and counted (at a site that held off after the other
        # did, none may have come by).
        assert loop_drops > 0, held_off
        # The hosts reach each other over the second path (once they ask again: their ARP
        # caches, and the switches' tables, still point at the path etun holds off).
        for h in ("a1", "b1"):
            t.run("ip neigh flush all", h)
        assert ping(t, "a1", "b1", count=3).returncode == 0
    finally:
        print("-- the second path removed", file=sys.stderr)
        t.run("ip link del x0", "ha", check=False)
    holds = [seg[d]["hold_s"] for s in "ab" for seg in t.status(s)["bridge"]["segments"]
             for d in ("outbound", "inbound")]
    # etun carries frames again within the hold time it had left: A <-> B pings cross the
    # tunnel (the 2 s spare covers the polls' status calls on a loaded machine).
    for h in ("a1", "b1"):
        t.run("ip neigh flush all", h)
    wait_until(lambda: not any(seg[d]["held"] for s in "ab" for seg in t.status(s)["bridge"]["segments"]
                               for d in ("outbound", "inbound")),
               timeout=max(holds) + 2, interval=0.2, what="etun to carry frames again")
    before = t.status("a")["directions"]["outbound"]["frames"]
    assert ping(t, "a1", "b1").returncode == 0
    assert t.status("a")["directions"]["outbound"]["frames"] > before
    # ... and every loop a site logged is logged gone (not just the first, which may have ended
    # before the hosts' pings over the second path began another).
    for s in held_off:
        wait_until(lambda site=s: loops_all_gone(t, site),
                   timeout=2 * max(holds) + 5, interval=0.2, what=f"every loop at {s} logged gone")


def test_a_broadcast_flood_above_storm_limit_is_cut_to_the_limit_and_counted(topo):
    t = topo()
    switched(t)
    t.start_pair(extra="\n[bridge]\nstorm_limit = 100\n")
    marker = 0x88B6
    before = t.status("a")
    with t.capture("b1", "eth0", f"ether proto {marker:#06x}", inbound=True, settle=1.0) as got:
        began = time.monotonic()
        send(t, "a1", [eth(MAC["a1"], BCAST, marker)], repeat=1500, per_s=1000)     # 1.5 s at 1,000/s
        took = time.monotonic() - began
    st = t.status("a")
    storm = drops(st, "outbound")["storm"] - drops(before, "outbound")["storm"]
    carried = st["directions"]["outbound"]["frames"] - before["directions"]["outbound"]["frames"]
    # Per second at most 100 cross; the 1.5 s flood spans at most 3 of etun's seconds.
    assert 100 <= carried <= 100 * (int(took) + 2), (carried, took)
    assert 100 - 10 <= len(got) <= carried, (len(got), carried)   # a busy capture may miss a few
    assert storm >= 1500 - 100 * (int(took) + 2), storm
    assert carried + storm >= 1500 - 5        # every frame crossed or was counted (a few: other drops)


GUARD_FRAMES = {
    "stp": eth(MAC["a1"], "01:80:c2:00:00:00", 0x0026, b"\x42\x42\x03"),
    "lldp": eth(MAC["a1"], "01:80:c2:00:00:0e", 0x88CC),
    # IPv4, UDP 67 -> 68: a DHCP server's offer (the guard reads no further)
    "dhcp-server": eth(MAC["a1"], BCAST, 0x0800, bytes.fromhex(
        "45000024000000004011000cc6120000ffffffff" "00430044001000000201060000000000")),
    # IPv6, ICMPv6 type 134: a router advertisement
    "ipv6-ra": eth(MAC["a1"], "33:33:00:00:00:01", 0x86DD, bytes.fromhex(
        "6000000000103aff" "fe800000000000000000000000000001" "ff020000000000000000000000000001"
        "8600000040000708" "0000000000000000")),
}


def test_each_guard_preset_keeps_its_frames_on_the_lan_and_counts_them(topo):
    t = topo()
    switched(t)
    t.start_pair(extra='\n[bridge]\nguard = ["stp", "lldp", "dhcp-server", "ipv6-ra"]\n')
    plain = eth(MAC["a1"], BCAST, 0x88B7)
    with t.capture("b1", "eth0", f"ether src {MAC['a1']}", inbound=True, settle=1.0) as got:
        send(t, "a1", [*GUARD_FRAMES.values(), plain], repeat=3)
    types = [bytes(p)[12:14].hex() for p in got]
    assert types.count("88b7") == 3, types          # the control frame crosses ...
    assert len(got) == 3, types                    # ... and nothing guarded does
    st = t.status("a")
    hits = {g["guard"]: g["hits"] for g in st["segments"][0]["directions"]["outbound"]["filter"]["guards"]}
    assert hits == {name: 3 for name in GUARD_FRAMES}, hits
    assert drops(st, "outbound")["filter"] >= 12
    text = t.cli("a", "status", str(t.workdir / "a.toml")).stdout
    assert "guard dhcp-server" in text and "guard ipv6-ra" in text
