"""The gro fuzz target's trains (fuzz/fuzz_gro.py) carry checksums scapy agrees with, so GRO merges them."""

import importlib.util
import sys

import pytest
from scapy.all import IP, TCP, Ether, IPv6, raw

from tests import REPO

pytest.importorskip("atheris")                  # fuzz/harness.py imports it
sys.path.insert(0, str(REPO / "fuzz"))
SPEC = importlib.util.spec_from_file_location("fuzz_gro_trains", REPO / "fuzz" / "fuzz_gro.py")
gro = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gro)

from etun import _fast  # noqa: E402


def rechecked(frame: bytes) -> bytes:
    """The frame with scapy's own IPv4 and TCP checksums in place of the harness's."""
    p = Ether(frame)
    if IP in p:
        del p[IP].chksum
    del p[TCP].chksum
    return raw(p)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("tags", [0, 1, 2])
@pytest.mark.parametrize("size", [1, 2, 537, 1448, 1600])
@pytest.mark.parametrize("fill", [0, 0x5A, 0xFF])
def test_a_segment_carries_the_checksums_scapy_computes(v6, tags, size, fill):
    frame = gro.segment(v6, tags, 0xFFFFFFF0, 0xFFFF, 0x18, bytes(4), fill, size)
    p = Ether(frame)
    assert (IPv6 if v6 else IP) in p and bytes(p[TCP].payload) == bytes([fill]) * size
    assert frame == rechecked(frame)


def test_a_byte_changed_after_the_checksums_breaks_them_and_unfixed_ones_are_wrong():
    frame = bytearray(gro.segment(False, 0, 1000, 7, 0x10, b"", 9, 100))
    frame[-1] ^= 1
    assert bytes(frame) != rechecked(bytes(frame))
    unfixed = gro.segment(False, 0, 1000, 7, 0x10, b"", 9, 100, fix=False)
    assert unfixed != rechecked(unfixed)


def test_a_train_of_right_segments_merges_and_the_target_accepts_it():
    frames = [gro.segment(False, 0, 5000 + 1000 * k, 7 + k, 0x10, b"", 0x41, 1000) for k in range(8)]
    messages = _fast.gro_merge(frames)
    assert len(messages) == 1 and messages[0][1] != 0, "eight right segments were not merged"
    # The whole target on an input that makes such a train: IPv4, one VLAN tag, 8 segments of 1,001.
    gro.test_one_input(bytes([0x20, 7]) + (1000).to_bytes(2, "big") + bytes(6) + bytes([0x41]) * 8)
