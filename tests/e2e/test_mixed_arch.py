"""An aarch64 site (dist/etun-aarch64 under qemu-user) talks to an x86_64 site (dist/etun).

An aarch64 site talks to an x86_64 site: dist/etun-aarch64 under qemu-user at gateway A, dist/etun at
gateway B; full-size DF pings cross a WAN of MTU 820 at level encrypt, both directions.

    hostA                    gwA                          WAN MTU 820              gwB                   hostB
   [eth0]---[lan0 br0 etun0: dist/etun-aarch64 wan0]---[a0 router b0]---[wan0 dist/etun etun0 br0 lan0]---[eth0]
   198.18.0.1       chroot root/ /etun, qemu-user                               x86_64, native         198.18.0.2

Tunnel datagrams stay below 800 bytes (at most 819 on the wire), so the 820-byte WAN carries them
whole; the 1500-byte pings need etun's own fragmentation and reassembly on both architectures.
Both gateways run in tap mode: qemu-user 7.2 passes no SOL_PACKET socket options (packet mode) and
no SIOCBRADDIF, so the emulated etun makes its TAP device and the test puts it on the bridge. The
emulated site keeps root ([run] user = "root"): qemu-user runs a thread of its own and changes ids
per thread, so etun refuses the drop to nobody there (tests/packaging/test_aarch64.py). On real
aarch64 hardware both modes and the drop are the same code as on x86_64.
Topology, narration and teardown: tests/e2e/topology.py and the topo fixture in tests/conftest.py.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.topology import HOST_IP, REPO
from tests.packaging.foreign import BINARY_AARCH64, empty_root, qemu_missing

BINARY = REPO / "dist" / "etun"
PINGS = 5                   # each way; ping itself bounds the time (-c, -W, and the topology's timeout)


@pytest.fixture
def aarch64_root(tmp_path):
    reason = qemu_missing() or (None if BINARY.exists() else "dist/etun is not built (run make binary)")
    if reason:
        pytest.skip(reason)
    with empty_root(BINARY_AARCH64, tmp_path / "root") as root:
        yield root


def in_root(t, root: Path, site: str) -> str:
    """Site's config written into the root, with the key and control socket at in-root paths."""
    text = t.write_config(site, level="encrypt").read_text()
    text = text.replace(str(t.workdir / "site.key"), "/site.key")
    text = text.replace(str(t.workdir / f"{site}.sock"), f"/run/{site}.sock")
    # No [lan] interface: etun leaves its TAP device off the bridge (see above), the test attaches it.
    text = text.replace('interface = "br0"\n', "")
    # No drop to nobody under qemu-user (see above).
    text += '\n[run]\nuser = "root"\n'
    (root / f"{site}.toml").write_text(text)
    return f"/{site}.toml"


def test_an_aarch64_site_and_an_x86_64_site_carry_full_size_df_pings_both_ways(topo, aarch64_root):
    t = topo(wan_mtu=820, lan_mode="tap")
    shutil.copy2(t.keygen(), aarch64_root / "site.key")
    t.start_etun("a", in_root(t, aarch64_root, "a"), etun=f"chroot {aarch64_root} /etun")
    t.wait_log("a", "running", timeout=60)
    t.run("ip link set etun0 master br0", "ga")
    t.start_etun("b", t.write_config("b", level="encrypt"), etun=str(BINARY))
    # qemu translates the aarch64 code as it first runs: allow the emulated site time to start.
    t.wait_log("a", "peer up", timeout=60)
    t.wait_log("b", "peer up", timeout=60)
    for src, dst in (("a", "b"), ("b", "a")):
        r = t.ping(src, HOST_IP[dst], size=1472, count=PINGS, timeout=60)
        assert f"{PINGS} packets transmitted, {PINGS} received" in r.stdout, r.stdout
    assert "level encrypt" in t.etuns["a"].text() and "level encrypt" in t.etuns["b"].text()
    # Site A really is the aarch64 build, run by qemu; site B is native.
    assert "qemu-aarch64" in os.readlink(f"/proc/{t.etuns['a'].proc.pid}/exe")
    assert os.readlink(f"/proc/{t.etuns['b'].proc.pid}/exe") == str(BINARY)
