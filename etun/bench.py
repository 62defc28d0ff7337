"""`etun bench`: seal and open throughput per frame size and level, in process, one core, GIL released."""

import json
import os
import platform
import statistics
import sys

from etun import __version__, _fast

FRAME_SIZES = (64, 512, 1514, 9000)
LEVEL_ORDER = ("none", "auth", "encrypt")
BACKLOG_BYTES = 4 << 20   # sealed datagrams replayed by the open benchmark: beyond L2, like real traffic


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


FILTER_RULES = 100   # the filter case: this many rules, none matching, so every lookup is made
TRUNK_SEGMENTS = (1, 4)   # the trunk cases: VLAN segments on one NIC, frames of each in turn


def hundred_rules() -> list:
    """40 MAC, 30 OUI and 30 EtherType rules that the benchmark frame (all zeros) never matches."""
    rules = [(False, "mac", bytes([2, 0, 0, 0, 1, i])) for i in range(40)]
    rules += [(False, "oui", bytes([2, 1, i])) for i in range(30)]
    rules += [(False, "ethertype", 0x9000 + i) for i in range(30)]
    return rules


BRIDGE_MACS = 10_000  # the bridge case: this many MACs learnt, frames between them
BRIDGE_ROUNDS = 9     # ... measured with and without the bridge back to back, this many times


def measure_bridge(seconds: float, frame_len: int = 1514) -> dict:
    """encrypt at frame_len with and without the bridge (BRIDGE_MACS learnt) on the same
    datapaths and datagrams, so only the bridge differs. Each round runs both back to back (in
    turn first), and the cost is the median of the rounds' ratios: a neighbour's load that comes
    and goes hits both halves of a round alike."""
    level = _fast.LEVELS["encrypt"]
    secret = os.urandom(32)
    sealer, opener, source = _fast.Datapath(level), _fast.Datapath(level), _fast.Datapath(level)
    sealer.set_send_session(secret)
    source.set_send_session(secret)
    opener.set_recv_session(secret)
    for dp in (sealer, opener):
        dp.set_bridge()                                  # the daemon's defaults
        _fast.bench_learn(dp, BRIDGE_MACS)
    tail = os.urandom(frame_len - 12)
    datagrams = []
    for i in range(max(64, BACKLOG_BYTES // frame_len)):
        datagrams += source.seal(_fast.bench_frame_macs(i, BRIDGE_MACS) + tail)

    def rate(op: str, macs: int) -> float:
        if op == "seal":
            frames, elapsed = _fast.bench_seal(sealer, frame_len, seconds, bridge_macs=macs)
        else:
            frames, elapsed = _fast.bench_open(opener, datagrams, seconds, bridged=bool(macs))
        return frames / elapsed

    out = {"level": "encrypt", "frame_bytes": frame_len, "macs": BRIDGE_MACS, "rounds": BRIDGE_ROUNDS,
           "table_bytes": _fast.BRIDGE_TABLE_BYTES}
    for op in ("seal", "open"):
        out[op] = paired(lambda macs, op=op: rate(op, macs), 0, BRIDGE_MACS, BRIDGE_ROUNDS)
    return out


def paired(rate, without, with_, rounds: int) -> dict:
    """rate(without) against rate(with_), back to back in `rounds` rounds (in turn first); the cost
    is the median of the rounds' ratios: a neighbour's load that comes and goes hits both halves
    of a round alike."""
    pairs = []
    for r in range(rounds):
        order = (without, with_) if r % 2 == 0 else (with_, without)
        got = {case: rate(case) for case in order}
        pairs.append((got[without], got[with_]))
    ratios = sorted(b / a for a, b in pairs)
    return {"without_frames_per_s": statistics.median(p[0] for p in pairs),
            "with_frames_per_s": statistics.median(p[1] for p in pairs),
            "cost_pct": 100 * (1 - statistics.median(ratios))}


TRUNK_ROUNDS = 7      # the trunk A/B: four segments against one, back to back, this many times


def measure_trunk(seconds: float, frame_len: int = 1518) -> dict:
    """encrypt, tagged frames of four VLAN segments on one trunk in turn against frames of one
    (measure()'s trunk case), in paired rounds as measure_bridge()."""
    level, secret = _fast.LEVELS["encrypt"], os.urandom(32)
    sides = {}
    for n in (1, 4):
        trunk = [(0, (10 + k,), False) for k in range(n)]
        sealer, opener, source = _fast.Datapath(level), _fast.Datapath(level), _fast.Datapath(level)
        for dp in (sealer, opener):
            dp.set_segments(trunk)
        sealer.set_send_session(secret)
        source.set_send_session(secret)
        opener.set_recv_session(secret)
        payload = os.urandom(frame_len - 4)
        datagrams = [d for k in range(max(64, BACKLOG_BYTES // frame_len))
                     for d in source.seal(payload, _fast.TYPE_FRAME, k % n)]
        sides[n] = (sealer, opener, datagrams)

    def rate(op: str, n: int) -> float:
        sealer, opener, datagrams = sides[n]
        if op == "seal":
            frames, elapsed = _fast.bench_seal_trunk(sealer, frame_len, seconds)
        else:
            frames, elapsed = _fast.bench_open(opener, datagrams, seconds, True)
        return frames / elapsed

    out = {"level": "encrypt", "frame_bytes": frame_len, "rounds": TRUNK_ROUNDS}
    for op in ("seal", "open"):
        out[op] = paired(lambda n, op=op: rate(op, n), 1, 4, TRUNK_ROUNDS)
    return out


def measure(level: int, frame_len: int, seconds: float, filtered: bool = False, segments: int = 0) -> dict:
    """One case: seal frames of frame_len bytes, then open a backlog of sealed datagrams.
    `segments`: that many VLAN segments on one trunk (VLAN 10, 11, ...), frames of each in turn,
    frame_len counting their tag; each selected, untagged, filtered and counted on the way in,
    and on the way out filtered, counted and given its segment's tag."""
    secret = os.urandom(32)
    trunk = [(0, (10 + k,), False) for k in range(segments)]

    def datapath(direction):
        dp = _fast.Datapath(level)
        if trunk:
            dp.set_segments(trunk)
        if filtered:
            dp.set_filter(direction, True, hundred_rules())
        return dp

    sealer = datapath(_fast.FILTER_NIC_INGRESS)
    sealer.set_send_session(secret)
    if trunk:
        frames_sealed, seal_s = _fast.bench_seal_trunk(sealer, frame_len, seconds)
    else:
        frames_sealed, seal_s = _fast.bench_seal(sealer, frame_len, seconds, filtered)

    sealed_len = frame_len - (4 if trunk else 0)          # a VLAN tag
    source = _fast.Datapath(level)
    source.set_send_session(secret)
    datagrams = []
    payload = os.urandom(sealed_len)
    for k in range(max(64, BACKLOG_BYTES // frame_len)):
        datagrams += source.seal(payload, _fast.TYPE_FRAME, k % segments if trunk else 0)
    opener = datapath(_fast.FILTER_TUNNEL_INGRESS)
    opener.set_recv_session(secret)
    frames_opened, open_s = _fast.bench_open(opener, datagrams, seconds, filtered or bool(trunk))
    bound_frames, bound_s = _fast.bench_crypto_bound(sealer, frame_len, seconds)

    def rate(frames, elapsed):
        return {"frames_per_s": frames / elapsed, "gbit_per_s": frames * frame_len * 8 / elapsed / 1e9}

    return {
        "level": _fast.LEVEL_NAMES[level],
        "frame_bytes": frame_len,
        "filter_rules": FILTER_RULES if filtered else 0,
        "segments": segments,
        "packets_per_frame": len(source.seal(payload)),
        "seal": rate(frames_sealed, seal_s),
        "open": rate(frames_opened, open_s),
        "libcrypto_bound": rate(bound_frames, bound_s) if level != _fast.LEVELS["none"] else None,
    }


def run_bench(seconds: float, as_json: bool) -> int:
    if not 0.05 <= seconds <= 60:
        from etun.errors import UsageError
        raise UsageError(f"--seconds: expected 0.05..60, got {seconds:g}")
    cases = [measure(_fast.LEVELS[name], size, seconds) for name in LEVEL_ORDER for size in FRAME_SIZES]
    cases.append(measure(_fast.LEVELS["encrypt"], 1514, seconds, filtered=True))
    cases += [measure(_fast.LEVELS["encrypt"], 1518, seconds, segments=n) for n in TRUNK_SEGMENTS]
    bridge = measure_bridge(seconds)
    trunk = measure_trunk(seconds / 2)
    machine = {
        "cpu": cpu_model(),
        "cores_online": os.cpu_count(),
        "kernel": platform.release(),
        "libcrypto": _fast.openssl_version(),
        "etun": __version__,
        "python": platform.python_version(),
    }
    if as_json:
        json.dump({"machine": machine, "seconds_per_case": seconds, "cases": cases, "bridge": bridge,
                   "trunk": trunk}, sys.stdout, indent=2)
        print()
        return 0
    print(f"etun {__version__} bench: {machine['cpu']}, {machine['libcrypto']}, one core, "
          f"{seconds:g} s per case, max_packet 800")
    print(f"{'level':14} {'frame':>6} {'pkts':>4}  {'seal frames/s':>14} {'Gbit/s':>7}  "
          f"{'open frames/s':>14} {'Gbit/s':>7}  {'libcrypto bound':>15}")
    for c in cases:
        bound = c["libcrypto_bound"]
        level = c["level"] + (f"+{c['filter_rules']}r" if c["filter_rules"] else "") \
            + (f"+{c['segments']}vlan" if c["segments"] else "")
        print(f"{level:14} {c['frame_bytes']:>6} {c['packets_per_frame']:>4}  "
              f"{c['seal']['frames_per_s']:>14,.0f} {c['seal']['gbit_per_s']:>7.2f}  "
              f"{c['open']['frames_per_s']:>14,.0f} {c['open']['gbit_per_s']:>7.2f}  "
              + (f"{bound['gbit_per_s']:>8.2f} Gbit/s" if bound else f"{'-':>15}"))
    print("libcrypto bound: one ChaCha20 pass per frame and one HMAC per packet, nothing else "
          "(what any etun on this machine must spend)")
    print(f"encrypt+{FILTER_RULES}r: the same frames through {FILTER_RULES} filter rules in each direction")
    print("encrypt+Nvlan: tagged frames of N VLAN segments on one trunk in turn: selected, untagged, "
          "filtered and counted per segment, re-tagged on the way out")
    print(f"bridge, encrypt {bridge['frame_bytes']}, {bridge['macs']:,} MACs learnt "
          f"(table {bridge['table_bytes'] // 1024} KiB), median of {bridge['rounds']} paired rounds: " + "; ".join(
              f"{op} {bridge[op]['without_frames_per_s']:,.0f} -> {bridge[op]['with_frames_per_s']:,.0f} frames/s "
              f"({bridge[op]['cost_pct']:+.1f}% cost)" for op in ("seal", "open")))
    print(f"segments, encrypt {trunk['frame_bytes']}, four VLANs on one trunk against one, median of "
          f"{trunk['rounds']} paired rounds: " + "; ".join(
              f"{op} {trunk[op]['without_frames_per_s']:,.0f} -> {trunk[op]['with_frames_per_s']:,.0f} frames/s "
              f"({trunk[op]['cost_pct']:+.1f}% cost)" for op in ("seal", "open")))
    return 0
