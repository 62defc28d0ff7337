"""A daemon's memory stays flat: buffers resident from the start, free heap pages given back.

The engine makes every buffer its pumps may use resident at once (Engine.make_resident), and the C
heap gives its free pages back (trim_heap)."""

import json
import subprocess
import sys
from pathlib import Path

from etun import _fast
from tests.proc import anon_kib

RESIDENT = """
import json
from etun import _fast
from tests.proc import anon_kib
dp = _fast.Datapath(_fast.LEVEL_NONE)
macs = {"02:%02x:%02x:00:0a:01" % (k >> 8, k & 255) for k in range(3000)}     # on most pages of the table
for mac in macs:
    _fast.bridge_frame(dp, _fast.DIR_TX, bytes.fromhex("ffffffffffff" + mac.replace(":", "")) + b"\\x88\\xb5" + bytes(46), 1000)
engine = _fast.Engine(dp, -1, _fast.LAN_PACKET, -1, 5555, False, False)
before = anon_kib()
touched = engine.make_resident()
mid = anon_kib()
again = engine.make_resident()
print(json.dumps({"touched": touched, "grown_kib": mid - before, "again": again, "again_kib": anon_kib() - mid,
                  "kept": sorted(mac for mac, *_ in dp.bridge_macs(1000)) == sorted(macs)}))
"""


def test_make_resident_brings_in_every_buffer_the_pumps_may_use_once_and_changes_no_byte():
    # A fresh process: in this one, earlier tests' freed memory may be what the engine gets.
    out = subprocess.run([sys.executable, "-c", RESIDENT], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    r = json.loads(out.stdout)
    assert r["touched"] >= 10 * 1024 * 1024             # TX and RX batches, reassembly, MAC table
    assert r["grown_kib"] >= 0.9 * r["touched"] / 1024, r
    assert r["again"] == r["touched"] and r["again_kib"] < 256, r
    # Touching wrote nothing: the 3,000 MACs learnt before are all still there.
    assert r["kept"] is True


def test_trim_heap_gives_freed_heap_pages_back():
    blocks = [bytearray(100_000) for _ in range(300)]       # 30 MB of malloc'd blocks, touched
    keep = blocks[-1]                                       # ... the last one stays, pinning the top
    before = anon_kib()
    del blocks
    _fast.trim_heap()
    assert anon_kib() < before - 20_000, "the freed 30 MB stayed resident"
    assert len(keep) == 100_000
