"""The UDP side: bind, buffer sizes, DF, GSO/GRO probing; peer names to raw socket addresses."""

import errno
import os
import socket
import struct
from dataclasses import dataclass, field

from etun.errors import RuntimeFailure

IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3           # DF set, and the cached path MTU never refuses our sends
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_PROBE = 3
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
UDP_SEGMENT = 103
UDP_GRO = 104
SOCKET_BUFFER_BYTES = 8 << 20   # a few ms of line rate: rides out scheduling hiccups on busy gateways


@dataclass
class UdpPort:
    sock: socket.socket
    family: int
    port: int
    gso: bool
    gro: bool
    notes: list[str] = field(default_factory=list)

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def close(self):
        self.sock.close()


def size_buffers(sock: socket.socket, nbytes: int) -> None:
    """Receive and send buffers of nbytes: beyond net.core.[rw]mem_max with CAP_NET_ADMIN,
    else as large as the sysctls allow."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, nbytes)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, nbytes)


def _enable(sock: socket.socket, level: int, option: int, value: int) -> bool:
    try:
        sock.setsockopt(level, option, value)
        return True
    except OSError:
        return False


def _probe(sock: socket.socket, option: int, value: int) -> bool:
    return _enable(sock, socket.IPPROTO_UDP, option, value)


def open_transport(listen) -> UdpPort:
    """Bind the tunnel socket at `listen` (an etun.config.Address) with DF set on every packet."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # "[::]" serves IPv4 peers too, through v4-mapped addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        overflows = _enable(sock, socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        size_buffers(sock, SOCKET_BUFFER_BYTES)
        sock.bind((listen.host, listen.port))
    except OSError as e:
        sock.close()
        hint = " (is another etun running?)" if e.errno == errno.EADDRINUSE else ""
        raise RuntimeFailure(f"cannot bind UDP {listen}: {os.strerror(e.errno or 0)}{hint}") from None
    port = UdpPort(sock=sock, family=family, port=sock.getsockname()[1],
                   gso=_probe(sock, UDP_SEGMENT, 0), gro=_probe(sock, UDP_GRO, 1))
    port.notes.append(f"UDP {listen}: GSO {'on' if port.gso else 'unavailable'}, "
                      f"GRO {'on' if port.gro else 'unavailable'}")
    if not overflows:
        # Linux has it since 2.6.33; user-mode emulators (qemu-user) may not pass it through.
        port.notes.append(f"UDP {listen}: SO_RXQ_OVFL unavailable, so socket_overflow cannot count")
    return port


def pack_sockaddr(family: int, host: str, port: int) -> bytes:
    """A raw struct sockaddr_in / sockaddr_in6, as the pumps send to and compare with."""
    if family == socket.AF_INET:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
    if ":" not in host:
        host = "::ffff:" + host      # an IPv4 peer on a dual-stack socket
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0))


def unpack_sockaddr(raw: bytes) -> tuple[str, int]:
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return socket.inet_ntoa(raw[4:8]), port
    host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return (host[7:] if host.startswith("::ffff:") and "." in host else host), port


def sockaddr_tuple(raw: bytes) -> tuple:
    """The address tuple Python's socket calls take for a raw sockaddr, in its own family."""
    port = struct.unpack_from("!H", raw, 2)[0]
    if struct.unpack_from("=H", raw)[0] == socket.AF_INET:
        return socket.inet_ntoa(raw[4:8]), port
    flowinfo, = struct.unpack_from("!I", raw, 4)
    scope, = struct.unpack_from("=I", raw, 24)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope


def format_sockaddr(raw: bytes) -> str:
    host, port = unpack_sockaddr(raw)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_peer(peer, family: int) -> bytes:
    """The peer (an etun.config.Address, maybe a DNS name) as a raw sockaddr for `family`."""
    want = socket.AF_INET if family == socket.AF_INET else socket.AF_UNSPEC
    try:
        infos = socket.getaddrinfo(peer.host, peer.port, want, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise RuntimeFailure(f"cannot resolve peer {peer}: {e.strerror}") from None
    infos.sort(key=lambda info: info[0] != family)     # the socket's own family first
    if not infos:
        raise RuntimeFailure(f"cannot resolve peer {peer}: no usable address")
    address = infos[0][4]
    return pack_sockaddr(family, address[0], address[1])
