"""The pumps driven directly, where a whole site cannot provoke the case: the kernel refusing UDP GSO.

    netns X:  [frames in] --> l1 ==veth== l0 [tx pump] --UDP GSO--> 127.0.0.1:receiver

Linux 6.11+ checksums GSO trains in software when the device cannot, so no device setting makes
it refuse any more; a socket with SO_NO_CHECK still gets EINVAL for every GSO send, the same
refusal an IPsec route gives with EIO. The pump must switch GSO off and resend.
"""

import ctypes
import os
import socket
import subprocess
import threading
import time

import pytest

from etun import _fast
from etun.lan import open_packet
from etun.transport import pack_sockaddr

pytestmark = pytest.mark.usefixtures("e2e_ready")
SO_NO_CHECK = 11
CLONE_NEWNET = 0x40000000


@pytest.fixture
def netns():
    name = f"etun-engine-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in ("ip link add l0 type veth peer name l1", "ip link set l0 up", "ip link set l1 up",
                    "ip link set lo up"):
            subprocess.run(["ip", "netns", "exec", name, *cmd.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def enter(name: str):
    """Move this thread's network namespace (sockets made afterwards live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def test_the_tx_pump_switches_gso_off_when_the_kernel_refuses_it_and_resends(netns):
    result = {}

    def scenario():
        enter(netns)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        lan = open_packet("l0")
        dp = _fast.Datapath(2)
        dp.set_send_session(os.urandom(32))
        engine = _fast.Engine(dp, lan.fd, lan.kind, udp.fileno(), udp.getsockname()[1], True, False)
        engine.set_peer(pack_sockaddr(socket.AF_INET, *rx.getsockname()))
        pump = threading.Thread(target=engine.run_tx)
        pump.start()
        inject = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        inject.bind(("l1", 0))
        frame = bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb88b5") + os.urandom(1500)
        for _ in range(20):
            inject.send(frame)
        got = 0
        try:
            while got < 40:
                got += len(rx.recv(2048)) > 0
        except socket.timeout:
            pass
        engine.stop()
        pump.join(5)
        result.update(got=got, snapshot=engine.snapshot(), counters=dp.counters()["tx"])
        lan.close()

    t = threading.Thread(target=scenario)
    t.start()
    t.join(30)
    snap = result["snapshot"]
    assert snap["gso"] is False and snap["gso_errno"] == 22          # EINVAL
    assert result["got"] == 40                                        # 20 frames, two datagrams each
    assert result["counters"]["send_error"] == 0


def test_super_frames_sealed_without_a_session_never_fill_the_segment_arena():
    """Each cut segment takes arena room before its seal fails for want of a session; the
    arena must empty anyway, or the next super-frame writes past its end."""
    lan, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    lan.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    dp = _fast.Datapath(2)
    engine = _fast.Engine(dp, lan.fileno(), _fast.LAN_KIND_TAP, udp.fileno(), udp.getsockname()[1],
                          False, False)
    engine.set_peer(pack_sockaddr(socket.AF_INET, *sink.getsockname()))
    pump = threading.Thread(target=engine.run_tx)
    pump.start()
    payload = bytes(20000)                 # 200 segments of 100 bytes: ~50 KiB of arena each
    ip = bytes.fromhex("45000000000140004006000" "0c6120001c6120002")
    ip = ip[:2] + (40 + len(payload)).to_bytes(2, "big") + ip[4:]
    tcp = bytes.fromhex("03e807d00000000100000001501000ff00000000")
    vnet = bytes([1, 1]) + (54).to_bytes(2, "little") + (100).to_bytes(2, "little") \
        + (34).to_bytes(2, "little") + (16).to_bytes(2, "little")
    message = vnet + bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb0800") + ip + tcp + payload
    try:
        for _ in range(60):               # 3 MiB of segments into a 1 MiB arena
            host.send(message)
        deadline = time.monotonic() + 5
        while dp.counters()["tx"]["no_session"] < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dp.counters()["tx"]["no_session"] == 60      # one per super-frame
        dp.set_send_session(os.urandom(32))
        sink.settimeout(2)
        host.send(message)
        got = sum(len(sink.recv(2048)) > 0 for _ in range(200))
        assert got == 200
    finally:
        engine.stop()
        pump.join(5)
    assert not pump.is_alive()
