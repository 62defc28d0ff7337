"""Software GRO and GSO, checked against each other and against scapy-built segments.

Software GRO (towards the LAN) and software GSO (from the LAN), checked against each other and
against scapy-built segments: merging then cutting gives back exactly the segments that were sent.
"""

import pytest
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, raw

from etun import _fast

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
MSS = 1448


def segments(count=8, v6=False, mss=MSS, last=None, vlan=False, seq=1000, flags="A", ipid=77, sport=40000):
    """A TCP flow's consecutive segments as a host would send them, checksums finished."""
    out = []
    for k in range(count):
        size = last if (last is not None and k == count - 1) else mss
        l3 = (IPv6(src="2001:db8::1", dst="2001:db8::2") if v6
              else IP(src="198.18.0.1", dst="198.18.0.2", id=(ipid + k) & 0xFFFF, flags="DF"))
        link = Ether(src=A, dst=B) / Dot1Q(vlan=100) if vlan else Ether(src=A, dst=B)
        frame = link / l3 / TCP(
            sport=sport, dport=5201, seq=seq + k * mss, ack=555, flags=flags, window=512,
            options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / Raw(bytes([k]) * size)
        out.append(raw(Ether(raw(frame))))
    return out


def vnet(message: bytes) -> dict:
    h = message[:10]
    return {"flags": h[0], "gso_type": h[1], "hdr_len": int.from_bytes(h[2:4], "little"),
            "gso_size": int.from_bytes(h[4:6], "little"), "csum_start": int.from_bytes(h[6:8], "little"),
            "csum_offset": int.from_bytes(h[8:10], "little")}


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("vlan", [False, True])
def test_consecutive_segments_merge_and_cut_back_into_the_same_segments(v6, vlan):
    sent = segments(12, v6=v6, vlan=vlan, last=300)
    (message,) = _fast.gro_merge(sent)
    h = vnet(message)
    assert h["gso_type"] == (4 if v6 else 1) and h["flags"] == 1 and h["gso_size"] == MSS
    assert h["csum_offset"] == 16 and len(message) - 10 - h["hdr_len"] == 11 * MSS + 300
    assert _fast.gso_split(message) == sent


def test_a_lone_segment_or_other_traffic_passes_unchanged_behind_a_zero_header():
    frames = segments(1) + [raw(Ether(src=A, dst=B) / IP() / UDP() / Raw(b"x" * 100))]
    assert _fast.gro_merge(frames) == [bytes(10) + f for f in frames]


def test_a_segment_with_a_bad_checksum_is_never_merged_and_stays_as_sent():
    sent = segments(6)
    bad = bytearray(sent[3])
    bad[-1] ^= 0xFF                                   # payload corrupted after the checksum
    sent[3] = bytes(bad)
    messages = _fast.gro_merge(sent)
    assert [len(_fast.gso_split(m)) if m[:10] != bytes(10) else 1 for m in messages] == [3, 1, 2]
    assert messages[1] == bytes(10) + sent[3]


@pytest.mark.parametrize("other", [
    dict(seq=99999),            # a gap in the sequence
    dict(sport=1),              # another flow
    dict(flags="AE"),           # ECN echo: never merged
    dict(ipid=500),             # the IP ID does not count up
])
def test_segments_that_do_not_continue_the_flow_start_a_new_message(other):
    sent = segments(4)[:2] + segments(4, **other)[2:]
    messages = _fast.gro_merge(sent)
    assert len(messages) >= 2
    assert len(_fast.gso_split(messages[0])) == 2 and _fast.gso_split(messages[0]) == sent[:2]


def test_push_ends_a_run_and_stays_on_the_segment_that_carried_it():
    sent = segments(6)[:2] + segments(6, flags="AP")[2:3] + segments(6)[3:]
    first, second = _fast.gro_merge(sent)
    assert _fast.gso_split(first) == sent[:3]
    assert _fast.gso_split(second) == sent[3:]


def test_at_most_64_segments_and_64_kib_go_in_one_super_frame():
    sent = segments(64, mss=1448)
    messages = _fast.gro_merge(sent)
    assert all(len(m) - 10 - vnet(m)["hdr_len"] + 20 + 32 <= 65535 for m in messages if m[:10] != bytes(10))
    assert sum(len(_fast.gso_split(m)) if m[:10] != bytes(10) else 1 for m in messages) == 64


def super_frame(ihl=5, doff=5, l4=None, total=None, payload=b"A" * 4000, mss=1000):
    """A TCPv4 super-frame as a host hands it over, with header fields a forger controls."""
    ip = bytearray(raw(IP(src="198.18.0.1", dst="198.18.0.2", proto=6, ihl=ihl,
                          options=[] if ihl == 5 else [b"\x01" * ((ihl - 5) * 4)])))
    tcp = bytearray(20 + max(doff - 5, 0) * 4)
    tcp[12] = doff << 4
    tcp[13] = 0x10
    frame = bytearray(raw(Ether(src=A, dst=B, type=0x0800))) + ip + tcp + payload
    if total:
        frame += bytes(total - len(frame))
    start = 14 + len(ip) if l4 is None else l4
    head = bytes([1, 1]) + (0).to_bytes(2, "little") + mss.to_bytes(2, "little")
    return head + start.to_bytes(2, "little") + (16).to_bytes(2, "little") + bytes(frame)


def test_a_well_formed_super_frame_is_cut():
    assert len(_fast.gso_split(super_frame())) == 4


@pytest.mark.parametrize("forged", [
    dict(doff=2),                     # a TCP data offset under 5: an 8-byte "header"
    dict(ihl=6, l4=14 + 20),          # L4 starts inside the IPv4 options the IHL declares
    dict(mss=65500, payload=b"A" * 65500),   # a segment whose IP total length exceeds 16 bits
    dict(l4=65500, total=65590),      # a TCP header far out, its data offset 60 bytes:
])                                    # headers ending past 64 KiB cannot be described
def test_a_super_frame_whose_headers_do_not_add_up_is_never_cut(forged):
    packet = bytearray(super_frame(**forged))
    if forged.get("l4"):
        packet[10 + forged["l4"] + 12] = 0xF0
    with pytest.raises(ValueError, match="not a super-frame etun cuts"):
        _fast.gso_split(bytes(packet))


def test_a_super_frame_cut_into_more_segments_than_one_flush_holds_is_sealed_whole_across_flushes():
    # 1250 segments of 4 bytes: more datagrams than a flush holds (TX_PKTS), so gso_seal()
    # flushes in the middle of the super-frame (the path the lan fuzz target first reached).
    # With no socket behind this engine every flushed datagram is a counted send_error.
    dp = _fast.Datapath(_fast.LEVEL_NONE, 9000)
    dp.set_send_session()
    kind, last = _fast.LanCapture(dp).capture(super_frame(payload=b"A" * 5000, mss=4))
    tx = dp.counters()["tx"]
    assert kind == "segments_flushed"
    assert tx["frames"] == tx["packets"] == 1250 and tx["superframes"] == 1
    assert tx["send_error"] + len(last) == 1250
    assert all(s[-4:] == b"AAAA" and len(s) == 14 + 20 + 20 + 4 for s in last)
