"""The one-file dist/etun: runs with nothing installed, carries a tunnel, needs two capabilities.

The one-file dist/etun (`make binary`): runs in an empty root with no libc and no Python, carries a
real tunnel from there, works with just CAP_NET_RAW and CAP_NET_ADMIN, and says which one is missing.

    empty root:  /etun  /dev (bind)  /proc  /tmp  /run  and the files the test writes

Topology of the tunnel cases: tests/e2e/topology.py (hostA - gwA - WAN MTU 840 - gwB - hostB).
"""

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import etun
from etun import notify, privileges
from tests import REPO
from tests.e2e.topology import HOST_IP
from tests.systemd import NotifyListener

BINARY = REPO / "dist" / "etun"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def binary():
    if not BINARY.exists():
        pytest.skip("dist/etun is not built (run make binary)")
    return BINARY


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("[root]", " ".join(map(str, cmd)))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def empty_root(binary, tmp_path):
    """A directory holding only the binary, with /dev and /proc mounted; unmounted afterwards."""
    root = tmp_path / "root"
    for d in ("dev", "proc", "tmp", "run"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(binary, root / "etun")
    mounted = []
    try:
        for args in (["--bind", "/dev", str(root / "dev")], ["-t", "proc", "proc", str(root / "proc")]):
            assert run(["mount", *args]).returncode == 0
            mounted.append(args[-1])
        assert not (root / "lib").exists() and not (root / "usr").exists()
        yield root
    finally:
        for path in reversed(mounted):
            run(["umount", "-l", path])


def chrooted(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["chroot", str(root), "/etun", *args])


def test_the_binary_is_small_and_answers_its_version(binary):
    assert binary.stat().st_size <= 40 * 1024 * 1024
    r = run([str(binary), "--version"])                # its start-up time: docs/PERFORMANCE.md
    assert (r.returncode, r.stdout) == (0, f"etun {etun.__version__}\n"), r.stderr


def test_an_empty_root_runs_version_keygen_and_check(empty_root):
    r = chrooted(empty_root, "--version")
    assert (r.returncode, r.stdout) == (0, f"etun {etun.__version__}\n"), r.stderr
    r = chrooted(empty_root, "keygen", "/site.key")
    assert r.returncode == 0 and "fingerprint" in r.stdout, r.stderr
    assert (empty_root / "site.key").stat().st_size == 32768
    (empty_root / "site.toml").write_text(
        '[lan]\ninterface = "eth1"\n[tunnel]\npeer = "203.0.113.7:5555"\n[security]\nkey_file = "/site.key"\n')
    r = chrooted(empty_root, "check", "/site.toml")
    assert r.returncode == 0 and r.stdout.startswith("/site.toml: ok"), r.stderr
    r = chrooted(empty_root, "check", "/missing.toml")
    assert r.returncode == 2 and r.stderr == "etun: /missing.toml: cannot read: No such file or directory\n"


def root_config(t, root: Path, site: str, **kw) -> str:
    """Write site's config into the root with paths as seen from inside it; the in-root path."""
    path = t.write_config(site, **kw)
    text = path.read_text().replace(str(t.workdir / "site.key"), "/site.key")
    text = text.replace(str(t.workdir / f"{site}.sock"), f"/run/{site}.sock")
    (root / f"{site}.toml").write_text(text)
    return f"/{site}.toml"


def test_two_gateways_run_the_binary_from_an_empty_root_and_carry_full_size_frames(empty_root, topo):  # noqa: F811
    t = topo()
    shutil.copy2(t.keygen(), empty_root / "site.key")
    for site in "ab":
        t.start_etun(site, root_config(t, empty_root, site), etun=f"chroot {empty_root} /etun")
    t.wait_log("a", "peer up")
    t.wait_log("b", "peer up")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    assert "level encrypt" in t.etuns["a"].text()


def unprivileged(caps: str) -> str:
    """setpriv: become `nobody` holding only `caps` (e.g. "+net_raw,+net_admin"; "" for none)."""
    keep = f"--inh-caps={caps} --ambient-caps={caps} --bounding-set=-all,{caps} " if caps else \
        "--inh-caps=-all --bounding-set=-all "
    return f"setpriv --reuid={NOBODY.pw_uid} --regid={NOBODY.pw_gid} --clear-groups {keep}"


@pytest.fixture
def nobody_dir():
    """A directory nobody owns, reachable by nobody (pytest's own tmp_path is root-only)."""
    path = Path(f"/tmp/etun-nobody-{os.getpid()}")
    path.mkdir(mode=0o755)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_binary_carries_traffic_as_nobody_with_only_net_raw_and_net_admin(binary, topo, nobody_dir):  # noqa: F811
    t = topo()
    key = nobody_dir / "site.key"
    shutil.copy2(t.keygen(), key)
    os.chown(key, NOBODY.pw_uid, NOBODY.pw_gid)
    for site in "ab":
        text = t.write_config(site, key=key).read_text()
        config = nobody_dir / f"{site}.toml"
        config.write_text(text.replace(f"{t.workdir}/{site}.sock", f"{nobody_dir}/{site}.sock"))
        t.start_etun(site, config, prefix=unprivileged("+net_raw,+net_admin"), etun=str(binary))
    t.wait_log("a", "peer up")
    r = t.ping("a", HOST_IP["b"], size=1472, count=5)
    assert " 0% packet loss" in r.stdout, r.stdout
    assert (nobody_dir / "a.sock").stat().st_uid == NOBODY.pw_uid


@pytest.mark.parametrize("caps,missing", [("", "CAP_NET_RAW and CAP_NET_ADMIN"), ("+net_raw", "CAP_NET_ADMIN")])
def test_without_its_capabilities_the_binary_names_the_missing_one_in_one_line(binary, topo, nobody_dir,  # noqa: F811
                                                                               caps, missing):
    t = topo()
    config = nobody_dir / "a.toml"
    config.write_text(t.write_config("a").read_text())
    r = t.run(f"{unprivileged(caps)}{binary} run {config}", "ga", check=False, capture=True)
    assert r.returncode == 1
    assert r.stdout.startswith(f"etun: missing {missing}: etun needs CAP_NET_RAW and CAP_NET_ADMIN")
    assert r.stdout.count("\n") == 1


def test_the_binary_drops_to_nobody_reloads_and_tells_systemd_from_below_its_boot_loaders(empty_root, topo):  # noqa: F811
    """What packaging/etun@.service relies on: the Python process that sends READY is two processes
    below the one started (staticx, then PyInstaller: hence NotifyAccess=all); after the drop to
    nobody it still reloads, though every module must already be loaded from the 0700 boot-loader
    directories; `etun reload` (the unit's ExecReload) reaches it."""
    t = topo()
    shutil.copy2(t.keygen(), empty_root / "site.key")
    listener = NotifyListener(empty_root / "run" / "notify.sock")
    try:
        config = root_config(t, empty_root, "a", extra='[metrics]\nlisten = "127.0.0.1:9477"\n')
        started = t.start_etun("a", config, etun=f"chroot {empty_root} /etun",
                               prefix="env NOTIFY_SOCKET=/run/notify.sock WATCHDOG_USEC=2000000 ")
        t.start_etun("b")
        listener.wait_for("READY", "1")
        listener.wait_for("WATCHDOG", "1")
        [sender] = {pid for _, pid, _ in listener.messages}
        assert sender != started.proc.pid and started.proc.pid in notify.ancestors(sender)[2:], \
            "the notifications come from below the boot loaders"
        st = privileges.proc_status(sender)
        assert st["Uid"].split() == ["65534"] * 4 and int(st["CapEff"], 16) == 0
        (empty_root / "a.toml").write_text((empty_root / "a.toml").read_text().replace("rekey = 120", "rekey = 90"))
        r = chrooted(empty_root, "reload", "/a.toml")
        assert (r.returncode, r.stdout.strip()) == (0, "reloaded: [security] rekey 120 -> 90"), r.stderr
        listener.wait_for("RELOADING", "1")
        r = t.ping("a", HOST_IP["b"], size=1472, count=3)
        assert " 0% packet loss" in r.stdout, r.stdout
        scrape = ("import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:9477/metrics', headers="
                  "{'Accept': 'application/openmetrics-text; version=1.0.0'}), timeout=5).read().decode())")
        body = t.out(f'{sys.executable} -c "{scrape}"', "ga")     # prometheus_client made it into the binary
        assert "etun_peer_up 1.0" in body and body.rstrip("\n").endswith("# EOF")
        assert t.stop_etun("a") == 0
        listener.wait_for("STOPPING", "1")
    finally:
        listener.close()
    assert not (empty_root / "run" / "a.sock").exists()
