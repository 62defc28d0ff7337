"""Both pumps of an Engine in threads, and an Engine over a socketpair LAN, for the tests.

Both pumps of an Engine, each in its own thread as `etun run` has them, for tests that drive them;
and an Engine over a socketpair LAN (read as a TAP device is) with a UDP sink as its peer."""

import contextlib
import os
import socket
import threading

from etun import _fast
from etun.transport import pack_sockaddr


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


@contextlib.contextmanager
def paired_lan(session: bool = True, queued: list[bytes] = ()):
    """An Engine whose LAN is one end of a datagram socketpair (read as a TAP device is) and
    whose peer is a UDP sink on loopback; `queued` frames wait on the LAN when both pumps
    start. Yields (host end, sink, dp, engine, the engine's UDP address)."""
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
    engine = _fast.Engine(dp, lan.fileno(), _fast.LAN_TAP, udp.fileno(), udp.getsockname()[1],
                          False, False)
    engine.spin_us = 50                    # as etun runs it
    engine.set_peer(pack_sockaddr(socket.AF_INET, *sink.getsockname()))
    for frame in queued:
        host.send(frame)
    pumps = start_pumps(engine)
    try:
        yield host, sink, dp, engine, udp.getsockname()
    finally:
        stop_pumps(engine, pumps)
        for s in (lan, host, sink, udp):
            s.close()
