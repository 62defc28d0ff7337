"""The monitor keeps CAP_NET_ADMIN, and only it, when setup changed a NIC that must be put back at exit.

veth has no LRO, so no topology can make etun switch LRO off; this drives etun.monitor.settle() as
`etun run` does, as root in a namespace of its own, with a LAN port whose undo list holds what an
LRO port's would: an interface change only CAP_NET_ADMIN allows (here an MTU put back). The daemon
side must end as nobody with no capability, the monitor as root's uid with CAP_NET_ADMIN alone, and
at exit the monitor must carry the change out.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from etun.privileges import CAP_NET_ADMIN
from tests import REPO

pytestmark = pytest.mark.usefixtures("e2e_ready")

NOBODY = 65534

# Runs inside the namespace, as root: settle(), then report both processes' status, then close.
DAEMON = textwrap.dedent("""
    import fcntl, json, logging, os, socket, struct, sys
    from etun import config as cfg, keys, monitor
    from etun.lan import LanPort

    def set_mtu(name, mtu):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, 0x8922, struct.pack("16si12x", name.encode(), mtu))    # SIOCSIFMTU

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = sys.argv[1]
    keys.generate_key_file(os.path.join(workdir, "site.key"))
    path = os.path.join(workdir, "site.toml")
    with open(path, "w") as f:
        f.write('[lan]\\ninterface = "lan0"\\n[tunnel]\\npeer = "198.19.2.1:5555"\\n'
                f'[security]\\nkey_file = "{workdir}/site.key"\\n[control]\\nsocket = "{workdir}/s.sock"\\n')
    config = cfg.load_config(path)
    port = LanPort(fd=-1, kind=0, name="lan0", mtu=1500, undo=[lambda: set_mtu("lan0", 1400)])
    m = monitor.settle(config, [port], None)
    assert m.read()[1] is not None                # a reload's read (the key file too): the monitor serves

    def status(pid):
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\\n").split(":\\t", 1) for line in f if ":\\t" in line)

    print(json.dumps({"daemon": status(os.getpid()), "monitor": status(m.pid), "undo_left": len(port.undo)}),
          flush=True)
    try:
        set_mtu("lan0", 1300)                     # the daemon itself may not
        print("daemon changed the MTU", flush=True)
    except PermissionError:
        pass
    m.close()
""")


def test_a_monitor_that_must_undo_a_nic_change_keeps_cap_net_admin_alone_and_undoes_it_at_exit(tmp_path):
    ns = f"etmon{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"], check=True)
        os.chmod(tmp_path, 0o700)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", DAEMON, str(tmp_path)],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout.splitlines()[0])
        daemon, mon = report["daemon"], report["monitor"]
        assert daemon["Uid"].split() == [str(NOBODY)] * 4
        for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(daemon[field], 16) == 0, (field, daemon[field])
        assert mon["Name"] == "etun-monitor" and mon["Uid"].split() == ["0"] * 4
        for field in ("CapPrm", "CapEff", "CapBnd"):
            assert int(mon[field], 16) == 1 << CAP_NET_ADMIN, (field, mon[field])
        assert report["undo_left"] == 0                  # the port's undo list is the monitor's now
        assert "daemon changed the MTU" not in r.stdout
        assert "with CAP_NET_ADMIN to re-read" in r.stderr and "(to switch LRO on lan0 back on at exit)" in r.stderr
        link = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "lan0"], capture_output=True, text=True,
                              check=True)
        assert json.loads(link.stdout)[0]["mtu"] == 1400             # done by the monitor at exit
    finally:
        subprocess.run(["ip", "netns", "del", ns])
