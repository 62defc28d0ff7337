"""A FRAME_VNET's virtio_net_hdr, from the peer, is checked against its frame before our kernel sees it.

docs/PROTOCOL.md §3.3 lists what passes (lan_vnet_ok in etun/lan.pxi); anything else is dropped
and counted as `bad_offload`. The table drives the check itself (_fast.vnet_ok), case by case and
at each boundary; the last two tests send sealed frames to a running rx pump.
"""

import contextlib
import os

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, raw

from etun import _fast
from tests.poll import wait_until
from tests.pumps import paired_lan

NEEDS_CSUM, DATA_VALID = 1, 2
NONE, TCPV4, UDP_UFO, TCPV6, UDP_L4, ECN = 0, 1, 3, 4, 5, 0x80
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

# Frames behind the header: 14 Ethernet + 20 IPv4 (or 40 IPv6) + the L4 header + 4000 bytes.
TCP4 = raw(Ether(src=A, dst=B) / IP(src="198.18.0.1", dst="198.18.0.2") / TCP() / Raw(b"A" * 4000))
TCP6 = raw(Ether(src=A, dst=B) / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP() / Raw(b"A" * 4000))
UDP4 = raw(Ether(src=A, dst=B) / IP(src="198.18.0.1", dst="198.18.0.2") / UDP() / Raw(b"A" * 4000))
N = len(TCP4)                                  # 4054: the frame length the TCP bounds below are about
N_UDP = len(UDP4)                              # 4042: ... and the UDP ones


def header(flags=0, gso=NONE, hdr_len=0, gso_size=0, start=0, offset=0) -> bytes:
    """struct virtio_net_hdr: two bytes, then four little-endian 16-bit fields."""
    return bytes([flags, gso]) + b"".join(v.to_bytes(2, "little") for v in (hdr_len, gso_size, start, offset))


def tcp4(**fields):
    """A TCPv4 super-frame as TSO hands it over, with `fields` of its header changed."""
    h = dict(flags=NEEDS_CSUM, gso=TCPV4, hdr_len=54, gso_size=1448, start=34, offset=16) | fields
    return header(**h) + TCP4


VALID = {
    "no offload at all": header() + TCP4,
    "checksum already valid": header(flags=DATA_VALID) + TCP4,
    "partial TCP checksum only": header(flags=NEEDS_CSUM, start=34, offset=16) + TCP4,
    "partial UDP checksum only": header(flags=NEEDS_CSUM, start=34, offset=6) + UDP4,
    "TCPv4 GSO": tcp4(),
    "TCPv4 GSO with ECN": tcp4(gso=TCPV4 | ECN),
    "TCPv6 GSO": header(NEEDS_CSUM, TCPV6, hdr_len=74, gso_size=1428, start=54, offset=16) + TCP6,
    "TCPv6 GSO with ECN": header(NEEDS_CSUM, TCPV6 | ECN, hdr_len=74, gso_size=1428, start=54, offset=16) + TCP6,
    "UDP fragmentation offload": header(NEEDS_CSUM, UDP_UFO, hdr_len=42, gso_size=1472, start=34, offset=6) + UDP4,
    "UDP L4 GSO": header(NEEDS_CSUM, UDP_L4, hdr_len=42, gso_size=1472, start=34, offset=6) + UDP4,
    # Each bound, just met:
    "checksum start at the end of the Ethernet header": header(NEEDS_CSUM, start=14, offset=6) + UDP4,
    "checksum field ending with the frame": header(NEEDS_CSUM, start=N - 18, offset=16) + TCP4,
    "UDP checksum field ending with the frame": header(NEEDS_CSUM, start=N_UDP - 8, offset=6) + UDP4,
    "headers as long as the frame, no GSO": header(NEEDS_CSUM, hdr_len=N, start=34, offset=16) + TCP4,
    "one segment as long as the payload": tcp4(gso_size=N - 54),
    "one-byte segments": tcp4(gso_size=1),
}

INVALID = {
    "an unknown flag (RSC_INFO)": tcp4(flags=NEEDS_CSUM | 4),
    "the top flag bit": header(flags=0x80) + TCP4,
    "GSO type 2 (unassigned)": tcp4(gso=2),
    "GSO type 6 (unknown)": tcp4(gso=6),
    "GSO type 0x7f": tcp4(gso=0x7F),
    "ECN without GSO": header(gso=ECN) + TCP4,
    "ECN on UDP fragmentation offload": header(NEEDS_CSUM, UDP_UFO | ECN, 42, 1472, 34, 6) + UDP4,
    "ECN on UDP L4 GSO": header(NEEDS_CSUM, UDP_L4 | ECN, 42, 1472, 34, 6) + UDP4,
    "headers one byte longer than the frame": tcp4(hdr_len=N + 1),
    "headers far beyond the frame": tcp4(hdr_len=0xFFFF),
    "checksum start inside the Ethernet header": header(NEEDS_CSUM, start=13, offset=6) + UDP4,
    "checksum start 0": header(NEEDS_CSUM, start=0, offset=16) + TCP4,
    "checksum start at the frame's end": header(NEEDS_CSUM, start=N, offset=16) + TCP4,
    "checksum start far beyond the frame": tcp4(start=0xFFFF),
    "checksum offset 0": tcp4(offset=0),
    "checksum offset 10 (ICMPv6's)": tcp4(offset=10),
    "checksum offset 17": tcp4(offset=17),
    "checksum offset 0xffff": tcp4(offset=0xFFFF),
    "checksum field one byte past the frame": header(NEEDS_CSUM, start=N - 17, offset=16) + TCP4,
    "UDP checksum field one byte past the frame": header(NEEDS_CSUM, start=N_UDP - 7, offset=6) + UDP4,
    "GSO with segments of 0 bytes": tcp4(gso_size=0),
    "UDP GSO with segments of 0 bytes": header(NEEDS_CSUM, UDP_L4, 42, 0, 34, 6) + UDP4,
    "segments one byte longer than the frame": tcp4(gso_size=N + 1),
    "GSO without a partial checksum": tcp4(flags=0),
    "GSO with only DATA_VALID": tcp4(flags=DATA_VALID),
    "TCP GSO with UDP's checksum offset": tcp4(offset=6),
    "UDP L4 GSO with TCP's checksum offset": header(NEEDS_CSUM, UDP_L4, 42, 1472, 34, 16) + UDP4,
    "UDP fragmentation offload with TCP's checksum offset": header(NEEDS_CSUM, UDP_UFO, 42, 1472, 34, 16) + UDP4,
}


@pytest.mark.parametrize("packet", VALID.values(), ids=VALID.keys())
def test_an_offload_header_that_fits_its_frame_may_reach_the_lan(packet):
    assert _fast.vnet_ok(packet) is True


@pytest.mark.parametrize("packet", INVALID.values(), ids=INVALID.keys())
def test_an_offload_header_that_asks_for_more_than_its_frame_holds_is_refused(packet):
    assert _fast.vnet_ok(packet) is False


def test_the_check_needs_a_whole_header_and_ethernet_header():
    with pytest.raises(ValueError, match="shorter than a FRAME_VNET payload"):
        _fast.vnet_ok(header() + bytes(13))
    assert _fast.vnet_ok(header() + bytes(14)) is True


@contextlib.contextmanager
def receiving_pump():
    """An Engine whose peer (the sink) seals with a Datapath of its own: yields (LAN host end,
    the engine's datapath, seal(frame, type) -> datagrams, send(datagram) from the peer)."""
    secret = os.urandom(32)
    with paired_lan() as (host, sink, dp, engine, address):
        dp.set_recv_session(secret)
        peer = _fast.Datapath(_fast.LEVEL_ENCRYPT)
        peer.set_send_session(secret)
        host.settimeout(2)
        yield host, dp, peer.seal, lambda datagram: sink.sendto(datagram, address)


def test_a_frame_vnet_whose_header_does_not_fit_is_counted_bad_offload_and_never_reaches_the_lan():
    bad = [INVALID[k] for k in ("an unknown flag (RSC_INFO)", "GSO type 6 (unknown)", "ECN on UDP L4 GSO",
                                "headers one byte longer than the frame", "checksum offset 17",
                                "checksum field one byte past the frame", "GSO with segments of 0 bytes")]
    good = VALID["UDP fragmentation offload"]
    with receiving_pump() as (host, dp, seal, send):
        for packet in bad:
            for datagram in seal(packet, _fast.TYPE_FRAME_VNET):
                send(datagram)
        wait_until(lambda: dp.counters()["rx"]["bad_offload"] >= len(bad), timeout=5, interval=0.01,
                   what=f"{len(bad)} FRAME_VNETs dropped as bad_offload")
        # The bad ones were authentic and reassembled: only the offload check stopped them.
        assert dp.counters()["rx"]["reassembled"] >= len(bad)
        for datagram in seal(good, _fast.TYPE_FRAME_VNET):
            send(datagram)
        assert host.recv(70_000) == good        # the LAN's first message: the good one, as sent
        host.settimeout(0.3)
        with pytest.raises(TimeoutError):
            host.recv(70_000)
        rx = dp.counters()["rx"]
        assert rx["bad_offload"] == len(bad)
        assert rx["frames"] >= 1 and rx["auth"] == rx["malformed"] == 0


def test_a_plain_frame_is_never_checked_as_an_offload_header():
    """A FRAME carries no header: its first bytes are the MAC addresses, whatever they are."""
    frame = b"\xff" * 12 + b"\x08\x00" + bytes(100)     # read as a header: every flag set, GSO 0xff
    with receiving_pump() as (host, dp, seal, send):
        for datagram in seal(frame, _fast.TYPE_FRAME):
            send(datagram)
        assert host.recv(2048) == bytes(10) + frame
        assert dp.counters()["rx"]["bad_offload"] == 0

