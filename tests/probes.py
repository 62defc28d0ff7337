"""seal_probe: a verify-peer probe built and sealed by hand (etun/probe.py's wire format), for tests of its receivers."""

import os
import time

from etun import _fast
from etun.probe import KIND_PLAIN, PROBE_HEAD


def seal_probe(dp, kind=KIND_PLAIN, size=200, instance=b"\x22" * 16, time_ms=None, nonce=None) -> bytes:
    """A probe of `size` bytes from prober `instance`, sealed under dp's probe key, stamped now
    (or at time_ms) with a fresh nonce unless one is given."""
    stamp = int(time.time() * 1000) if time_ms is None else time_ms
    body = PROBE_HEAD.pack(kind, dp.level, 0, nonce or os.urandom(16), instance, stamp)
    tag = _fast.TAG_LEN if dp.level else 0
    return _fast.seal_probe(dp, _fast.TYPE_PROBE, body.ljust(size - _fast.HEADER_LEN - tag, b"\0"))
