"""VLAN interfaces without the 8021q module, for tests: `vlanhost.py TRUNK NAME=PATH ...`.

Makes a TAP device NAME per tag path (PATH "10", or "100.20": outer 802.1ad 100, inner 802.1Q
20) in this namespace. What the host sends on NAME leaves TRUNK with the path's tags pushed;
what arrives on TRUNK with exactly that path (no deeper tag) goes into NAME without them. Offload
metadata crosses both ways (virtio_net_hdr on the packet socket and the TAP devices), so TCP
super-frames and partial checksums work as on a kernel VLAN device. Prints "ready" once the
devices exist; runs until SIGTERM.
"""

import fcntl
import os
import select
import socket
import struct
import sys

ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, PACKET_VNET_HDR = 0x0003, 263, 8, 15
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
PACKET_OUTGOING = 4
TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ = 0x400454CA, 0x400454D0, 0x400454D8
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_F_NEEDS_CSUM = 1
TAGS = (0x8100, 0x88A8)
AUXDATA = struct.Struct("IIIHHHH")      # struct tpacket_auxdata


def tags_of(path: str) -> bytes:
    vids = [int(v) for v in path.split(".")]
    tpids = [0x88A8, 0x8100] if len(vids) == 2 else [0x8100]
    return b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in zip(tpids, vids, strict=True))


def shift_vnet(vnet: bytes, by: int) -> bytes:
    """The header's offsets (hdr_len, csum_start) moved by `by` bytes of tags pushed or popped."""
    flags, gso, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", vnet)
    if hdr_len:
        hdr_len += by
    if flags & VNET_F_NEEDS_CSUM:
        start += by
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, offset)


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def main() -> int:
    trunk, specs = sys.argv[1], [arg.split("=", 1) for arg in sys.argv[2:]]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.bind((trunk, ETH_P_ALL))
    taps = {open_tap(name): tags_of(path) for name, path in specs}
    by_tags = {tags: fd for fd, tags in taps.items()}
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sock, *taps], [], [])
        for fd in ready:
            if fd is sock:
                data, anc, _, addr = sock.recvmsg(70000, socket.CMSG_SPACE(AUXDATA.size))
                if addr[2] == PACKET_OUTGOING or len(data) < 10 + 14:
                    continue
                vnet, frame = data[:10], data[10:]
                for level, kind, value in anc:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA:
                        status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(value)
                        if status & TP_STATUS_VLAN_VALID:
                            tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                            frame = frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
                            vnet = shift_vnet(vnet, 4)
                n = 0
                while struct.unpack_from("!H", frame, 12 + 4 * n)[0] in TAGS and len(frame) >= 18 + 4 * n:
                    n += 1
                # The tag path without the priority bits: a frame of exactly that path is ours.
                path = b"".join(frame[12 + 4 * k: 14 + 4 * k] + struct.pack(
                    "!H", struct.unpack_from("!H", frame, 14 + 4 * k)[0] & 0xFFF) for k in range(n))
                target = by_tags.get(path)
                if target is not None:
                    os.write(target, shift_vnet(vnet, -4 * n) + frame[:12] + frame[12 + 4 * n:])
            else:
                data = os.read(fd, 70000)
                tags = taps[fd]
                vnet, frame = shift_vnet(data[:10], len(tags)), data[10:]
                sock.send(vnet + frame[:12] + tags + frame[12:])


if __name__ == "__main__":
    sys.exit(main())
