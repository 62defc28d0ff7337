"""The pumps driven directly, without root: who does the work, and the segment arena's bounds.

Who does the work (the parked tx pump, the rx pump serving its rounds, a burst that wakes it) and
the segment arena's bounds.

The LAN is one end of an AF_UNIX datagram pair, read as a TAP device is: each message a
virtio_net_hdr and a frame. The test holds the other end and plays the hosts; the peer is a UDP
sink on loopback.
"""

import contextlib
import os
import socket
import time

from etun import _fast
from etun.daemon import trace_line
from etun.transport import UDP_GRO, UDP_SEGMENT, pack_sockaddr, unpack_sockaddr
from tests import REPO
from tests.poll import wait_until
from tests.pumps import paired_lan, start_pumps, stop_pumps


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


def rounds_become(engine, want: tuple[int, int]) -> None:
    """The rx pump counts a round it served once the round is over, a moment after its datagrams
    left: wait for the counts to settle on `want` (briefly: they are exact once settled)."""
    wait_until(lambda: rounds(engine) == want, timeout=2, interval=0.005,
               what=f"tx rounds (by tx, by rx) == {want}, now {rounds(engine)}")


def test_super_frames_sealed_without_a_session_never_fill_the_segment_arena():
    """Each cut segment takes arena room before its seal fails for want of a session; the
    arena must empty anyway, or the next super-frame writes past its end."""
    message = super_frame(20000, 100)      # 200 segments of 100 bytes: ~50 KiB of arena each
    with paired_lan(session=False) as (host, sink, dp, engine, _):
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
    with paired_lan() as (host, sink, dp, engine, _):
        for _ in range(30):
            host.send(PLAIN)
            assert len(sink.recv(2048)) > 0
            time.sleep(0.01)
        rounds_become(engine, (0, 30))
        assert engine.snapshot()["tx_parked"] is True
        assert dp.counters()["tx"]["frames"] == 30


def test_a_burst_wakes_the_tx_pump_and_it_parks_again_once_traffic_is_light():
    with paired_lan() as (host, sink, dp, engine, _):
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
        rounds_become(engine, (by_tx, by_rx + 10))


def test_a_batch_of_frames_in_one_round_is_a_burst_too():
    """Eight frames or more in one read: the rx pump hands the LAN to the tx pump."""
    outcomes = []
    for _ in range(3):
        with paired_lan(queued=[PLAIN] * 20) as (host, sink, dp, engine, _):
            for _ in range(20):
                assert len(sink.recv(2048)) > 0
            # Mostly all twenty in the rx pump's first round; on a busy machine the scheduler
            # may start the tx pump first, which proves nothing: try again.
            try:
                rounds_become(engine, (0, 1))
            except AssertionError:
                outcomes.append(rounds(engine))
                continue
            # The batch woke the tx pump; once it runs (at once, unless the machine is busy) it
            # holds the LAN and serves the next frame itself.
            wait_until(lambda: not engine.snapshot()["tx_parked"], timeout=2, interval=0.005,
                       what="the tx pump to take the LAN back")
            host.send(PLAIN)
            assert len(sink.recv(2048)) > 0
            rounds_become(engine, (1, 1))    # the next one, by the tx pump
            return
    raise AssertionError(f"the rx pump never served the batch in one round: {outcomes}")


def test_the_drop_trace_names_the_source_of_each_reason_at_most_once_a_second():
    """With the trace on, the first drop of a reason is sampled with the address that caused
    it; the rest of that second is only counted, and told with the next sample."""
    with paired_lan() as (host, sink, dp, engine, address):
        dp.trace = True
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        for _ in range(50):
            stranger.sendto(b"\x80" * 40, address)                 # version 2, type 0: malformed
        wait_until(lambda: dp.counters()["rx"]["malformed"] == 50, timeout=5, interval=0.01,
                   what="50 malformed datagrams counted")
        (sample,) = dp.pop_trace()
        direction, reason, kind, raw, more = sample
        assert (direction, reason, kind, more) == ("inbound", "malformed", _fast.TRACE_SOCKADDR, 0)
        assert unpack_sockaddr(raw) == stranger.getsockname()
        assert dp.pop_trace() == []
        time.sleep(1.05)
        stranger.sendto(b"\x80" * 40, address)
        wait_until(lambda: dp.counters()["rx"]["malformed"] == 51, timeout=5, interval=0.01,
                   what="one more malformed datagram")
        assert [s[:3] + s[4:] for s in dp.pop_trace()] == [("inbound", "malformed", _fast.TRACE_SOCKADDR, 49)]
        stranger.close()


def test_a_frame_the_lan_sends_that_is_dropped_is_traced_with_its_source_mac():
    with paired_lan(session=False) as (host, sink, dp, engine, _):
        dp.trace = True
        host.send(PLAIN)                                            # no session yet: no_session
        wait_until(lambda: dp.counters()["tx"]["no_session"] == 1, timeout=5, interval=0.01,
                   what="the frame refused")
        assert dp.pop_trace() == [("outbound", "no_session", _fast.TRACE_MAC, bytes.fromhex("02bbbbbbbbbb"), 0)]


def test_each_sample_is_logged_as_the_line_the_manual_shows():
    manual = (REPO / "docs" / "MANUAL.md").read_text()
    samples = [("inbound", "malformed", _fast.TRACE_SOCKADDR, pack_sockaddr(socket.AF_INET, "198.51.100.9", 4444), 49),
               ("outbound", "filter", _fast.TRACE_MAC, bytes.fromhex("021b210a0b0c"), 0),
               ("inbound", "frag_timeout", _fast.TRACE_NONE, b"", 0)]
    for sample in samples:
        assert f"etun[berlin]: {trace_line(*sample)}\n" in manual, trace_line(*sample)
    assert trace_line(*samples[0]) == "drop trace: inbound malformed from 198.51.100.9:4444 (and 49 more since the last line)"


def test_with_the_trace_off_drops_are_only_counted():
    with paired_lan() as (host, sink, dp, engine, address):
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.sendto(b"\x80" * 40, address)
        wait_until(lambda: dp.counters()["rx"]["malformed"] == 1, timeout=5, interval=0.01,
                   what="the datagram counted")
        assert dp.pop_trace() == []
        stranger.close()


def test_one_read_completing_more_large_frames_than_reassembly_has_slots_loses_none():
    """With UDP GRO one read holds trains of up to 64 datagrams each: 40 frames over 2 KiB
    complete in one rx round, more than the 32 reassembly slots of their class at the default
    budget. The round must hand the frames to the LAN as their class fills, not drop the rest."""
    secret = os.urandom(32)
    tx = _fast.Datapath(_fast.LEVEL_ENCRYPT)
    rx = _fast.Datapath(_fast.LEVEL_ENCRYPT)
    tx.set_send_session(secret)
    rx.set_recv_session(secret)
    # A frame length whose three fragments are of one size, as a GSO train's segments must be.
    length = next(n for n in range(2100, 2110) if len({len(d) for d in tx.seal(bytes(n))}) == 1)
    frames = [bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb88b5") + i.to_bytes(2, "big") + bytes(length - 16)
              for i in range(40)]
    datagrams = [d for f in frames for d in tx.seal(f)]
    assert len(datagrams) == 120 and len({len(d) for d in datagrams}) == 1
    lan, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    lan.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_UDP, UDP_SEGMENT, len(datagrams[0]))
    for i in range(0, len(datagrams), 60):             # two trains, waiting before the pumps run
        peer.sendto(b"".join(datagrams[i:i + 60]), udp.getsockname())
    engine = _fast.Engine(rx, lan.fileno(), _fast.LAN_TAP, udp.fileno(), udp.getsockname()[1], False, True)
    engine.set_peer(pack_sockaddr(socket.AF_INET, *peer.getsockname()))
    pumps = start_pumps(engine)
    try:
        host.settimeout(2)
        got = []
        with contextlib.suppress(TimeoutError):
            while len(got) < 40:
                got.append(host.recv(4096)[10:])       # each after its virtio_net_hdr
        assert (len(got), rx.counters()["rx"]["frag_evicted"]) == (40, 0)
        assert got == frames
        assert engine.snapshot()["pumps"]["rx_wakeups"] == 1         # all of it in one read
    finally:
        stop_pumps(engine, pumps)
        for s in (lan, host, udp, peer):
            s.close()
