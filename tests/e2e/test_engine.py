"""The pumps driven directly on a real NIC: UDP GSO refused, the LAN interface deleted.

The pumps driven directly on a real NIC, where a whole site cannot provoke the case: the kernel
refusing UDP GSO, the LAN interface deleted under a parked pump (root: network namespaces).

    netns X:  [frames in] --> l1 ==veth== l0 [pumps] --UDP GSO--> 127.0.0.1:receiver

Linux 6.11+ checksums GSO trains in software when the device cannot, so no device setting makes
it refuse any more; a socket with SO_NO_CHECK still gets EINVAL for every GSO send, the same
refusal an IPsec route gives with EIO. The pump must switch GSO off and resend.
"""

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
from tests.pumps import start_pumps, stop_pumps

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
