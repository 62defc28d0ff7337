"""`make bench` end to end: iperf3 and ping through etun and through kernel VXLAN, side by side.

`make bench` end to end: iperf3 and ping from hostA to hostB through etun and, on the same
namespaces in the same run, through kernel VXLAN bridged to the same LAN ports.

Two host settings: offloads off ("wire" frames, as from a physical NIC: the headline) and the
veth defaults (TSO/GSO super-frames). Prints Mbit/s, etun's CPU seconds per GB moved, peak
resident memory, RTTs, and the ratios the targets are stated in; --json for machines.
"""

import argparse
import json
import os
import re
import struct
import sys
import time
from pathlib import Path

from tests.e2e import vlantag
from tests.e2e.topology import GW_IP, HOST_IP, Topology, segment_tables

TCP_TARGET = 0.70            # etun TCP >= 70% of VXLAN's, wire frames
RTT_TARGET_US = 150          # etun ping RTT <= VXLAN's + 150 us
RSS_TARGET_KIB = 64 * 1024   # per etun process, under load
HANDSHAKE_TARGET_MS = 5      # one round trip plus both sides' work
VLAN_TARGET = 0.95           # TCP through a VLAN segment >= 95% of the plain LAN's
VLAN_ROUNDS = 3              # ... measured in this many rounds of both, back to back
VLAN_IDS = {"a": 10, "b": 30}  # the hosts' access VLANs: the tunnel translates 10 <-> 30
CLK_TCK = 100


def iperf(t: Topology, seconds: float, udp: bool) -> float:
    """Receiver-side Mbit/s of one iperf3 run hostA -> hostB."""
    t.run("iperf3 -s -D -1 -p 5201 >/dev/null 2>&1", "hb")
    time.sleep(0.3)
    mode = "-u -b 0 -l 1400" if udp else ""
    out = t.out(f"iperf3 -c {HOST_IP['b']} -p 5201 -t {seconds} -J {mode} 2>/dev/null", "ha",
                timeout=seconds + 30)
    end = json.loads(out)["end"]
    if not udp:
        return end["sum_received"]["bits_per_second"] / 1e6
    # UDP: what arrived, i.e. the sending rate less the datagrams the receiver never saw.
    s = end["sum"]
    return s["bits_per_second"] * (1 - s["lost_percent"] / 100) / 1e6


def ping_rtt_us(t: Topology, count: int = 200) -> float:
    out = t.out(f"ping -n -q -c {count} -i 0.005 -s 56 {HOST_IP['b']}", "ha", timeout=60)
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) * 1000


def ping_rtt_us_cpus_awake(t: Topology) -> float | None:
    """The same ping with the CPUs kept out of deep idle (a PM QoS request of 0 us held on
    /dev/cpu_dma_latency, what tuned's latency-performance profile does), or None where that
    cannot be asked. On a VM that halts idle vCPUs, each wakeup then skips the hypervisor."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError:
        return None
    try:
        os.write(fd, struct.pack("i", 0))
        return ping_rtt_us(t)
    finally:
        os.close(fd)                          # the request ends with the descriptor


def process_tree(pid: int) -> list[int]:
    """pid and its descendants: the one-file binary runs etun in a child of its launchers."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def peak_rss_kib(pid: int) -> int:
    """The largest peak RSS of any process in the tree (the target is per process)."""
    peak = 0
    for p in process_tree(pid):
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


def vxlan_up(t: Topology) -> None:
    for site, other in (("a", "b"), ("b", "a")):
        g = f"g{site}"
        t.run(f"ip link add vx0 type vxlan id 42 local {GW_IP[site]} remote {GW_IP[other]} dstport 4789", g)
        t.run("ip link add brx type bridge && sysctl -qw net.bridge.bridge-nf-call-iptables=0 "
              "net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0", g)
        t.run("ip link set vx0 master brx && ip link set lan0 master brx && ip link set vx0 mtu 1500 up "
              "&& ip link set brx up", g)
    time.sleep(1.0)


def vxlan_down(t: Topology) -> None:
    for site in "ab":
        t.run("ip link del brx && ip link del vx0", f"g{site}")
        # VXLAN answered full-size DF packets with "fragmentation needed", and the hosts
        # cached a path MTU of 790: forget it, or etun would carry half-size frames.
        t.run("ip route flush cache && ip -6 route flush cache", f"h{site}")


def measure(t: Topology, seconds: float, with_etun: bool) -> dict:
    pids = [t.etuns[s].proc.pid for s in "ab"] if with_etun else []
    cpu0 = sum(cpu_seconds(p) for p in pids)
    tcp = iperf(t, seconds, udp=False)
    cpu1 = sum(cpu_seconds(p) for p in pids)
    udp = iperf(t, seconds, udp=True)
    rtt = ping_rtt_us(t)
    awake = ping_rtt_us_cpus_awake(t)
    row = {"tcp_mbit_s": round(tcp, 1), "udp_mbit_s": round(udp, 1), "rtt_us": round(rtt, 1),
           "rtt_us_cpus_awake": None if awake is None else round(awake, 1)}
    if with_etun:
        gigabytes = tcp * 1e6 * seconds / 8 / 1e9
        row["cpu_s_per_gb"] = round((cpu1 - cpu0) / gigabytes, 2) if gigabytes else None
        row["peak_rss_kib"] = max(peak_rss_kib(p) for p in pids)
    return row


def handshake_ms(t: Topology, level: str, etun: str | None, runs: int = 5) -> list[float]:
    """Milliseconds from the first initiation crossing A's WAN link (A's, or B's retry when it
    came first) to the initiator's confirmation (the first SESSION message) crossing it: one
    round trip and both sides' work, measured on the wire (tcpdump's timestamps), over `runs`
    starts of A against a running B."""
    from scapy.all import UDP
    t.start_etun("b", t.write_config("b", level=level), etun=etun)
    t.wait_log("b", "running")
    out = []
    for _ in range(runs):
        with t.capture("wan", "a0", "udp") as packets:
            t.start_etun("a", t.write_config("a", level=level), etun=etun, wait_up=True)
        t.stop_etun("a")
        seen = [(p.time, bytes(p[UDP].payload)[0] & 15) for p in packets if UDP in p]
        answered = next(ts for ts, ptype in seen if ptype == 5)
        first_init = max(ts for ts, ptype in seen if ptype == 4 and ts < answered)
        confirm = next(ts for ts, ptype in seen if ptype == 3 and ts > answered)
        out.append(round(float(confirm - first_init) * 1000, 3))
    t.stop_etun("b")
    return out


def run_case(offloads: bool, seconds: float, level: str, etun: str | None = None) -> dict:
    t = Topology(name="etunbench", host_offloads=offloads, narrate=False)
    with t:
        handshakes = handshake_ms(t, level, etun) if not offloads else None
        vxlan_up(t)
        vxlan = measure(t, seconds, with_etun=False)
        vxlan_down(t)
        for site in "ab":
            t.start_etun(site, t.write_config(site, level=level), etun=etun)
        t.wait_log("a", "peer up")
        t.wait_log("b", "peer up")
        etun = measure(t, seconds, with_etun=True)
    awake = None
    if etun["rtt_us_cpus_awake"] is not None and vxlan["rtt_us_cpus_awake"] is not None:
        awake = round(etun["rtt_us_cpus_awake"] - vxlan["rtt_us_cpus_awake"], 1)
    return {"host_offloads": "veth defaults" if offloads else "off (wire frames)", "level": level,
            "vxlan": vxlan, "etun": etun,
            "tcp_ratio": round(etun["tcp_mbit_s"] / vxlan["tcp_mbit_s"], 3),
            "rtt_added_us": round(etun["rtt_us"] - vxlan["rtt_us"], 1),
            "rtt_added_us_cpus_awake": awake, "handshake_ms": handshakes}


def vlan_config(t: Topology, site: str, level: str) -> Path:
    """The site's configuration with its LAN as one VLAN segment of lan0 instead of [lan]."""
    return t.write_config(site, level=level, segments=segment_tables(("office", "lan0", str(VLAN_IDS[site]))))


def run_vlan_case(seconds: float, level: str, etun: str | None = None) -> dict:
    """TCP hostA -> hostB (wire frames) with the hosts on the gateways' plain LAN ports, and
    with the hosts on VLAN 10 and 30 (tagged by vlantag.c at kernel speed) and etun carrying
    one VLAN segment: in rounds of both back to back, in turn first; the ratio is the median
    of the rounds'."""
    t = Topology(name="etunbenchv", host_offloads=False, narrate=False)
    pairs = []
    with t:
        def tcp(vlan: bool) -> float:
            for site in "ab":
                if vlan:
                    vlantag.access_port(t, f"h{site}", "eth0", VLAN_IDS[site])
                t.start_etun(site, vlan_config(t, site, level) if vlan else t.write_config(site, level=level),
                             etun=etun)
            t.wait_log("a", "peer up")
            t.wait_log("b", "peer up")
            t.run(f"ping -c 3 -i 0.2 -W 2 {HOST_IP['b']} >/dev/null", "ha")       # ARP, both ways
            mbit = iperf(t, seconds, udp=False)
            for site in "ab":
                t.stop_etun(site)
                if vlan:
                    vlantag.untagged(t, f"h{site}", "eth0")
            return mbit

        for r in range(VLAN_ROUNDS):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {vlan: tcp(vlan) for vlan in order}
            pairs.append((got[False], got[True]))
    ratios = sorted(v / p for p, v in pairs)
    return {"level": level, "rounds": [{"plain_mbit_s": round(p, 1), "vlan_mbit_s": round(v, 1)} for p, v in pairs],
            "vlan_ratio": round(ratios[len(ratios) // 2], 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--level", default="encrypt")
    p.add_argument("--json", action="store_true")
    p.add_argument("--etun", help="command to run instead of the in-tree etun, e.g. dist/etun")
    args = p.parse_args()
    cases = [run_case(False, args.seconds, args.level, args.etun),
             run_case(True, args.seconds, args.level, args.etun)]
    vlan = run_vlan_case(args.seconds, args.level, args.etun)
    if args.json:
        json.dump({"cases": cases, "vlan_segment": vlan}, sys.stdout, indent=2)
        print()
        return 0
    for c in cases:
        v, e = c["vxlan"], c["etun"]
        print(f"\nhosts' offloads {c['host_offloads']}, etun level {c['level']}, WAN MTU 840, "
              f"{args.seconds:g} s per run")
        print(f"  {'':10}{'TCP Mbit/s':>12}{'UDP Mbit/s':>12}{'ping RTT':>12}{'CPU s/GB':>10}{'peak RSS':>10}")
        print(f"  {'VXLAN':10}{v['tcp_mbit_s']:>12,.0f}{v['udp_mbit_s']:>12,.0f}{v['rtt_us']:>10.0f}us")
        print(f"  {'etun':10}{e['tcp_mbit_s']:>12,.0f}{e['udp_mbit_s']:>12,.0f}{e['rtt_us']:>10.0f}us"
              f"{e['cpu_s_per_gb']:>10.2f}{e['peak_rss_kib'] / 1024:>8.1f}MiB")
        print(f"  etun/VXLAN TCP {c['tcp_ratio']:.0%}; RTT added {c['rtt_added_us']:+.0f} us")
        if c["handshake_ms"]:
            print(f"  handshake, first initiation to confirmation on the wire: "
                  f"{', '.join(f'{ms:.2f}' for ms in c['handshake_ms'])} ms")
        if c["rtt_added_us_cpus_awake"] is not None:
            print(f"  with CPUs kept out of deep idle (cpu_dma_latency 0): ping RTT VXLAN "
                  f"{v['rtt_us_cpus_awake']:.0f}us, etun {e['rtt_us_cpus_awake']:.0f}us, "
                  f"added {c['rtt_added_us_cpus_awake']:+.0f} us")
    rounds = ", ".join(f"{r['plain_mbit_s']:,.0f} / {r['vlan_mbit_s']:,.0f}" for r in vlan["rounds"])
    print(f"\nTCP through one VLAN segment (hosts on VLAN 10 and 30, wire frames), plain / VLAN Mbit/s "
          f"per round: {rounds}; VLAN/plain {vlan['vlan_ratio']:.1%} (median of the rounds)")
    head = cases[0]
    checks = [
        (f"TCP through a VLAN segment >= {VLAN_TARGET:.0%} of plain", vlan["vlan_ratio"] >= VLAN_TARGET),
        (f"TCP >= {TCP_TARGET:.0%} of VXLAN, wire frames", head["tcp_ratio"] >= TCP_TARGET),
        (f"RTT <= VXLAN + {RTT_TARGET_US} us", all(c["rtt_added_us"] <= RTT_TARGET_US for c in cases)),
        (f"RTT <= VXLAN + {RTT_TARGET_US} us, CPUs kept out of deep idle",
         all(c["rtt_added_us_cpus_awake"] is not None and c["rtt_added_us_cpus_awake"] <= RTT_TARGET_US
             for c in cases)),
        ("RSS <= 64 MiB per process", all(c["etun"]["peak_rss_kib"] <= RSS_TARGET_KIB for c in cases)),
        (f"handshake < {HANDSHAKE_TARGET_MS} ms", max(head["handshake_ms"]) < HANDSHAKE_TARGET_MS),
    ]
    print()
    for name, ok in checks:
        print(f"  target {name}: {'met' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
