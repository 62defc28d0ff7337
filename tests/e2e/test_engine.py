"""The pumps driven directly, where a whole site cannot provoke the case or show who did the work.

    netns X:  [frames in] --> l1 ==veth== l0 [pumps] --UDP GSO--> 127.0.0.1:receiver

Linux 6.11+ checksums GSO trains in software when the device cannot, so no device setting makes
it refuse any more; a socket with SO_NO_CHECK still gets EINVAL for every GSO send, the same
refusal an IPsec route gives with EIO. The pump must switch GSO off and resend.

Elsewhere the LAN is one end of an AF_UNIX datagram pair, read as a TAP device is: each message
a virtio_net_hdr and a frame. The test holds the other end and plays the hosts.
"""

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import threading
import time

import pytest

from etun import _fast
from etun.lan import open_packet
from etun.transport import pack_sockaddr
from tests.e2e.conftest import wait_until

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


def start_pumps(engine, results: dict | None = None) -> list[threading.Thread]:
    """Both pumps, each in its thread, as `etun run` has them; what each returns goes into
    `results` under "tx" and "rx"."""
    results = {} if results is None else results
    pumps = [threading.Thread(target=lambda: results.__setitem__("tx", engine.run_tx())),
             threading.Thread(target=lambda: results.__setitem__("rx", engine.run_rx()))]
    for p in pumps:
        p.start()
    return pumps


def stop_pumps(engine, pumps) -> None:
    engine.stop()
    for p in pumps:
        p.join(5)
    assert not any(p.is_alive() for p in pumps)


def enter(name: str):
    """Move this thread's network namespace (sockets made afterwards live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def in_netns(name: str, scenario) -> None:
    """Run scenario() in a thread moved into the namespace, so this one stays where it is."""
    def entered():
        enter(name)
        scenario()
    t = threading.Thread(target=entered)
    t.start()
    t.join(30)


def test_the_tx_pump_switches_gso_off_when_the_kernel_refuses_it_and_resends(netns):
    result = {}

    def scenario():
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
        pumps = start_pumps(engine)
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
        stop_pumps(engine, pumps)
        result.update(got=got, snapshot=engine.snapshot(), counters=dp.counters()["tx"])
        lan.close()

    in_netns(netns, scenario)
    snap = result["snapshot"]
    assert snap["gso"] is False and snap["gso_errno"] == 22          # EINVAL
    assert result["got"] == 40                                        # 20 frames, two datagrams each
    assert result["counters"]["send_error"] == 0


@contextlib.contextmanager
def paired_lan(session: bool = True, queued: list[bytes] = ()):
    """An Engine whose LAN is one end of a datagram socketpair (read as a TAP device is) and
    whose peer is a UDP sink on loopback; `queued` frames wait on the LAN when both pumps
    start. Yields (host end, sink, dp, engine)."""
    lan, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    lan.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    dp = _fast.Datapath(2)
    if session:
        dp.set_send_session(os.urandom(32))
    engine = _fast.Engine(dp, lan.fileno(), _fast.LAN_KIND_TAP, udp.fileno(), udp.getsockname()[1],
                          False, False)
    engine.spin_us = 50                    # as etun runs it
    engine.set_peer(pack_sockaddr(socket.AF_INET, *sink.getsockname()))
    for frame in queued:
        host.send(frame)
    pumps = start_pumps(engine)
    try:
        yield host, sink, dp, engine
    finally:
        stop_pumps(engine, pumps)
        for s in (lan, host, sink, udp):
            s.close()


def super_frame(payload_len: int, mss: int) -> bytes:
    """A TCP super-frame as a host with TSO hands it over: virtio_net_hdr asking for segments."""
    ip = bytes.fromhex("45000000000140004006000" "0c6120001c6120002")
    ip = ip[:2] + (40 + payload_len).to_bytes(2, "big") + ip[4:]
    tcp = bytes.fromhex("03e807d00000000100000001501000ff00000000")
    vnet = bytes([1, 1]) + (54).to_bytes(2, "little") + mss.to_bytes(2, "little") \
        + (34).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return vnet + bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb0800") + ip + tcp + bytes(payload_len)


PLAIN = bytes(10) + bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb88b5") + bytes(100)   # no offload asked


def rounds(engine) -> tuple[int, int]:
    """(tx rounds the tx pump ran, tx rounds the rx pump ran for it)."""
    p = engine.snapshot()["pumps"]
    return p["tx_wakeups"] - p["tx_served_by_rx"], p["tx_served_by_rx"]


def test_super_frames_sealed_without_a_session_never_fill_the_segment_arena():
    """Each cut segment takes arena room before its seal fails for want of a session; the
    arena must empty anyway, or the next super-frame writes past its end."""
    message = super_frame(20000, 100)      # 200 segments of 100 bytes: ~50 KiB of arena each
    with paired_lan(session=False) as (host, sink, dp, engine):
        for _ in range(60):               # 3 MiB of segments into a 1 MiB arena
            host.send(message)
        wait_until(lambda: dp.counters()["tx"]["no_session"] >= 60, timeout=5, interval=0.01,
                   what="60 super-frames refused")
        assert dp.counters()["tx"]["no_session"] == 60      # one per super-frame
        dp.set_send_session(os.urandom(32))
        host.send(message)
        got = sum(len(sink.recv(2048)) > 0 for _ in range(200))
        assert got == 200


def test_light_traffic_leaves_through_the_rx_pump_and_the_tx_pump_stays_asleep():
    """Frames trickling in are sent by the rx pump's tx rounds: no second thread wakes for
    them (a wakeup is what a lone ping pays for, ~50 us where idle vCPUs halt)."""
    with paired_lan() as (host, sink, dp, engine):
        for _ in range(30):
            host.send(PLAIN)
            assert len(sink.recv(2048)) > 0
            time.sleep(0.01)
        by_tx, by_rx = rounds(engine)
        assert (by_tx, by_rx) == (0, 30)
        assert engine.snapshot()["tx_parked"] is True
        assert dp.counters()["tx"]["frames"] == 30


def test_a_burst_wakes_the_tx_pump_and_it_parks_again_once_traffic_is_light():
    with paired_lan() as (host, sink, dp, engine):
        # Super-frames every 5 ms: each round is a burst, so the tx pump takes the LAN over.
        for _ in range(20):
            host.send(super_frame(14000, 1400))
            time.sleep(0.005)
        wait_until(lambda: dp.counters()["tx"]["frames"] == 20 * 10, timeout=5, interval=0.01,
                   what="200 segments sealed")
        by_tx, by_rx = rounds(engine)
        assert by_tx >= 10, (by_tx, by_rx)
        # Without bursts for PARK_AFTER_US (50 ms), the tx pump parks; light frames are the
        # rx pump's again.
        wait_until(lambda: engine.snapshot()["tx_parked"], timeout=2, interval=0.01,
                   what="the tx pump to park")
        for _ in range(10):
            host.send(PLAIN)
            time.sleep(0.01)
        wait_until(lambda: dp.counters()["tx"]["frames"] == 210, timeout=5, interval=0.01,
                   what="10 more frames sealed")
        assert rounds(engine) == (by_tx, by_rx + 10)


def test_a_batch_of_frames_in_one_round_is_a_burst_too():
    """Eight frames or more in one read: the rx pump hands the LAN to the tx pump."""
    with paired_lan(queued=[PLAIN] * 20) as (host, sink, dp, engine):
        for _ in range(20):
            assert len(sink.recv(2048)) > 0
        assert rounds(engine) == (0, 1)      # all twenty in the rx pump's first round
        host.send(PLAIN)
        assert len(sink.recv(2048)) > 0
        assert rounds(engine) == (1, 1)      # the next one, by the tx pump


def test_a_lan_error_met_by_the_rx_pump_is_returned_by_the_parked_tx_pump(netns):
    """The LAN socket reports an error once, to whichever thread reads it: parked, the tx
    pump must still return it, so that etun stops with the LAN's error."""
    result = {}

    def scenario():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        lan = open_packet("l0")
        dp = _fast.Datapath(2)
        engine = _fast.Engine(dp, lan.fd, lan.kind, udp.fileno(), udp.getsockname()[1], False, False)
        returned = {}
        pumps = start_pumps(engine, returned)
        time.sleep(0.2)
        result["parked"] = engine.snapshot()["tx_parked"]
        subprocess.run(["ip", "link", "del", "l0"], check=True)
        pumps[0].join(5)
        result["tx_alone"] = dict(returned)          # before stop(): the tx pump returned by itself
        stop_pumps(engine, pumps)
        result["returned"] = returned
        lan.close()

    in_netns(netns, scenario)
    assert result["parked"] is True
    assert result["tx_alone"] == {"tx": errno.ENETDOWN}
    assert result["returned"] == {"tx": errno.ENETDOWN, "rx": 0}
