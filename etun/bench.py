"""`etun bench`: seal and open throughput per frame size and level, in process, one core, GIL released."""

import json
import os
import platform
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


def measure(level: int, frame_len: int, seconds: float) -> dict:
    """One case: seal frames of frame_len bytes, then open a backlog of sealed datagrams."""
    secret = os.urandom(32)
    sealer = _fast.Datapath(level)
    sealer.set_send_session(secret)
    frames_sealed, seal_s = sealer.bench_seal(frame_len, seconds)

    source = _fast.Datapath(level)
    source.set_send_session(secret)
    datagrams = []
    payload = os.urandom(frame_len)
    for _ in range(max(64, BACKLOG_BYTES // frame_len)):
        datagrams += source.seal(payload)
    opener = _fast.Datapath(level)
    opener.set_recv_session(secret)
    frames_opened, open_s = opener.bench_open(datagrams, seconds)
    bound_frames, bound_s = sealer.bench_crypto_bound(frame_len, seconds)

    def rate(frames, elapsed):
        return {"frames_per_s": frames / elapsed, "gbit_per_s": frames * frame_len * 8 / elapsed / 1e9}

    return {
        "level": _fast.LEVEL_NAMES[level],
        "frame_bytes": frame_len,
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
    machine = {
        "cpu": cpu_model(),
        "cores_online": os.cpu_count(),
        "kernel": platform.release(),
        "libcrypto": _fast.openssl_version(),
        "etun": __version__,
        "python": platform.python_version(),
    }
    if as_json:
        json.dump({"machine": machine, "seconds_per_case": seconds, "cases": cases}, sys.stdout, indent=2)
        print()
        return 0
    print(f"etun {__version__} bench: {machine['cpu']}, {machine['libcrypto']}, one core, "
          f"{seconds:g} s per case, max_packet 800")
    print(f"{'level':8} {'frame':>6} {'pkts':>4}  {'seal frames/s':>14} {'Gbit/s':>7}  "
          f"{'open frames/s':>14} {'Gbit/s':>7}  {'libcrypto bound':>15}")
    for c in cases:
        bound = c["libcrypto_bound"]
        print(f"{c['level']:8} {c['frame_bytes']:>6} {c['packets_per_frame']:>4}  "
              f"{c['seal']['frames_per_s']:>14,.0f} {c['seal']['gbit_per_s']:>7.2f}  "
              f"{c['open']['frames_per_s']:>14,.0f} {c['open']['gbit_per_s']:>7.2f}  "
              + (f"{bound['gbit_per_s']:>8.2f} Gbit/s" if bound else f"{'-':>15}"))
    print("libcrypto bound: one ChaCha20 pass per frame and one HMAC per packet, nothing else "
          "(what any etun on this machine must spend)")
    return 0
