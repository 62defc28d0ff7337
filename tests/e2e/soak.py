"""The soak (make soak, docs/RELIABILITY.md): two sites carry TCP both ways, sequence-numbered UDP and pings for a long time under loss, reordering, blackouts, rekeying and restarts; then an exact accounting window. Prints and returns the summary."""

# Topology (tests/e2e/topology.py), with the impairing relay (tests/e2e/relay.py) as each
# gateway's peer in the WAN namespace:
#
#   hostA --- gwA ---[a0  wan: relay 1% loss, 5% reordering; nftables blackouts  b0]--- gwB --- hostB
#
# Timeline for M minutes: iperf3 TCP both ways at once (--bidir, 20 Mbit/s each way, in 60 s
# runs), checksummed 4 MiB TCP transfers (tcpxfer.py, sha256 both ends) alternating direction,
# sequence-numbered UDP both ways (udpseq.py, 100/s), pings every 0.2 s; rekey (a new key
# index) every 2 s and a new session by handshake every 2 minutes, as the protocol has them;
# a 20 s WAN blackout every 5 minutes (every minute in a short soak); gwA restarted at M/3,
# gwB at 2M/3. RSS and open fds of both etuns every 5 s.
#
# Then the accounting window (30 s, no impairment but the relay's loss and reordering): all
# traffic stops, 3 s to drain, counters read at both sites and at the relay (SIGUSR1) while no
# datagram is on its way (keepalives go on); traffic again; stop, drain, read again. Over that
# window, per direction X -> Y:
#   (1) X.outbound.packets            == relay in_data_X + in_session_X   every data datagram and SESSION
#                                                                     message X sealed reached the relay
#   (1b) X.outbound.control           == relay in_session_X + in_cookie_X   ... the SESSION messages (and
#                                                                     cookie replies) on their own
#   (2) relay in_data_X               == out_data_X + drop_data_X     the relay forwards or counts a drop
#   (3) Y datagrams read (data)       == relay out_data_X             Y read all it was sent (no socket overflow)
#   (4) X.outbound.frames             == whole + partial + lost       the relay saw every frame X sealed
#   (5) Y.inbound.frames              == relay frames_whole_X         frames passed on whole arrive
#   (6) Y frag_timeout + frag_evicted == relay frames_partial_X       frames missing a fragment are counted
# so frames in (X outbound) = frames out (Y inbound) + counted drops (Y's reassembly drops and
# the relay's whole-frame losses). Y's data datagrams read = Y.inbound.packets - control -
# control_queue (every datagram Y reads is counted in packets; control ones once more).

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.topology import ETUN_PORT, GW_IP, HOST_IP, REPO, ROUTER_IP, Topology

RELAY_PORT = 6000
UDPSEQ = REPO / "tests" / "e2e" / "udpseq.py"
TCPXFER = REPO / "tests" / "e2e" / "tcpxfer.py"
NFT = "inet etun_soak"
SNAPSHOT_TRIES = 50             # readings of the counters until one had no datagram reach the relay
SNAPSHOT_SETTLE_S = 0.2         # ... from before the sites' readings until this long after them


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(RSS in KiB, open fds, anonymous RSS in KiB) of a process: RssAnon tells heap growth from
    code and library pages touched for the first time (RssFile)."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    kib = {k: int(fields[k].split()[0]) for k in ("VmRSS", "RssAnon")}
    return kib["VmRSS"], len(os.listdir(f"/proc/{pid}/fd")), kib["RssAnon"]


class Soak:
    def __init__(self, minutes: float, workdir: Path):
        self.minutes = minutes
        self.seconds = minutes * 60
        self.t = Topology(name=f"sk{os.getpid() % 10000}", workdir=workdir, narrate=False)
        self.procs: list[subprocess.Popen] = []
        self.samples: dict[str, list] = {}          # "a1", "a2", ... -> [(t, rss, fds)]
        self.incarnation = {"a": 0, "b": 0}
        self.started_at = {}
        self.events: list[str] = []
        self.transfers = {"ok": 0, "mismatch": 0, "failed": 0, "interrupted": 0}
        self.iperf = {"runs": 0, "failed": 0, "bytes": 0}
        self.stop_traffic = threading.Event()
        self.running: set[subprocess.Popen] = set()   # traffic processes a stop ends at once

    # -- helpers ------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        stamp = f"{time.monotonic() - self.t0:7.1f}s"
        self.events.append(f"{stamp} {text}")
        print(f"[soak {stamp}] {text}", file=sys.stderr, flush=True)

    def popen(self, node: str, *cmd, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.t.ns(node), *map(str, cmd)], **kw)
        self.procs.append(p)
        return p

    def start_site(self, site: str) -> None:
        self.incarnation[site] += 1
        self.t.start_etun(site, self.t.workdir / f"{site}.toml")
        self.started_at[f"{site}{self.incarnation[site]}"] = time.monotonic()

    def restart(self, site: str) -> None:
        self.log(f"restart gw{site.upper()}")
        assert self.t.stop_etun(site) == 0, f"etun at {site} did not stop cleanly"
        self.start_site(site)
        self.t.wait_log(site, "peer up", timeout=30)
        self.log(f"gw{site.upper()} up again")

    def sample(self) -> None:
        for site, e in self.t.etuns.items():
            if e.proc.poll() is None:
                key = f"{site}{self.incarnation[site]}"
                try:
                    rss, fds, anon = proc_figures(e.proc.pid)
                except (OSError, KeyError, ValueError):
                    continue
                self.samples.setdefault(key, []).append((time.monotonic() - self.started_at[key], rss, fds, anon))

    def blackout(self, on: bool) -> None:
        if on == getattr(self, "blacked_out", False):
            return
        self.blacked_out = on
        if on:
            self.log("WAN blackout: nftables drops the tunnel at the relay")
            rules = [f"nft add table {NFT}",
                     f"nft add chain {NFT} input '{{ type filter hook input priority 0; policy accept; }}'"]
            for site in "ab":
                rules.append(f"nft add rule {NFT} input ip saddr {GW_IP[site]} udp dport {RELAY_PORT} "
                             f"@th,68,4 {{ 1, 2 }} counter drop comment \\\"data_{site}\\\"")
                rules.append(f"nft add rule {NFT} input ip saddr {GW_IP[site]} udp dport {RELAY_PORT} "
                             f"counter drop comment \\\"control_{site}\\\"")
            self.t.run(" && ".join(rules), "wan")
        else:
            self.t.run(f"nft delete table {NFT}", "wan", check=False)
            self.log("WAN back")

    # -- traffic ------------------------------------------------------------------------------

    def traffic(self, node: str, *cmd, timeout: float) -> tuple[int | None, str]:
        """Run one traffic command to its end, its timeout, or the stop: (exit code or None, stdout)."""
        p = self.popen(node, *cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.running.add(p)
        try:
            out, _ = p.communicate(timeout=timeout)
            return (None if self.stop_traffic.is_set() and p.returncode != 0 else p.returncode), out
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return None, ""
        finally:
            self.running.discard(p)

    def end_traffic(self) -> None:
        self.stop_traffic.set()
        for p in list(self.running):
            if p.poll() is None:
                p.terminate()

    def tcp_loop(self, until: float) -> None:
        """4 MiB transfers, alternating direction, each checked by sha256 at both ends. A transfer
        cut short (a blackout or a restart outlasting its 120 s, or the end) counts as failed,
        never as passed: only a mismatch of complete transfers is corruption."""
        direction = 0
        while not self.stop_traffic.is_set() and time.monotonic() < until:
            src, dst = ("ha", "hb") if direction == 0 else ("hb", "ha")
            to = HOST_IP["b"] if direction == 0 else HOST_IP["a"]
            rx = self.popen(dst, sys.executable, TCPXFER, "recv", 7001, stdout=subprocess.PIPE, text=True)
            self.running.add(rx)
            try:
                time.sleep(0.3)
                rc, sent = self.traffic(src, sys.executable, TCPXFER, "send", to, 7001, 4 << 20, timeout=120)
                try:
                    got, _ = rx.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    got = ""
                if rc != 0 or not got.strip():
                    self.transfers["failed" if not self.stop_traffic.is_set() else "interrupted"] += 1
                elif sent.strip() == got.strip():
                    self.transfers["ok"] += 1
                else:
                    self.transfers["mismatch"] += 1
                    self.log(f"TRANSFER MISMATCH: sent {sent.strip()} got {got.strip()}")
            finally:
                self.running.discard(rx)
                if rx.poll() is None:
                    rx.kill()
                    rx.wait()
            direction ^= 1

    def iperf_loop(self, until: float) -> None:
        while not self.stop_traffic.is_set() and time.monotonic() < until - 5:
            run = int(min(60, until - time.monotonic() - 2))
            if run < 3:
                break
            rc, out = self.traffic("ha", "iperf3", "-c", HOST_IP["b"], "--bidir", "-b", "20M", "-t", run, "-J",
                                   "--connect-timeout", "3000", timeout=run + 60)
            self.iperf["runs"] += 1
            try:
                end = json.loads(out)["end"]
                self.iperf["bytes"] += end["sum_sent"]["bytes"] + end.get("sum_sent_bidir_reverse", {}).get("bytes", 0)
            except (ValueError, KeyError):
                self.iperf["failed"] += 1

    def start_udp(self, seconds: float) -> list:
        pairs = []
        for src, dst, port in (("ha", "hb", 7101), ("hb", "ha", 7102)):
            rx = self.popen(dst, sys.executable, UDPSEQ, "recv", f"--port={port}", f"--seconds={seconds + 60}",
                            "--size=1200", stdout=subprocess.PIPE, text=True)
            assert "ready" in rx.stdout.readline()
            to = HOST_IP["b"] if dst == "hb" else HOST_IP["a"]
            tx = self.popen(src, sys.executable, UDPSEQ, "send", f"--host={to}", f"--port={port}", "--rate=100",
                            f"--seconds={seconds}", "--size=1200", stdout=subprocess.PIPE, text=True)
            pairs.append((f"{src}->{dst}", tx, rx))
        return pairs

    @staticmethod
    def finish_udp(pairs) -> dict:
        out = {}
        for name, tx, rx in pairs:
            sent = json.loads(tx.communicate(timeout=120)[0])
            got = json.loads(rx.communicate(timeout=120)[0].strip().splitlines()[-1])
            out[name] = {"sent": sent["sent"], **got}
        return out

    # -- accounting ---------------------------------------------------------------------------

    def relay_counts(self) -> dict:
        self.relay.send_signal(signal.SIGUSR1)
        return json.loads(self.relay.stdout.readline())

    def snapshot(self) -> dict:
        """Counters of the relay and both sites at one moment. Traffic has stopped, but keepalives
        go on (a SESSION message every 2 s each way), and one sealed between the relay's reading
        and a site's would fall in the window on one side only: so the relay is read before and
        after the sites, and all is read again until no datagram reached the relay in between."""
        for _ in range(SNAPSHOT_TRIES):
            relay = self.relay_counts()
            sites = {site: self.t.status(site) for site in "ab"}
            time.sleep(SNAPSHOT_SETTLE_S)
            if self.relay_counts()["in"] == relay["in"]:
                return {"relay": relay, **sites}
        raise AssertionError(f"no quiet moment for the accounting's snapshot in {SNAPSHOT_TRIES} tries")

    def accounting(self, before: dict, after: dict) -> dict:
        def relay(key):
            return after["relay"].get(key, 0) - before["relay"].get(key, 0)

        def ctr(site, direction, name, drop=False):
            d = lambda s: s[site]["directions"][direction]     # noqa: E731
            return (d(after)["drops"][name] - d(before)["drops"][name]) if drop else d(after)[name] - d(before)[name]

        out = {}
        for x, y in (("a", "b"), ("b", "a")):
            read = (ctr(y, "inbound", "packets") - ctr(y, "inbound", "control")
                    - ctr(y, "inbound", "control_queue", True))
            rows = {
                # SESSION messages are sealed like data (PROTOCOL.md §2-3) and counted as packets.
                "1 X packets sent == relay data + SESSION in": (
                    ctr(x, "outbound", "packets"), relay(f"in_data_{x}") + relay(f"in_session_{x}")),
                "1b X control sent == relay SESSION + COOKIE in": (
                    ctr(x, "outbound", "control"), relay(f"in_session_{x}") + relay(f"in_cookie_{x}")),
                "2 relay data in == out + drop": (relay(f"in_data_{x}"), relay(f"out_data_{x}") + relay(f"drop_data_{x}")),
                "3 Y data datagrams read == relay data out": (read, relay(f"out_data_{x}")),
                "4 X frames sealed == relay frames seen": (
                    ctr(x, "outbound", "frames"),
                    relay(f"frames_whole_{x}") + relay(f"frames_partial_{x}") + relay(f"frames_lost_{x}")),
                "5 Y frames == relay frames passed whole": (ctr(y, "inbound", "frames"), relay(f"frames_whole_{x}")),
                "6 Y reassembly drops == relay frames partial": (
                    ctr(y, "inbound", "frag_timeout", True) + ctr(y, "inbound", "frag_evicted", True),
                    relay(f"frames_partial_{x}")),
            }
            out[f"{x}->{y}"] = {k: {"left": a, "right": b, "ok": a == b} for k, (a, b) in rows.items()}
            out[f"{x}->{y}"]["other inbound drops at Y"] = {
                k: v for k, v in ((k, ctr(y, "inbound", k, True)) for k in after[y]["directions"]["inbound"]["drops"])
                if v}
        return out

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> dict:
        t = self.t
        self.t0 = time.monotonic()
        t.up()
        try:
            self.relay = self.popen("wan", sys.executable, REPO / "tests" / "e2e" / "relay.py",
                                    f"--a={ROUTER_IP['a']}:{RELAY_PORT}", f"--b={ROUTER_IP['b']}:{RELAY_PORT}",
                                    f"--to-a={GW_IP['a']}:{ETUN_PORT}", f"--to-b={GW_IP['b']}:{ETUN_PORT}",
                                    "--drop=0.01", "--reorder=0.05", "--frames", "--seed=3",
                                    f"--seconds={self.seconds + 600}", stdout=subprocess.PIPE, text=True)
            for site in "ab":
                t.write_config(site, peer=f"{ROUTER_IP[site]}:{RELAY_PORT}", rekey=2)
                self.start_site(site)
            t.wait_log("a", "peer up", timeout=30)
            t.wait_log("b", "peer up", timeout=30)
            for host in ("ha", "hb"):
                self.popen(host, "iperf3", "-s", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            end = time.monotonic() + self.seconds
            self.log(f"traffic for {self.minutes:g} min")
            pinger = self.popen("ha", "ping", "-q", "-i", "0.2", "-w", int(self.seconds), HOST_IP["b"],
                                stdout=subprocess.PIPE, text=True)
            udp = self.start_udp(self.seconds)
            loops = [threading.Thread(target=self.tcp_loop, args=(end,), daemon=True),
                     threading.Thread(target=self.iperf_loop, args=(end,), daemon=True)]
            for th in loops:
                th.start()
            every = 300 if self.minutes >= 10 else 60
            blackouts = [k * every for k in range(1, int(self.seconds // every) + 1) if k * every + 20 < self.seconds]
            restarts = {"a": self.seconds / 3, "b": 2 * self.seconds / 3}
            done = set()
            while time.monotonic() < end:
                now = time.monotonic() - (end - self.seconds)
                self.sample()
                for b in blackouts:
                    if b <= now and ("on", b) not in done:
                        done.add(("on", b))
                        self.blackout(True)
                    if b + 20 <= now and ("off", b) not in done:
                        done.add(("off", b))
                        self.blackout(False)
                for site, at in restarts.items():
                    if at <= now and site not in done and not any(b <= now < b + 25 for b in blackouts):
                        done.add(site)
                        self.restart(site)
                time.sleep(5)
            self.blackout(False)
            self.end_traffic()
            for th in loops:
                th.join(60)
            ping_summary = pinger.communicate(timeout=60)[0].strip().splitlines()[-2:]
            udp_result = self.finish_udp(udp)
            self.sample()
            self.log("accounting window")
            time.sleep(3)
            before = self.snapshot()
            window = 30
            pinger = self.popen("ha", "ping", "-q", "-i", "0.2", "-w", window, HOST_IP["b"], stdout=subprocess.DEVNULL)
            udp2 = self.start_udp(window)
            self.stop_traffic.clear()
            self.tcp_loop(time.monotonic() + window)
            pinger.wait(window + 30)
            udp2_result = self.finish_udp(udp2)
            time.sleep(3)
            after = self.snapshot()
            result = {
                "minutes": self.minutes,
                "transfers": self.transfers,
                "iperf3": self.iperf,
                "udp": udp_result,
                "udp_accounting_window": udp2_result,
                "ping": ping_summary,
                "memory": self.memory(),
                "accounting": self.accounting(before, after),
                "relay_total": after["relay"],
                "restarts": self.incarnation,
                "events": self.events,
            }
            return result
        finally:
            self.end_traffic()
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            t.run(f"nft delete table {NFT}", "wan", check=False)
            t.down()

    def memory(self) -> dict:
        """Per etun process: RSS and fds after warm-up (the first sample WARM_S after its start:
        Python's allocator, the status and logging paths settle) and at its end; growth in KiB;
        the samples themselves (seconds since its start, RSS KiB, fds, RssAnon KiB)."""
        out = {}
        warm_s = 120 if self.minutes >= 10 else 60
        for key, rows in self.samples.items():
            warm = [r for r in rows if r[0] >= warm_s]
            if len(warm) < 2:
                continue
            first, last = warm[0], warm[-1]
            out[key] = {"seconds": round(last[0] - first[0]), "rss_kib_warm": first[1], "rss_kib_end": last[1],
                        "rss_growth_kib": last[1] - first[1], "rss_max_kib": max(r[1] for r in warm),
                        "fds_warm": first[2], "fds_end": last[2], "fds_max": max(r[2] for r in warm),
                        "anon_growth_kib": last[3] - first[3],
                        "samples": [(round(r[0]), r[1], r[2], r[3]) for r in rows]}
        return out


def verdict(result: dict) -> list[str]:
    """What the soak promises, as failures (empty: all kept)."""
    bad = []
    if result["transfers"]["mismatch"]:
        bad.append(f"{result['transfers']['mismatch']} TCP transfers arrived corrupted")
    if result["transfers"]["ok"] == 0:
        bad.append("no TCP transfer completed")
    for window in ("udp", "udp_accounting_window"):
        for name, u in result[window].items():
            if u["duplicates"] or u["corrupt"]:
                bad.append(f"UDP {name} ({window}): {u['duplicates']} duplicated, {u['corrupt']} corrupted")
    for key, m in result["memory"].items():
        if m["seconds"] >= 60 and m["rss_growth_kib"] >= 1024:       # judged over a minute at least
            bad.append(f"etun {key}: RSS grew {m['rss_growth_kib']} KiB in {m['seconds']} s")
        if m["fds_end"] != m["fds_warm"]:
            bad.append(f"etun {key}: fds {m['fds_warm']} -> {m['fds_end']}")
    for direction, rows in result["accounting"].items():
        for name, row in rows.items():
            if isinstance(row, dict) and "ok" in row and not row["ok"]:
                bad.append(f"accounting {direction} {name}: {row['left']} != {row['right']}")
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--out", default=str(REPO / "build" / "soak" / "summary.json"))
    a = p.parse_args()
    # A soak stopped by SIGTERM (or ^C) still stops its processes and removes its namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = Soak(a.minutes, Path(f"/tmp/etun-soak-{os.getpid()}")).run()
    result["failures"] = verdict(result)
    out.write_text(json.dumps(result, indent=1))
    shown = {k: v for k, v in result.items() if k not in ("events", "memory")}
    shown["memory"] = {k: {n: x for n, x in m.items() if n != "samples"} for k, m in result["memory"].items()}
    print(json.dumps(shown, indent=1))
    print(f"soak: {'ok' if not result['failures'] else 'FAILED: ' + '; '.join(result['failures'])} ({out})")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
