"""etun under a hostile or broken WAN, end to end.

Wrong keys and levels, replays, bit flips, loss and reordering, floods of garbage. Topology in
tests/e2e/topology.py; the impairing relay in tests/e2e/relay.py sits in the WAN namespace between
the gateways."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.topology import ETUN_PORT, GW_IP, HOST_IP, REPO, ROUTER_IP

pytestmark = pytest.mark.usefixtures("e2e_ready")
RELAY_PORT = 6000


class Relay:
    """The impairing relay, started in the WAN namespace; the gateways' peers point at it."""

    def __init__(self, t, **impair):
        args = [f"--{k}={v}" for k, v in impair.items()]
        cmd = [sys.executable, str(REPO / "tests" / "e2e" / "relay.py"),
               f"--a={ROUTER_IP['a']}:{RELAY_PORT}", f"--b={ROUTER_IP['b']}:{RELAY_PORT}",
               f"--to-a={GW_IP['a']}:{ETUN_PORT}", f"--to-b={GW_IP['b']}:{ETUN_PORT}", "--seconds=300", *args]
        print(f"[wan] {' '.join(cmd)}", file=sys.stderr)
        self.proc = subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), *cmd], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return json.loads(out)


def start_via_relay(t, level="encrypt"):
    for site in "ab":
        t.start_etun(site, t.write_config(site, level=level, peer=f"{ROUTER_IP[site]}:{RELAY_PORT}"))
    t.wait_log("a", "peer up", timeout=20)
    t.wait_log("b", "peer up", timeout=20)


def test_a_wrong_key_lets_nothing_through_and_is_counted(topo):
    t = topo()
    t.start_etun("a", t.write_config("a", key=t.keygen("a.key")))
    t.start_etun("b", t.write_config("b", key=t.keygen("b.key")))
    time.sleep(3)
    assert " 100% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    for site in "ab":
        st = t.status(site)
        assert not st["peer"]["up"]
        assert st["directions"]["inbound"]["drops"]["auth"] >= 2          # every handshake refused
        assert st["directions"]["inbound"]["frames"] == 0
        assert "peer up" not in t.etuns[site].text()
        assert "do not authenticate: if they are the peer's, the key material differs" in t.etuns[site].text()


def test_a_level_mismatch_lets_nothing_through_and_is_counted(topo):
    t = topo()
    t.start_etun("a", t.write_config("a", level="encrypt"))
    t.start_etun("b", t.write_config("b", level="auth"))
    time.sleep(3)
    assert " 100% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    for site in "ab":
        st = t.status(site)
        assert not st["peer"]["up"]
        assert st["directions"]["inbound"]["drops"]["level_mismatch"] >= 2
        assert st["directions"]["inbound"]["frames"] == 0
    assert "are at level auth, we run encrypt" in t.etuns["a"].text()
    assert "are at level encrypt, we run auth" in t.etuns["b"].text()


def test_replayed_and_bit_flipped_packets_are_dropped_and_counted(topo):
    t = topo()
    relay = Relay(t, replay=0.2, flip=0.05, seed=7)
    try:
        start_via_relay(t)
        sent, got = t.transfer(4 << 20)
        assert sent == got
        r = t.ping("a", HOST_IP["b"], size=1472, count=20)
        assert "received" in r.stdout
    finally:
        counts = relay.stop()
    assert counts["replay"] > 50 and counts["flip"] > 10
    drops = [t.status(s)["directions"]["inbound"]["drops"] for s in "ab"]
    assert sum(d["replay"] for d in drops) >= counts["replay"] * 0.9
    assert sum(d["auth"] + d["malformed"] + d["key_index"] + d["level_mismatch"] for d in drops) >= counts["flip"] * 0.9


def test_tcp_stays_intact_under_5_percent_loss_and_10_percent_reordering(topo):
    t = topo()
    relay = Relay(t, drop=0.05, reorder=0.10, seed=11)
    try:
        start_via_relay(t)
        sent, got = t.transfer(4 << 20, timeout=180)
        assert sent == got and sent.startswith(str(4 << 20))
    finally:
        counts = relay.stop()
    assert counts["drop"] > 100 and counts["reorder"] > 200
    st = t.status("b")["directions"]["inbound"]
    assert st["reassembled"] > 500


def rss_kib(t, site: str) -> int:
    pid = t.etuns[site].proc.pid
    # `ip netns exec` execs python in place, so the Popen pid is etun's own pid.
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


FLOOD = """
import os, random, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to = (sys.argv[1], int(sys.argv[2])); end = time.monotonic() + float(sys.argv[3]); rng = random.Random(5); n = 0
while time.monotonic() < end:
    size = rng.choice([1, 15, 16, 31, 32, 33, 60, 500, 791, 1400, 9000])
    body = bytearray(os.urandom(size))
    if size >= 16 and rng.random() < 0.7:
        body[0] = 0x40 | (2 << 4) | rng.choice([1, 2, 4, 5, 6])   # looks like etun at encrypt
        body[3] = rng.choice([1, 2, 3]); body[2] = rng.randrange(3); body[1] = 0
        body[4:8] = rng.randrange(4).to_bytes(4, 'big')
    try:
        s.sendto(body, to); n += 1
    except OSError:
        pass
print(n)
"""


def test_a_flood_of_garbage_leaves_traffic_undisturbed_and_memory_flat(topo):
    t = topo()
    t.start_pair()
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472, count=3).stdout
    before = rss_kib(t, "b")
    flood = subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), sys.executable, "-c", FLOOD,
                              GW_IP["b"], str(ETUN_PORT), "8"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        r = t.ping("a", HOST_IP["b"], size=1472, count=20)
        sent, got = t.transfer(8 << 20)
    finally:
        out, _ = flood.communicate(timeout=30)
    assert int(out) > 10_000
    assert " 0% packet loss" in r.stdout, r.stdout
    assert sent == got
    after = rss_kib(t, "b")
    assert after - before < 16 * 1024, f"RSS grew from {before} to {after} KiB"
    drops = t.status("b")["directions"]["inbound"]["drops"]
    assert drops["malformed"] + drops["auth"] + drops["key_index"] > 5_000
    assert t.status("b")["peer"]["up"]


def test_the_drop_trace_names_who_sends_garbage_and_sigusr1_switches_it_on(topo):
    """An operator sees which address causes `malformed` drops: SIGUSR1 turns the debug log and
    the drop trace on in the running daemon, and one line a second names the reason and source."""
    t = topo()
    t.start_pair()
    sender = f"{sys.executable} -c \"import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); " \
             f"s.bind(('{ROUTER_IP['a']}', 4444)); [s.sendto(b'\\x80' * 40, ('{GW_IP['a']}', {ETUN_PORT})) " \
             "or time.sleep(0.01) for _ in range(150)]\""
    t.run(sender, "wan", timeout=30)
    assert "drop trace" not in t.etuns["a"].text()                   # off by default: counted only
    t.etuns["a"].proc.send_signal(signal.SIGUSR1)
    t.wait_log("a", "debug log and drop trace on")
    t.run(sender, "wan", timeout=30)
    t.wait_log("a", f"drop trace: inbound malformed from {ROUTER_IP['a']}:4444")
    lines = [line for line in t.etuns["a"].text().splitlines() if "drop trace: inbound malformed" in line]
    assert 1 <= len(lines) <= 3                                      # 1.5 s of garbage: one a second
    assert t.status("a")["directions"]["inbound"]["drops"]["malformed"] == 300
