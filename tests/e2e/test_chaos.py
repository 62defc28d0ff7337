"""Chaos on the links and processes, end to end: how long until traffic flows again.

A WAN blackout, the LAN interface down and up, a site killed, both sites restarted at once, a peer
roaming every 10 s. Each case measures the time from the event to the first answered ping
(timestamps from `ping -D`, 50 ms apart) and prints it for the record (docs/RELIABILITY.md).
Topology in tests/e2e/topology.py.

    hostA ---[lan0 gwA wan0]---[a0 wan b0]---[wan0 gwB lan0]--- hostB
                                 ^ nftables here (blackout)      ^ its address moves (roaming)
"""

import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.topology import GW_IP, HOST_IP, REPO, ROUTER_IP
from tests.poll import wait_until

pytestmark = pytest.mark.usefixtures("e2e_ready")
REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")
UDPSEQ = REPO / "tests" / "e2e" / "udpseq.py"


class Pinger:
    """`ping -D` from a host every 50 ms for at most `seconds`; the wall-clock time of each reply."""

    def __init__(self, t, src: str, dst: str, seconds: float):
        cmd = ["ip", "netns", "exec", t.ns(f"h{src}"), "ping", "-n", "-D", "-i", "0.05", "-W", "1",
               "-w", str(int(seconds)), dst]
        print(f"[h{src}] {' '.join(cmd[4:])}", file=sys.stderr)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.replies: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            m = REPLY.match(line)
            if m:
                self.replies.append(float(m.group(1)))

    def first_after(self, wall: float, timeout: float) -> float:
        """Seconds from `wall` (time.time()) to the first reply after it; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [r for r in self.replies if r > wall]
            if later:
                return later[0] - wall
            time.sleep(0.02)
        raise AssertionError(f"no answered ping within {timeout} s of the event")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)


def evidence(t) -> str:
    """What both sites and hosts knew when a case failed: for the report, not for the verdict."""
    lines = []
    for site in "ab":
        if site in t.etuns and t.etuns[site].proc.poll() is None:
            st = t.status(site)
            lines.append(f"site {site}: peer {st['peer']}, keys {st['keys']}, pumps {st['pumps']}, "
                         f"out {st['directions']['outbound']['frames']} frames, "
                         f"in {st['directions']['inbound']['frames']} frames, drops "
                         f"{ {k: v for k, v in st['directions']['inbound']['drops'].items() if v} }")
            lines.append("\n".join(t.etuns[site].text().splitlines()[-6:]))
        lines.append(f"host {site} neighbours: " + t.out("ip neigh show dev eth0", f"h{site}").strip())
    return "\n".join(lines)


def record(case: str, seconds: float) -> None:
    print(f"CHAOS {case}: first answered ping {seconds:.3f} s after the event", file=sys.stderr)


def wait_ready(t, site: str, since: int, timeout: float = 20) -> float:
    """time.time() when etun at `site` logged that it runs (sockets open), polled every 20 ms."""
    e = t.etuns[site]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "running: level" in e.text()[since:]:
            return time.time()
        assert e.proc.poll() is None, f"etun at {site} exited:\n{e.text()}"
        time.sleep(0.02)
    raise AssertionError(f"etun at {site} did not start within {timeout} s:\n{e.text()}")


def working_pair(topo):
    """A topology whose two sites carry a ping."""
    t = topo()
    t.start_pair()
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"]).stdout
    return t


def restart_and_time(t, case: str, *sites: str) -> tuple[float, float]:
    """Start etun at `sites` again, at the same moment, with hostA pinging hostB: seconds from
    their start (exec) and from the last one's readiness (its "running" log line, sockets open)
    to the first answered ping."""
    pinger = Pinger(t, "a", HOST_IP["b"], 30)
    try:
        started = time.time()
        for site in sites:
            t.start_etun(site, t.workdir / f"{site}.toml")
        ready = max(wait_ready(t, site, 0) for site in sites)
        took = pinger.first_after(ready, timeout=15)
    finally:
        pinger.stop()
    record(f"{case} (from exec)", took + ready - started)
    record(f"{case} (from ready)", took)
    return took + ready - started, took


def test_traffic_resumes_within_2_s_of_the_end_of_a_60_s_wan_blackout(topo):
    t = working_pair(topo)
    table = "inet etun_chaos"
    pinger = None
    try:
        t.run(f"nft add table {table} && nft add chain {table} blackhole "
              "'{ type filter hook forward priority 0; policy drop; }'", "wan")
        time.sleep(60)
        assert t.status("a")["peer"]["up"] is False, "60 s without a packet, yet the peer is up"
        t.run(f"nft delete table {table}", "wan")
        restored = time.time()
        # A ping started now: one that ran through the outage backs off (iputils slows down while
        # nothing answers), and its host's ARP entry failed, which would time the host, not etun.
        pinger = Pinger(t, "a", HOST_IP["b"], 20)
        try:
            took = pinger.first_after(restored, timeout=10)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{evidence(t)}") from None
    finally:
        t.run(f"nft delete table {table} 2>/dev/null || true", "wan")
        if pinger is not None:
            pinger.stop()
    record("wan blackout 60 s", took)
    assert took < 2.0, f"traffic resumed {took:.2f} s after the WAN came back"


def test_a_lan_interface_set_down_stops_etun_with_one_line_and_a_restart_carries_traffic_again(topo):
    # Decided (docs/MANUAL.md): the capture socket reports ENETDOWN; etun exits 1 with one line
    # and its unit restarts it (Restart=on-failure); a restart while the link is down fails the
    # same way, so the tunnel is back one restart after the link is.
    t = topo()
    t.start_pair()
    e = t.etuns["a"]
    t.run("ip link set lan0 down", "ga")
    wait_until(lambda: e.proc.poll() is not None, timeout=5, what="etun to stop when lan0 went down")
    assert e.proc.returncode == 1
    assert e.text().splitlines()[-1] == "etun: LAN interface lan0 failed: Network is down"
    t.etuns.pop("a")
    t.run("ip link set lan0 up", "ga")
    _, took = restart_and_time(t, "lan down/up, restart", "a")
    assert took < 2.0, f"traffic {took:.2f} s after the restarted etun was ready"


def test_a_site_killed_with_sigkill_carries_traffic_within_2_s_of_its_restart(topo):
    t = working_pair(topo)
    e = t.etuns.pop("b")
    e.proc.send_signal(signal.SIGKILL)
    e.proc.wait()
    _, took = restart_and_time(t, "sigkill + restart", "b")
    assert took < 2.0, f"traffic {took:.2f} s after the restarted site was ready"


def test_both_sites_restarted_at_the_same_moment_carry_traffic_within_5_s(topo):
    t = working_pair(topo)
    for site in "ab":
        assert t.stop_etun(site) == 0
    took, _ = restart_and_time(t, "both restarted", "a", "b")
    assert took < 5.0, f"traffic {took:.2f} s after both sites restarted"


def test_a_roaming_storm_delivers_no_frame_twice(topo):
    t = working_pair(topo)
    rx = subprocess.Popen(["ip", "netns", "exec", t.ns("ha"), sys.executable, str(UDPSEQ), "recv",
                           "--seconds=90", "--size=1400"], stdout=subprocess.PIPE, text=True)
    tx = None
    resumed = []
    try:
        assert "ready" in rx.stdout.readline()
        tx = subprocess.Popen(["ip", "netns", "exec", t.ns("hb"), sys.executable, str(UDPSEQ), "send",
                               f"--host={HOST_IP['a']}", "--rate=200", "--seconds=66", "--size=1400"],
                              stdout=subprocess.PIPE, text=True)
        pinger = Pinger(t, "a", HOST_IP["b"], 75)
        try:
            current = GW_IP["b"]
            for k in range(6):
                time.sleep(10)
                moved = f"198.19.2.{10 + k}"
                t.run(f"ip addr del {current}/24 dev wan0 && ip addr add {moved}/24 dev wan0 && "
                      f"ip route replace default via {ROUTER_IP['b']}", "gb")
                current = moved
                resumed.append(pinger.first_after(time.time(), timeout=10))
        finally:
            pinger.stop()
        sent = json.loads(tx.communicate(timeout=30)[0])
        got = json.loads(rx.communicate(timeout=30)[0])
    finally:
        for p in (tx, rx):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    for k, took in enumerate(resumed):
        record(f"roaming move {k + 1}", took)
    print(f"CHAOS roaming storm: sent {sent['sent']}, {json.dumps(got)}", file=sys.stderr)
    assert got["duplicates"] == 0 and got["corrupt"] == 0, got
    assert got["distinct"] > 0.9 * sent["sent"], (sent, got)
    assert t.status("a")["peer"]["roams"] >= 6
