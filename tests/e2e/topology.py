"""Two sites in network namespaces, joined by etun across a small-MTU WAN; narrated, always torn down.

    hostA                gwA                      wan                      gwB                hostB
   [eth0]---veth---[lan0 etun wan0]---veth---[a0 router b0]---veth---[wan0 etun lan0]---veth---[eth0]
   198.18.0.1          198.19.1.1     MTU 840  .1.254  .2.254  MTU 840   198.19.2.1           198.18.0.2
   2001:db8::1         2001:db8:1::1        2001:db8:1::fe  2001:db8:2::fe  2001:db8:2::1       2001:db8::2
                       (the WAN carries IPv6 only when its MTU is at least 1280, IPv6's minimum)

In tap mode each gateway bridges lan0 with etun's TAP device (br0); the hosts see no difference.
Every command is printed before it runs (narrate=True), as the kernel WireGuard netns.sh does.
"""

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import REPO
from tests.poll import wait_until

HOST_IP = {"a": "198.18.0.1", "b": "198.18.0.2"}
HOST_IP6 = {"a": "2001:db8::1", "b": "2001:db8::2"}
GW_IP = {"a": "198.19.1.1", "b": "198.19.2.1"}
GW_IP6 = {"a": "2001:db8:1::1", "b": "2001:db8:2::1"}
ROUTER_IP = {"a": "198.19.1.254", "b": "198.19.2.254"}
ROUTER_IP6 = {"a": "2001:db8:1::fe", "b": "2001:db8:2::fe"}
ETUN_PORT = 5555


@dataclass
class EtunProcess:
    site: str
    proc: subprocess.Popen
    config: Path
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def segment_tables(*segments: tuple[str, str, str | None]) -> str:
    """[[segment]] tables of (name, interface, vlan), for Topology.write_config(segments=...)."""
    return "".join(f'[[segment]]\nname = "{name}"\ninterface = "{nic}"\n' + (f'vlan = "{vlan}"\n' if vlan else "")
                   + "\n" for name, nic, vlan in segments)


@dataclass
class Topology:
    name: str = field(default_factory=lambda: f"et{os.getpid() % 100000}")
    wan_mtu: int = 840
    lan_mtu: int = 1500
    lan_mode: str = "packet"
    host_offloads: bool = True     # veth defaults (TSO/GSO, checksum offload) on the hosts' links
    narrate: bool = True
    workdir: Path | None = None
    etuns: dict = field(default_factory=dict)
    extra_nodes: list = field(default_factory=list)   # namespaces a test added (add_node)
    children: list = field(default_factory=list)      # helper processes a test started (spawn)

    # -- commands ---------------------------------------------------------------------------

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def run(self, cmd: str, node: str | None = None, check: bool = True, capture: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess:
        full = f"ip netns exec {self.ns(node)} sh -c {shlex.quote(cmd)}" if node else cmd
        if self.narrate:
            print(f"[{node or 'root'}] {cmd}", file=sys.stderr, flush=True)
        return subprocess.run(full, shell=True, check=check, text=True, timeout=timeout,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None)

    def out(self, cmd: str, node: str, timeout: float = 60) -> str:
        return self.run(cmd, node, capture=True, timeout=timeout).stdout

    def mac(self, node: str, dev: str = "eth0") -> str:
        return self.out(f"cat /sys/class/net/{dev}/address", node).strip()

    # -- building ---------------------------------------------------------------------------

    def up(self) -> "Topology":
        if self.workdir is None:
            self.workdir = Path(f"/tmp/{self.name}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in ("ha", "ga", "wan", "gb", "hb"):
            self.run(f"ip netns add {self.ns(node)}")
            self.run("ip link set lo up", node)
        for site in "ab":
            h, g = f"h{site}", f"g{site}"
            self.run(f"ip link add eth0 netns {self.ns(h)} type veth peer name lan0 netns {self.ns(g)}")
            self.run(f"ip link add wan0 netns {self.ns(g)} type veth peer name {site}0 netns {self.ns('wan')}")
            for node, dev in ((h, "eth0"), (g, "lan0")):
                self.run(f"ip link set {dev} mtu {self.lan_mtu} up", node)
            # Each TCP connection starts afresh: no ssthresh inherited from an earlier test.
            self.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.accept_dad=0 "
                     "net.ipv4.tcp_no_metrics_save=1", h)
            self.run(f"ip addr add {HOST_IP[site]}/24 dev eth0", h)
            self.run(f"ip addr add {HOST_IP6[site]}/64 dev eth0 nodad", h)
            if not self.host_offloads:
                self.run("ethtool -K eth0 tso off gso off gro off tx off rx off >/dev/null", h)
            # The WAN behaves like a wire: the kernel segments GSO trains before they leave
            # the gateway, so a capture sees what a real WAN would carry.
            for node, dev in ((g, "wan0"), ("wan", f"{site}0")):
                self.run(f"ip link set {dev} mtu {self.wan_mtu} up", node)
                self.run(f"ethtool -K {dev} tso off gso off tx-udp-segmentation off gro off >/dev/null", node)
            # A gateway's WAN port behaves like a physical NIC, which does GRO on receive.
            self.run("ethtool -K wan0 gro on >/dev/null", g)
            self.run(f"ip addr add {GW_IP[site]}/24 dev wan0", g)
            self.run(f"ip addr add {ROUTER_IP[site]}/24 dev {site}0", "wan")
            self.run(f"ip route add default via {ROUTER_IP[site]}", g)
            if self.wan_mtu >= 1280:      # below 1280 the kernel runs no IPv6 on a link at all
                self.run(f"ip addr add {GW_IP6[site]}/64 dev wan0 nodad", g)
                self.run(f"ip addr add {ROUTER_IP6[site]}/64 dev {site}0 nodad", "wan")
                self.run(f"ip -6 route add default via {ROUTER_IP6[site]}", g)
            if self.lan_mode == "tap":
                self.run("ip link add br0 type bridge", g)
                self.run("sysctl -qw net.bridge.bridge-nf-call-iptables=0 "
                         "net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0", g)
                self.run("ip link set lan0 master br0", g)
                self.run("ip link set br0 up", g)
        self.run("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1", "wan")
        return self

    def down(self) -> None:
        for site in list(self.etuns):
            self.stop_etun(site)
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for node in ("ha", "ga", "wan", "gb", "hb", *self.extra_nodes):
            self.run(f"ip netns del {self.ns(node)}", check=False)

    def add_node(self, node: str) -> None:
        """One more namespace, torn down with the rest."""
        self.run(f"ip netns add {self.ns(node)}")
        self.extra_nodes.append(node)
        self.run("ip link set lo up", node)

    def spawn(self, node: str, argv: list[str], ready: str | None = None) -> subprocess.Popen:
        """A helper process in `node`, stopped at teardown; with `ready`, returns once it printed
        that line."""
        if self.narrate:
            print(f"[{node}] {shlex.join(argv)} &", file=sys.stderr, flush=True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *argv], stdout=subprocess.PIPE,
                                text=True, cwd=REPO)
        self.children.append(proc)
        if ready is not None:
            line = proc.stdout.readline().strip()
            assert line == ready, f"{argv[0]} in {node} said {line!r}, exit {proc.poll()}"
        return proc

    def __enter__(self):
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc):
        self.down()

    # -- etun -------------------------------------------------------------------------------

    def keygen(self, name: str = "site.key") -> Path:
        path = self.workdir / name
        if not path.exists():
            self.run(f"{sys.executable} -m etun.cli keygen {path}")
        return path

    def write_config(self, site: str, level: str = "encrypt", peer: str | None = None,
                     listen: str | None = None, key: Path | None = None, extra: str = "",
                     rekey: int = 120, segments: str | None = None) -> Path:
        """The site's etun configuration; `segments` ([[segment]] tables, segment_tables())
        takes the place of its [lan] table."""
        other = "b" if site == "a" else "a"
        peer = peer or f"{GW_IP[other]}:{ETUN_PORT}"
        listen = listen or f"0.0.0.0:{ETUN_PORT}"
        key = key or self.keygen()
        lan = ('mode = "tap"\ninterface = "br0"\ntap = "etun0"' if self.lan_mode == "tap"
               else 'interface = "lan0"')
        lan = segments if segments is not None else f"[lan]\n{lan}\n\n"
        text = (f'[site]\nname = "site-{site}"\n\n{lan}'
                f'[tunnel]\nlisten = "{listen}"\npeer = "{peer}"\nkeepalive = 2\n\n'
                f'[security]\nlevel = "{level}"\nkey_file = "{key}"\nrekey = {rekey}\n\n'
                f'[control]\nsocket = "{self.workdir}/{site}.sock"\n{extra}')
        path = self.workdir / f"{site}.toml"
        path.write_text(text)
        return path

    def start_etun(self, site: str, config: Path | str | None = None, wait_up: bool = False,
                   prefix: str = "", etun: str | None = None) -> EtunProcess:
        """Start `etun run` at gateway `site`; `etun` replaces the in-tree command (e.g. with
        "chroot /some/root /etun" for the one-file binary), `prefix` goes in front of it."""
        config = config or self.write_config(site)
        log = self.workdir / f"{site}.log"
        etun = etun or f"{sys.executable} -m etun.cli"
        cmd = f"{prefix}{etun} run {config}"
        if self.narrate:
            print(f"[g{site}] {cmd} 2>{log}", file=sys.stderr, flush=True)
        with open(log, "w") as f:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(f"g{site}"), *shlex.split(cmd)],
                                    stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        self.etuns[site] = EtunProcess(site, proc, config, log)
        if wait_up:
            self.wait_log(site, "peer up")
        return self.etuns[site]

    def start_pair(self, level: str = "encrypt", **config) -> None:
        """etun at both gateways with the same settings; returns once both see the peer up."""
        for site in "ab":
            self.start_etun(site, self.write_config(site, level=level, **config))
        self.wait_log("a", "peer up")
        self.wait_log("b", "peer up")

    def cli(self, site: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """An etun command (in-tree) at gateway `site`, its output captured."""
        cmd = " ".join([sys.executable, "-m", "etun.cli", *args])
        return self.run(cmd, f"g{site}", check=False, capture=True, timeout=timeout)

    def status(self, site: str) -> dict:
        """`etun status --json` of the etun at gateway `site`."""
        r = self.cli(site, "status", "--json", str(self.workdir / f"{site}.toml"))
        assert r.returncode == 0, r.stdout
        return json.loads(r.stdout)

    def wait_log(self, site: str, text: str, timeout: float = 10) -> None:
        e = self.etuns[site]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in e.text():
                return
            if e.proc.poll() is not None:
                raise AssertionError(f"etun at {site} exited ({e.proc.returncode}):\n{e.text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from etun at {site} within {timeout} s:\n{e.text()}")

    def stop_etun(self, site: str, timeout: float = 5) -> int:
        e = self.etuns.pop(site)
        if e.proc.poll() is None:
            e.proc.send_signal(signal.SIGTERM)
            try:
                e.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                e.proc.kill()
                e.proc.wait()
        return e.proc.returncode

    # -- traffic ----------------------------------------------------------------------------

    def transfer(self, nbytes: int, timeout: float = 120, port: int = 7000,
                 to: str = HOST_IP["b"]) -> tuple[str, str]:
        """Send nbytes of random data hostA -> hostB over TCP; both ends' (count, sha256) lines."""
        script = REPO / "tests" / "e2e" / "tcpxfer.py"
        rx = subprocess.Popen(["ip", "netns", "exec", self.ns("hb"), sys.executable, str(script), "recv", str(port)],
                              stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            tx = self.out(f"{sys.executable} {script} send {to} {port} {nbytes}", "ha", timeout=timeout)
            got, _ = rx.communicate(timeout=timeout)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        return tx.strip(), got.strip()

    def ping(self, src: str, dst_ip: str, size: int = 56, count: int = 3, df: bool = True,
             timeout: float = 15) -> subprocess.CompletedProcess:
        df_opt = "-M do " if df else ""
        return self.run(f"ping -n -q -c {count} -i 0.2 -W 2 {df_opt}-s {size} {dst_ip}",
                        f"h{src}", check=False, capture=True, timeout=timeout)

    @contextlib.contextmanager
    def capture(self, node: str, iface: str, bpf: str = "", inbound: bool = False, settle: float = 0.3):
        """tcpdump on `iface` in `node` while the block runs: yields a list that holds the scapy
        packets once the block is over. Capturing has begun when the block starts (the file's
        header is written once tcpdump listens), and every packet is written as it comes."""
        from scapy.all import rdpcap
        pcap = self.workdir / f"{node}-{iface}-{time.monotonic_ns()}.pcap"
        cmd = ["ip", "netns", "exec", self.ns(node), "tcpdump", "-i", iface, "-s", "0", "-U", "--immediate-mode",
               *(["-Q", "in"] if inbound else []), "-w", str(pcap), *shlex.split(bpf)]
        if self.narrate:
            print(f"[{node}] {shlex.join(cmd[4:])}", file=sys.stderr)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        packets: list = []
        try:
            wait_until(lambda: proc.poll() is not None or (pcap.exists() and pcap.stat().st_size >= 24),
                       timeout=10, interval=0.05, what=f"tcpdump to listen on {iface} in {node}")
            assert proc.poll() is None, f"tcpdump on {iface} in {node} exited with {proc.returncode}"
            yield packets
            time.sleep(settle)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
        packets.extend(rdpcap(str(pcap)))
