"""Seed the fuzz corpora from real traffic: the e2e topology's WAN and LAN captured, in each target's format."""

# Needs root. For level none and encrypt: ping (full-size DF and small), a TCP transfer with the
# hosts' offloads on (TSO super-frames with a virtio_net_hdr reach the capture), IPv6 TCP,
# 802.1Q / QinQ frames, and verify-peer's probes. The WAN (tcpdump on the WAN router's port)
# gives tunnel datagrams at each level, HELLOs, probes and replies; the LAN (fuzz/lanrec.py, a
# socket like etun's own on gwA's lan0) gives frames, tags and super-frames as etun reads them.
# Synthetic seeds (reassembly schedules, GRO trains) and the configurations the tests write
# join them. Output: fuzz/corpus/<target>/, one file per input, named by its content's hash.

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.topology import HOST_IP, HOST_IP6, Topology  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
LEVEL_CODE = {"none": 0, "auth": 1, "encrypt": 2}
PER_KIND = 12                       # seeds kept per (target, kind of packet): small, but varied


def put(target: str, data: bytes, kept: dict, kind: str = "") -> None:
    key = (target, kind)
    if kept.get(key, 0) >= PER_KIND:
        return
    kept[key] = kept.get(key, 0) + 1
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def chunk(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def traffic(t: Topology) -> None:
    t.ping("a", HOST_IP["b"], size=1472, count=5)
    t.ping("b", HOST_IP["a"], size=56, count=3)
    t.transfer(1 << 20)
    t.ping("a", HOST_IP6["b"], size=1452, count=3)
    mac_b = t.out("cat /sys/class/net/eth0/address", "hb").strip()
    craft = (
        "from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, Raw, sendp\n"
        f"b = '{mac_b}'\n"
        "sendp([Ether(dst=b)/Dot1Q(vlan=100, prio=5)/IP(dst='198.18.0.2')/UDP(dport=9)/Raw(b'q'*1400),\n"
        "       Ether(dst=b)/Dot1AD(vlan=200)/Dot1Q(vlan=300)/IP(dst='198.18.0.2')/UDP(dport=9)/Raw(b'Q'*1200),\n"
        "       Ether(dst=b)/Dot1Q(vlan=0)/IP(dst='198.18.0.2')/UDP(dport=9)/Raw(b'p'*64)],\n"
        "      iface='eth0', verbose=False)\n"
    )
    t.run(f"{sys.executable} -c \"{craft}\"", "ha")
    t.cli("a", "verify-peer", str(t.workdir / "a.toml"))


def capture(level: str, workdir: Path) -> tuple[list[bytes], list[dict], list[Path]]:
    with Topology(name=f"fz{os.getpid() % 10000}{level[0]}", workdir=workdir / level, lan_mtu=1508) as t:
        t.start_pair(level)
        pcap = t.workdir / "wan.pcap"
        wan = subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), "tcpdump", "-i", "a0", "-s", "0", "-U", "-w",
                                str(pcap), "udp port 5555"], stderr=subprocess.DEVNULL)
        lan = subprocess.Popen(["ip", "netns", "exec", t.ns("ga"), sys.executable, str(HERE / "lanrec.py"), "lan0",
                                "60", "3000"], stdout=subprocess.PIPE, text=True)
        try:
            assert "ready" in lan.stdout.readline(), "the LAN recorder did not start"
            time.sleep(0.5)
            traffic(t)
            time.sleep(0.5)
        finally:
            wan.terminate()
            wan.wait()
            lan.terminate()
            lines, _ = lan.communicate(timeout=10)
        from scapy.all import UDP, rdpcap

        datagrams = [bytes(p[UDP].payload) for p in rdpcap(str(pcap)) if UDP in p]
        messages = []
        for line in lines.splitlines():
            try:
                messages.append(json.loads(line)) if "msg" in line else None
            except ValueError:
                pass                       # the last line, cut by the recorder's SIGTERM
        return datagrams, messages, [t.workdir / "a.toml", t.workdir / "b.toml"]


def convert(level: str, datagrams: list[bytes], messages: list[dict], configs: list[Path], kept: dict) -> None:
    code = LEVEL_CODE[level]
    for i, d in enumerate(datagrams):
        ptype = d[0] & 15 if d else 0
        kind = f"{level}-{ptype}-{d[3] if len(d) > 3 else 0}"
        put("open", bytes([code]) + chunk(d) + b"\x01", kept, kind)
        if i + 1 < len(datagrams):
            put("open", bytes([code]) + chunk(d) + b"\x01" + chunk(datagrams[i + 1]) + b"\x01", kept, kind + "-pair")
        if ptype == 4:
            put("hello", bytes([(code + 2) % 3, 0, 1]) + chunk(d), kept, level)
        elif ptype in (5, 6):
            op = 1 if ptype == 5 else 129
            put("probe", bytes([(code + 2) % 3, op]) + chunk(d) + bytes(4), kept, f"{level}-{ptype}")
        elif ptype in (1, 2) and len(d) > 32 and code:
            # The same geometry, sealed again by the harness under its own key.
            payload = d[16:-16]
            fields = bytes([code - 1, 0, 1 if ptype == 1 else 2, d[1], d[2], d[3], d[2], 0])
            put("sealed", bytes([code - 1]) + fields + chunk(payload) + b"\x01", kept, kind)
    for m in messages:
        msg = bytes.fromhex(m["msg"])
        aux = 0 if not m["status"] & 0x10 else (2 if m["tpid"] == 0x88A8 else 3 if m["tpid"] else 1)
        gso = msg[1] if len(msg) > 1 else 0
        put("lan", bytes([aux | (4 if code else 0)]) + (5555).to_bytes(2, "big") + msg, kept,
            f"{level}-{aux}-{gso}-{min(len(msg) // 500, 4)}")
        frame = msg[10:]
        rules = b"".join(bytes([kind, pick]) + bytes(6) for kind, pick in ((0, 0), (2, 0), (4, 2), (5, 200)))
        put("filter", bytes([0x07]) + rules + frame[:1600], kept, f"{aux}-{frame[12:14].hex()}")
    for path in configs:
        put("config", path.read_bytes(), kept, path.name)


def synthetic(kept: dict) -> None:
    """Inputs no capture holds in the targets' own formats."""
    # Reassembly: level, frame count, lengths, then every datagram in order, in reverse, twice.
    for mode in range(12):
        frames = bytes([mode, 2, 3, 0x11, 8, 0x22])
        put("reasm", frames + b"".join(bytes([k, 0, 0]) for k in range(8)), kept, f"order-{mode}")
        put("reasm", frames + b"".join(bytes([k, 0, 0]) for k in reversed(range(8))), kept, f"reverse-{mode}")
        put("reasm", frames + b"".join(bytes([k, 0, 0, k, 0, 0]) for k in range(8)), kept, f"twice-{mode}")
    # GRO: trains of full segments, IPv4/IPv6, no tag, a tag, QinQ, with and without options.
    for shape in (0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0xE0, 0xE1):
        put("gro", bytes([shape, 15, 0x05, 0xA8, 2]) + bytes(10) + bytes(16), kept, f"train-{shape}")
    docs = (HERE.parent / "docs" / "CONFIG.md").read_text()
    for n, block in enumerate(docs.split("```toml")[1:]):
        put("config", block.split("```")[0].encode(), kept, f"docs-{n}")


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("fuzz/capture.py needs root (network namespaces)")
    kept: dict = {}
    workdir = Path(f"/tmp/etun-capture-{os.getpid()}")
    for level in ("none", "auth", "encrypt"):
        datagrams, messages, configs = capture(level, workdir)
        print(f"{level}: {len(datagrams)} WAN datagrams, {len(messages)} LAN messages", file=sys.stderr)
        convert(level, datagrams, messages, configs, kept)
    synthetic(kept)
    for target in sorted({t for t, _ in kept}):
        print(f"corpus/{target}: {len(list((CORPUS / target).iterdir()))} inputs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
