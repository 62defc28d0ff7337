"""A test host's NIC as a VLAN access port at kernel speed, without the 8021q module.

A test host's NIC as a VLAN access port at kernel speed, without the 8021q module: the tc
programs of vlantag.c (built with clang for BPF) tag what it sends and untag what it receives."""

import platform
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("vlantag.c")
CLANG = "clang-14"


def build(vid: int, workdir: Path) -> Path:
    """vlantag.c compiled for VLAN `vid`, in workdir."""
    if not 1 <= vid <= 4094:
        raise ValueError(f"VLAN {vid}: expected 1..4094")
    out = workdir / f"vlantag-{vid}.o"
    multiarch = f"/usr/include/{platform.machine()}-linux-gnu"      # asm/types.h for linux/bpf.h
    subprocess.run([CLANG, "-O2", "-target", "bpf", f"-DVID={vid}", f"-I{multiarch}", "-c", str(SOURCE),
                    "-o", str(out)], check=True)
    return out


def access_port(t, node: str, dev: str, vid: int) -> None:
    """Make `dev` in `node` an access port of VLAN `vid` (until untagged() or the namespace goes)."""
    obj = build(vid, t.workdir)
    t.run(f"tc qdisc add dev {dev} clsact && "
          f"tc filter add dev {dev} egress bpf direct-action obj {obj} sec tc/egress && "
          f"tc filter add dev {dev} ingress bpf direct-action obj {obj} sec tc/ingress", node)


def untagged(t, node: str, dev: str) -> None:
    """Take the tagging off `dev` again."""
    t.run(f"tc qdisc del dev {dev} clsact", node)
