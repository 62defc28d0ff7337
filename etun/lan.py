"""Open the LAN sides: an AF_PACKET socket per NIC (promiscuous, offload-aware), or a TAP device."""

import ctypes
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field

from etun import _fast
from etun.errors import RuntimeFailure
from etun.transport import size_buffers

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCETHTOOL = 0x8946
SIOCBRADDIF = 0x89A2
IFF_UP = 0x1
ETHTOOL_GFLAGS = 0x25
ETHTOOL_SFLAGS = 0x26
ETHTOOL_GGRO = 0x2B
ETH_FLAG_LRO = 1 << 15
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40

SOCKET_BUFFER_BYTES = 4 << 20   # absorbs bursts of 64 KiB GSO frames while a pump catches up
QINQ_MIN_MTU = 1508             # 1500 + two VLAN tags (docs/MANUAL.md, "Bad input")
TAP_MTU = 9202                  # 9216-byte jumbo frames minus the Ethernet header

# Classic BPF on the capture socket: drop frames addressed to this host (PACKET_HOST) and
# frames it sends (PACKET_OUTGOING), our own tunnel packets among them, before they are
# copied to us. Everything else is accepted whole.
SKF_AD_PKTTYPE = 0xFFFFF000 + 4
CAPTURE_FILTER = [
    (0x30, 0, 0, SKF_AD_PKTTYPE),   # ldb pkttype
    (0x15, 2, 0, 0),                # jeq PACKET_HOST -> drop
    (0x15, 1, 0, 4),                # jeq PACKET_OUTGOING -> drop
    (0x06, 0, 0, 0xFFFFFFFF),       # accept the whole frame
    (0x06, 0, 0, 0),                # drop
]
# A standby gateway captures nothing: the kernel drops every frame before it is queued.
STANDBY_FILTER = [(0x06, 0, 0, 0)]


@dataclass
class LanPort:
    """An open LAN side: the fd the pumps use and what setup did to the interface."""

    fd: int
    kind: int
    name: str
    mtu: int
    notes: list[str] = field(default_factory=list)
    undo: list = field(default_factory=list)
    keep: object = None            # the socket object owning fd (packet mode)

    def close(self):
        for action in reversed(self.undo):
            try:
                action()
            except OSError:
                pass
        self.undo.clear()
        if self.keep is not None:
            self.keep.close()
        else:
            os.close(self.fd)


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


def _ioctl_sock():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _fail(what: str, e: OSError, capability: str | None = None) -> RuntimeFailure:
    hint = f" (needs {capability})" if capability and e.errno in (errno.EPERM, errno.EACCES) else ""
    return RuntimeFailure(f"{what}: {os.strerror(e.errno or 0)}{hint}")


def interface_mtu(name: str) -> int:
    with _ioctl_sock() as s:
        return struct.unpack_from("i", fcntl.ioctl(s, SIOCGIFMTU, _ifreq(name)), 16)[0]


def _ethtool(name: str, cmd: int, data: int = 0) -> int:
    """One ETHTOOL_G*/S* value request (struct ethtool_value) through SIOCETHTOOL."""
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    with _ioctl_sock() as s:
        fcntl.ioctl(s, SIOCETHTOOL, struct.pack("16sP", name.encode(), ctypes.addressof(value)) + bytes(16))
    return struct.unpack("II", value.raw)[1]


def _handle_receive_offloads(name: str, port: LanPort) -> None:
    """LRO merges frames in ways that cannot be split again: switch it off while we run.
    GRO is fine: its super-frames carry GSO metadata, which the far kernel re-segments."""
    try:
        flags = _ethtool(name, ETHTOOL_GFLAGS)
    except OSError:
        flags = 0
    if flags & ETH_FLAG_LRO:
        try:
            _ethtool(name, ETHTOOL_SFLAGS, flags & ~ETH_FLAG_LRO)
            port.undo.append(lambda: _ethtool(name, ETHTOOL_SFLAGS, flags))
            port.notes.append(f"LRO on {name} switched off while etun runs (LRO frames cannot be forwarded)")
        except OSError as e:
            raise _fail(f"cannot switch off LRO on {name}", e, "CAP_NET_ADMIN") from None
    try:
        gro = _ethtool(name, ETHTOOL_GGRO)
    except OSError:
        return
    if gro:
        port.notes.append(f"GRO on {name} left on: merged frames cross whole with their offload "
                          "metadata and the far side re-segments them")


def _attach_filter(sock: socket.socket, program: list = CAPTURE_FILTER) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HxxxxxxP", len(program), ctypes.addressof(buf)))


def set_capture(port: LanPort, on: bool) -> None:
    """Capture on a packet-mode port, or (a standby) let the kernel drop every frame there; a
    frame queued before is read and dropped by the datapath (counted as standby). A TAP port
    keeps being read, its frames dropped the same way."""
    if port.keep is not None:
        _attach_filter(port.keep, CAPTURE_FILTER if on else STANDBY_FILTER)


def open_packet(name: str, capture: bool = True) -> LanPort:
    """AF_PACKET on `name`: promiscuous, VLAN tags and offload metadata delivered, own frames out.
    `capture` False (a standby): the socket queues nothing until set_capture()."""
    try:
        ifindex = socket.if_nametoindex(name)
    except OSError:
        raise RuntimeFailure(f"LAN interface {name} not found") from None
    try:
        # Protocol 0 receives nothing until bind(), so no frame slips in before the filter.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as e:
        raise _fail(f"cannot open AF_PACKET socket on {name}", e, "CAP_NET_RAW") from None
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass                    # before Linux 4.20: the filter drops outgoing frames anyway
        _attach_filter(sock, CAPTURE_FILTER if capture else STANDBY_FILTER)
        size_buffers(sock, SOCKET_BUFFER_BYTES)
        sock.bind((name, ETH_P_ALL))
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                        struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
    except OSError as e:
        sock.close()
        raise _fail(f"cannot set up AF_PACKET socket on {name}", e, "CAP_NET_RAW") from None
    port = LanPort(fd=sock.fileno(), kind=_fast.LAN_PACKET, name=name, mtu=interface_mtu(name), keep=sock)
    try:
        _handle_receive_offloads(name, port)
    except RuntimeFailure:
        port.close()
        raise
    if port.mtu < QINQ_MIN_MTU:
        port.notes.append(f"MTU of {name} is {port.mtu}: full-size QinQ frames (1522 bytes) need "
                          f"at least {QINQ_MIN_MTU}; run: ip link set {name} mtu {QINQ_MIN_MTU}")
    return port


def _is_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def open_tap(tap: str, bridge: str | None) -> LanPort:
    """A TAP device with offload metadata, up, MTU for jumbo frames, attached to `bridge`."""
    if bridge is not None and not _is_bridge(bridge):
        if not os.path.exists(f"/sys/class/net/{bridge}"):
            raise RuntimeFailure(f"interface {bridge} (for TAP {tap}) not found")
        raise RuntimeFailure(f"interface {bridge} is not a bridge; in tap mode name a bridge "
                             f"for etun to attach {tap} to, or leave interface out")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise _fail("cannot open /dev/net/tun", e, "CAP_NET_ADMIN") from None
    port = LanPort(fd=fd, kind=_fast.LAN_TAP, name=tap, mtu=TAP_MTU)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(tap, struct.pack("H", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)))
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
        offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, offloads | TUN_F_USO4 | TUN_F_USO6)
        except OSError:
            fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)       # before Linux 6.2: no UDP segmentation
        with _ioctl_sock() as s:
            fcntl.ioctl(s, SIOCSIFMTU, _ifreq(tap, struct.pack("i", TAP_MTU)))
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(tap)), 16)[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(tap, struct.pack("H", flags | IFF_UP)))
            if bridge is not None:
                fcntl.ioctl(s, SIOCBRADDIF, _ifreq(bridge, struct.pack("i", socket.if_nametoindex(tap))))
                port.notes.append(f"TAP {tap} attached to bridge {bridge}")
    except OSError as e:
        os.close(fd)
        raise _fail(f"cannot set up TAP device {tap}", e, "CAP_NET_ADMIN") from None
    return port


def open_ports(segments, capture: bool = True) -> tuple[list[LanPort], list[int]]:
    """The LAN sides the segments (config.Segment, in id order) live on, each opened once:
    (ports, each segment's port index). Closes what it opened if one fails. `capture` False:
    packet sockets queue nothing (a standby)."""
    ports: list[LanPort] = []
    index: dict[tuple, int] = {}
    of_segment = []
    try:
        for segment in segments:
            if segment.port not in index:
                index[segment.port] = len(ports)
                if segment.mode == "tap":
                    ports.append(open_tap(segment.tap, segment.interface))
                else:
                    ports.append(open_packet(segment.interface, capture))
            of_segment.append(index[segment.port])
    except BaseException:
        for port in ports:
            port.close()
        raise
    return ports, of_segment
