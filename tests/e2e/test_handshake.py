"""Sessions nobody can jam, roll back or read later (docs/PROTOCOL.md §5), end to end.

Sessions nobody can jam, roll back or read later (docs/PROTOCOL.md §5): recorded handshakes
replayed in floods from spoofed addresses, floods of initiations, reflected probes, forged key
indices. Topology in tests/e2e/topology.py; the flooder (tests/e2e/flood.py) runs in the WAN
namespace and sends from random addresses of 198.18.128.0/17.

    hostA - gwA - [wan: flood.py, tcpdump] - gwB - hostB
"""

import os
import subprocess
import sys
import time

import pytest

from etun import _fast
from tests.e2e.topology import ETUN_PORT, GW_IP, HOST_IP, REPO, ROUTER_IP

pytestmark = pytest.mark.usefixtures("e2e_ready")
SPOOFED = "198.18.128.0/17"
FLOOD = REPO / "tests" / "e2e" / "flood.py"


def capture(t, during, iface: str = "a0", to: str | None = None) -> list[bytes]:
    """The UDP payloads that crossed the WAN interface `iface` while during() ran (only those to
    the IPv4 address `to`, if given)."""
    from scapy.all import IP, UDP
    with t.capture("wan", iface, "udp") as packets:
        during()
    return [bytes(p[UDP].payload) for p in packets if UDP in p and (to is None or p[IP].dst == to)]


def of_type(datagrams: list[bytes], ptype: int) -> list[bytes]:
    return [d for d in datagrams if d and _fast.packet_type(d)[2] == ptype]


def recorded_initiations(t, runs: int = 20) -> list[bytes]:
    """INITs of `runs` earlier runs of site A (each started, then stopped before any answer)."""
    def runs_of_a():
        for _ in range(runs):
            t.start_etun("a", t.write_config("a"))
            t.wait_log("a", "running")
            time.sleep(0.5)                      # its first initiation leaves at once, even loaded
            assert t.stop_etun("a") == 0
    inits = of_type(capture(t, runs_of_a), _fast.TYPE_INIT)
    assert len(inits) >= runs
    return inits


def flood(t, datagrams: list[bytes], rate: int, seconds: float, to: str = "b", senders: int = 1) -> subprocess.Popen:
    path = t.workdir / f"flood-{time.monotonic_ns()}.hex"
    path.write_text("\n".join(d.hex() for d in datagrams))
    cmd = [sys.executable, str(FLOOD), GW_IP[to], str(ETUN_PORT), str(rate), str(seconds), SPOOFED, str(path),
           str(senders)]
    print(f"[wan] {' '.join(cmd)}", file=sys.stderr)
    return subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), *cmd], stdout=subprocess.PIPE, text=True)


def flood_start(proc: subprocess.Popen) -> float:
    """When the flood's first datagram leaves (CLOCK_MONOTONIC, as time.monotonic() reads it):
    the flooder builds every packet first, which takes a while."""
    line = proc.stdout.readline()
    assert line.startswith("start "), line
    return float(line.split()[1])


def flood_result(proc: subprocess.Popen) -> tuple[int, float]:
    """(datagrams sent, seconds from the first to the last)."""
    out, _ = proc.communicate(timeout=120)
    _, sent, _, seconds = out.strip().splitlines()[-1].split()
    return int(sent), float(seconds)


def flood_sent(proc: subprocess.Popen) -> int:
    return flood_result(proc)[0]


def first_answer_s(t, limit_s: float = 10) -> float:
    """Seconds until a ping hostA -> hostB is answered."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        r = t.run(f"ping -n -c 1 -W 0.2 {HOST_IP['b']}", "ha", check=False, capture=True)
        if r.returncode == 0:
            return time.monotonic() - start
    raise AssertionError(f"no answer within {limit_s} s")


def session_of(t, site: str) -> tuple:
    st = t.status(site)
    return st["session"]["handshakes"], st["keys"]["recv_index"], st["session"]["role"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, all its threads (proc(5): fields 14 and 15)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_replayed_handshakes_of_20_earlier_runs_do_not_keep_a_restarting_site_from_its_tunnel(topo):
    t = topo()
    inits = recorded_initiations(t)
    t.start_etun("b", t.write_config("b"))
    t.wait_log("b", "running")
    f = flood(t, inits, rate=1000, seconds=12)
    try:
        time.sleep(2)                                     # b is under load now
        started = time.monotonic()
        t.start_etun("a", t.write_config("a"))
        first_answer_s(t)
        took = time.monotonic() - started
        print(f"first ping answered {took:.2f} s after site A started, under 1,000 replays/s")
        assert took < 5
    finally:
        sent = flood_sent(f)
    assert sent > 5000
    drops = t.status("b")["directions"]["inbound"]["drops"]
    assert drops["under_load"] + drops["replay"] > 5000
    assert "peer up" in t.etuns["a"].text()


def ping_through_flood(t, datagrams: list[bytes], rate: int):
    """400 pings hostA -> hostB, 10 ms apart, while the datagrams flood site B's gateway for 6 s:
    ping's output and how many datagrams the flood sent."""
    f = flood(t, datagrams, rate=rate, seconds=6)
    try:
        time.sleep(0.5)
        r = t.run(f"ping -n -q -c 400 -i 0.01 -W 1 {HOST_IP['b']}", "ha", check=False, capture=True, timeout=30)
    finally:
        sent = flood_sent(f)
    return r, sent


def test_replayed_handshakes_during_steady_traffic_lose_no_frame_and_change_no_session(topo):
    t = topo()
    inits = recorded_initiations(t)
    t.start_pair()
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    before = {s: session_of(t, s) for s in "ab"}
    r, sent = ping_through_flood(t, inits, rate=1000)
    assert sent > 3000
    assert " 0% packet loss" in r.stdout, r.stdout
    assert {s: session_of(t, s) for s in "ab"} == before


def fresh_initiations(t, n: int) -> list[bytes]:
    """`n` initiations nobody sent before, made with the sites' key file: what an insider could
    flood with. Each is new to the receiver (its own mac1), so only the load gate and its cookies
    stand between them and a Diffie-Hellman each."""
    from etun import keys
    dp = _fast.Datapath(_fast.LEVEL_ENCRYPT)
    keys.load_secrets(t.keygen()).install(dp)
    return [_fast.Handshake(dp).initiate(bytes(_fast.INIT_PAYLOAD_LEN)) for _ in range(n)]


FLOOD_RATE = 10_000              # initiations a second: the flood (docs/SECURITY.md)
FLOOD_RATE_MIN = 9_000          # ... of which the flooder must really send this many
FLOOD_SENDERS = 2               # flooder processes: one sent 40,000/s here (load 7); two for headroom
CPU_SHARE_MAX = 0.20            # of one core, for etun at site B, at that rate


def test_a_flood_of_10000_initiations_a_second_gets_cookies_costs_under_20_percent_of_a_core_and_traffic_flows(
        topo):
    t = topo()
    t.start_pair()
    inits = fresh_initiations(t, 20_000)          # then sent again: replays, dropped sooner still
    pid = t.etuns["b"].proc.pid                   # the daemon itself: `ip netns exec` execs it
    f = flood(t, inits, rate=FLOOD_RATE, seconds=5, senders=FLOOD_SENDERS)
    try:
        time.sleep(max(0.0, flood_start(f) - time.monotonic()))
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        # 200 pings over 4 s, all within the flood's 5 s.
        r = t.run(f"ping -n -q -c 200 -i 0.02 -W 1 {HOST_IP['b']}", "ha", check=False, capture=True, timeout=30)
    finally:
        sent, seconds = flood_result(f)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    rate, share = sent / seconds, cpu / wall
    print(f"{sent} initiations in {seconds:.2f} s ({rate:,.0f}/s, {FLOOD_SENDERS} senders): etun at B used "
          f"{cpu:.2f} s of CPU in {wall:.2f} s ({100 * share:.1f}% of one core)")
    assert rate >= FLOOD_RATE_MIN, f"the flooder sent only {rate:,.0f}/s: the measurement proves nothing"
    assert share <= CPU_SHARE_MAX, f"etun used {100 * share:.1f}% of a core at {rate:,.0f} initiations/s"
    assert " 0% packet loss" in r.stdout, r.stdout
    st = t.status("b")
    drops = st["directions"]["inbound"]["drops"]
    assert drops["under_load"] > min(sent, len(inits)) // 2
    assert drops["under_load"] + drops["replay"] > sent * 0.9
    assert st["directions"]["outbound"]["drops"]["send_error"] == 0


REFLECTOR = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.5); end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        continue
    s.sendto(data, src)
"""


def test_verify_peer_against_a_reflected_probe_reports_no_answer_not_ok(topo):
    """Whatever site A sends comes straight back to it: its own probes must not pass for the
    peer's answers, with or without a daemon at A."""
    t = topo()
    reflector = subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), sys.executable, "-c", REFLECTOR,
                                  ROUTER_IP["a"], "6000", "40"])
    try:
        config = t.write_config("a", peer=f"{ROUTER_IP['a']}:6000")
        r = t.cli("a", "verify-peer", "--timeout=2", str(config))
        assert r.returncode == 3 and "FAIL  reachable: no answer" in r.stdout, r.stdout
        t.start_etun("a", config)
        t.wait_log("a", "running")
        r = t.cli("a", "verify-peer", "--timeout=2", str(config))
        assert r.returncode == 3 and "FAIL  reachable: no answer" in r.stdout, r.stdout
    finally:
        reflector.kill()
        reflector.wait()


def test_forged_packets_for_key_indices_ahead_cost_no_genuine_frame(topo):
    t = topo()
    t.start_pair(rekey=1)
    data = of_type(capture(t, lambda: t.ping("a", HOST_IP["b"], count=3), to=GW_IP["b"]), _fast.TYPE_FRAME)
    assert data
    genuine = data[-1]
    index = int.from_bytes(genuine[4:8], "big")
    forged = []
    for ahead in range(2, 65):
        # The real session id and sizes, indices c + 2 .. c + 64 (and later ones, as rekey moves c).
        for later in range(0, 30, 3):
            forged.append(genuine[:4] + (index + ahead + later).to_bytes(4, "big") + genuine[8:])
    r, sent = ping_through_flood(t, forged, rate=2000)
    assert " 0% packet loss" in r.stdout, r.stdout
    drops = t.status("b")["directions"]["inbound"]["drops"]
    assert drops["key_index"] + drops["auth"] > sent // 2, drops
    assert drops["crypto_error"] == 0
