"""Fuzz target: filter decisions (filter_check) on fuzzer rules and frames, against docs/CONFIG.md's order."""

# Input: the default, up to 12 rules (kind, action, a value taken from the frame or from the
# input, so rules do match), then the frame. Oracle: the datapath decides as the documented
# order says -- a matching MAC rule (source or destination) first, then OUI, then EtherType
# (after up to 8 802.1Q / 802.1ad tags; a rule for 0x8100 or 0x88a8 matches a frame carrying
# such a tag); among rules of one kind the first in the configuration; else the default.

import harness
from harness import Reader

from etun import _fast

VLAN_TPIDS = (0x8100, 0x88A8)
VLAN_MAX_TAGS = 8


def walk(frame: bytes) -> tuple[int, set]:
    """The EtherType behind the tags and the tag types seen, as pkt_walk_vlans() reads them."""
    off, tags, seen = 12, 0, set()
    et = int.from_bytes(frame[12:14], "big")
    while et in VLAN_TPIDS and off + 4 + 2 <= len(frame) and tags < VLAN_MAX_TAGS:
        seen.add(et)
        off += 4
        tags += 1
        et = int.from_bytes(frame[off:off + 2], "big")
    return et, seen


def decide(default_allow: bool, rules: list, frame: bytes):
    if len(frame) < _fast.MIN_FRAME_LEN:
        return default_allow, None
    dst, src = frame[0:6], frame[6:12]
    for kind, match in (("mac", lambda v: v in (dst, src)), ("oui", lambda v: v in (dst[:3], src[:3]))):
        for i, (allow, k, value) in enumerate(rules):
            if k == kind and match(value):
                return allow, i
    et, tagged = walk(frame)
    for i, (allow, k, value) in enumerate(rules):
        if k == "ethertype" and ((value == et and et >= 0x0600) or value in tagged):
            return allow, i
    return default_allow, None


_dp = []
# filter_stats() walks each 512-entry block of EtherType counters that is not all zeros; one
# datapath meeting every input soon has counts in all 128 blocks and spends most of each run
# walking them. Each input counts one frame, so a fresh datapath (about 1 ms to build) every
# 16 inputs keeps the walk to at most 16 blocks.
FRESH_EVERY = 16
_inputs = [0]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    head = r.byte()
    default_allow = bool(head & 1)
    nrules = (head >> 1) % 13
    spec = [(r.byte(), r.byte(), r.bytes(6)) for _ in range(nrules)]
    frame = r.bytes(r.left())
    rules = []
    for kind_byte, pick, raw in spec:
        allow = bool(kind_byte & 1)
        kind = ("mac", "oui", "ethertype")[(kind_byte >> 1) % 3]
        if kind == "mac":
            value = frame[pick % 2 * 6:pick % 2 * 6 + 6] if pick < 128 and len(frame) >= 12 else raw
            value = value.ljust(6, b"\0")
        elif kind == "oui":
            value = frame[pick % 2 * 6:pick % 2 * 6 + 3] if pick < 128 and len(frame) >= 12 else raw[:3]
            value = value.ljust(3, b"\0")
        else:
            choices = (*VLAN_TPIDS, walk(frame)[0] if len(frame) >= 14 else 0x0800, int.from_bytes(raw[:2], "big"))
            value = choices[pick % 4]
            if value < 0x0600:
                value = 0x0800
        rules.append((allow, kind, value))
    direction = _fast.FILTER_NIC_INGRESS if head & 0x80 else _fast.FILTER_TUNNEL_INGRESS
    if _inputs[0] % FRESH_EVERY == 0:
        _dp[:] = [_fast.Datapath(_fast.LEVEL_NONE)]
    _inputs[0] += 1
    dp = _dp[0]
    dp.set_filter(direction, default_allow, rules)
    # set_filter() carries the counts of every rule the new table shares with the old one, and
    # the default's if its action stayed (a reload keeps them): one datapath serves every input,
    # so what this frame adds is the difference.
    before = dp.filter_stats(direction)
    got = _fast.filter_check(dp, direction, frame)
    want = decide(default_allow, rules, frame)
    assert got == want, f"datapath {got}, documented order {want}, rules {rules}, frame {frame.hex()}"
    stats = dp.filter_stats(direction)
    added = sum(stats["rules"]) + stats["default"] - sum(before["rules"]) - before["default"]
    # A runt never reaches a filter in the pumps (counted as runt before): it is decided, not counted.
    assert added == (len(frame) >= _fast.MIN_FRAME_LEN), (before, stats)
    if got[1] is not None:
        assert stats["rules"][got[1]] == before["rules"][got[1]] + 1, (before, stats)


if __name__ == "__main__":
    harness.main(test_one_input)
