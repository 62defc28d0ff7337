"""Seed the fuzz corpora from real traffic: the e2e topology's WAN and LAN captured, in each target's format."""

# Needs root. For level none and encrypt: ping (full-size DF and small), a TCP transfer with the
# hosts' offloads on (TSO super-frames with a virtio_net_hdr reach the capture), IPv6 TCP,
# 802.1Q / QinQ frames, and verify-peer's probes. The WAN (tcpdump on the WAN router's port)
# gives tunnel datagrams at each level, handshake and SESSION messages, probes and replies; the LAN (fuzz/lanrec.py, a
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
        pcap = t.workdir / "wan.pcap"
        # From before the sites start, so the handshake is in it; --immediate-mode: without it
        # the last second's packets (verify-peer's) wait in the capture ring when tcpdump stops.
        wan = subprocess.Popen(["ip", "netns", "exec", t.ns("wan"), "tcpdump", "-i", "a0", "-s", "0", "-U",
                                "--immediate-mode", "-w", str(pcap), "udp port 5555"], stderr=subprocess.DEVNULL)
        lan = subprocess.Popen(["ip", "netns", "exec", t.ns("ga"), sys.executable, str(HERE / "lanrec.py"), "lan0",
                                "60", "3000"], stdout=subprocess.PIPE, text=True)
        try:
            assert "ready" in lan.stdout.readline(), "the LAN recorder did not start"
            time.sleep(0.5)
            t.start_pair(level)
            traffic(t)
            time.sleep(2.5)                 # a keepalive more: SESSION messages both ways
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


LEVEL_INDEX = {0: 2, 1: 0, 2: 1}    # a level's place in the handshake and probe targets' LEVELS


def convert(level: str, datagrams: list[bytes], messages: list[dict], configs: list[Path], kept: dict) -> None:
    code = LEVEL_CODE[level]
    for i, d in enumerate(datagrams):
        ptype = d[0] & 15 if d else 0
        kind = f"{level}-{ptype}-{d[3] if len(d) > 3 else 0}"
        # fuzz_open.py: level, a receive session under the id the datagram names, then datagrams.
        sid = d[8] if len(d) > 8 else 0
        put("open", bytes([code, sid]) + chunk(d) + b"\x01", kept, kind)
        if i + 1 < len(datagrams):
            put("open", bytes([code, sid]) + chunk(d) + b"\x01" + chunk(datagrams[i + 1]) + b"\x01", kept,
                kind + "-pair")
        if ptype in (3, 4, 5, 6):
            # fuzz_handshake.py: one step of a stranger's (here: another key file's) raw bytes.
            put("handshake", bytes([LEVEL_INDEX[code], 0, 0]) + chunk(d), kept, f"{level}-{ptype}")
        elif ptype in (7, 8):
            # fuzz_probe.py: one raw datagram (op 9) from the peer's address.
            put("probe", bytes([LEVEL_INDEX[code], 9, 0]) + chunk(d) + bytes(1), kept, f"{level}-{ptype}")
        if ptype in (1, 2, 3) and len(d) > 32 and code:
            # fuzz_sealed.py: the same geometry, session, key index and counter, sealed again by
            # the harness under its own key: mode (level, the session's key, index given), session
            # id, key index; then one packet: op 0, type, frag fields, that session, counter as
            # given, index unchanged, the payload, a clock step.
            payload = d[16:-16]
            packet = bytes([0, ptype - 1, d[1], d[2], d[3], 0, 192]) + d[10:16] + bytes([1]) + chunk(payload) + b"\x01"
            put("sealed", bytes([(code - 1) | 4, d[8]]) + d[4:8] + packet, kept, kind)
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
    # Handshakes between the two sites of fuzz_handshake.py, for each level and tie-break: ticks
    # (a: 120, b: 121) and deliveries (40: the next datagram in flight, fate 0; 230: reflected;
    # 250: bit-flipped), a key holder's INIT (150), RESP (176) and COOKIE (177), b's SESSION
    # messages (200, 201), the wall clock back (240), a rekey's time (251).
    deliver, tick_a, tick_b = bytes([40, 2, 0]), bytes([120, 4]), bytes([121, 4])
    exchange = tick_a + deliver * 3 + tick_b + deliver * 2
    steps = {
        "exchange": exchange + tick_a + tick_b + deliver * 4,
        "crossing": tick_a + tick_b + deliver * 6,
        "lost-and-retried": tick_a + bytes([40, 2, 205]) + bytes([120, 80]) + deliver * 4,
        "reflected": tick_a + bytes([40, 2, 230]) + deliver * 3,
        "flipped": tick_a + bytes([40, 2, 250, 0, 77]) + deliver * 3,
        "forged-init": bytes([150, 1, 0, 7, 3, 130, 0]) + bytes([150, 1, 1, 8, 250, 0, 0, 0, 9, 129, 0]) + deliver,
        "forged-resp": tick_a + bytes([176, 1, 0, 5, 2]) + deliver * 2 + tick_a,
        "cookie": tick_a + bytes([177, 1]) + deliver * 3,
        "session-items": exchange + bytes([200, 1, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 5]) + b"site!"
        + chunk(bytes([1, 3]) + b"abc" + bytes([9, 0])) + bytes([201, 1]) + chunk(bytes([1, 0, 0, 0]) + bytes(12)),
        "clock-back": exchange + bytes([240, 1, 0]) + tick_a + deliver * 2,
        "rekey": exchange + bytes([251, 0]) + tick_a + tick_b + deliver * 4,
    }
    for mode in (0, 1, 2, 4, 5, 6):
        for name, body in steps.items():
            put("handshake", bytes([mode]) + body, kept, f"{name}-{mode}")
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
