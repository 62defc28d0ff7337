"""The Debian packages: their contents, lintian, and installing, running and purging them.

The packages (`make deb`): etun_<version>_amd64.deb and _arm64.deb hold what they should, pass lintian
without errors, install, run and purge cleanly; and on a booted Debian 12 the README's steps, `dpkg -i`
then `systemctl enable --now etun@site`, start etun under its hardened unit.

    Debian 12 root: an overlay of a cached Debian 12 root of the package's architecture (amd64:
                   the one tests/packaging/systemd-root.sh made; arm64: the one `make
                   binary-aarch64` builds in), dpkg --root DIR (maintainer scripts run outside it,
                   with DPKG_ROOT=DIR), the program run inside it (chroot; qemu-user for arm64)
    booted root:   systemd-nspawn -b over an overlay of the amd64 one
    The cached roots themselves never change.
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import etun
from tests import REPO
from tests.packaging.foreign import mounted, qemu_missing, run

VERSION = etun.__version__
DEBS = {arch: REPO / "dist" / f"etun_{VERSION}_{arch}.deb" for arch in ("amd64", "arm64")}
PROGRAMS = {"amd64": REPO / "dist" / "etun-dir", "arm64": REPO / "dist" / "etun-aarch64-dir"}
SYSTEMD_ROOT = Path(os.environ.get("ETUN_SYSTEMD_ROOT", "/var/cache/etun/amd64-systemd-root"))
DEBIAN_ROOTS = {"amd64": SYSTEMD_ROOT,
                "arm64": Path(os.environ.get("ETUN_AARCH64_ROOT", "/var/cache/etun/aarch64-root"))}
DEBIAN_12_GLIBC = (2, 36)
FILES = {  # path -> mode
    "usr/lib/etun/etun": 0o755,
    "usr/lib/etun/_internal/libcrypto.so.3": 0o644,
    "usr/lib/etun/_internal/libpython3.11.so.1.0": 0o644,
    "lib/systemd/system/etun@.service": 0o644,
    "usr/share/man/man8/etun.8.gz": 0o644,
    "usr/share/man/man5/etun.toml.5.gz": 0o644,
    "usr/share/doc/etun/copyright": 0o644,
    "usr/share/doc/etun/changelog.gz": 0o644,
    "usr/share/doc/etun/STATUS.md": 0o644,
    "usr/share/lintian/overrides/etun": 0o644,
    "usr/share/etun/keepalived/keepalived.conf": 0o644,     # packaging/keepalived/, the HA recipe
}
# Left on purpose (README, "With the package", lintian): deb-systemd-invoke takes unit names, not
# the etun@*.service pattern that reaches every site's instance, and has no try-restart.
KNOWN_WARNINGS = {"maintainer-script-calls-systemctl"}
# packaging/etun@.service's CapabilityBoundingSet: CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_NET_ADMIN, CAP_NET_RAW
UNIT_CAPS = (6, 7, 8, 12, 13)
NOBODY_ID = 65534
BOOT_S = 90                 # a booted container reaches "running" within this
STOP_S = 30                 # ... and powers off within this


def deb(arch: str) -> Path:
    if not DEBS[arch].exists():
        pytest.skip(f"{DEBS[arch].name} is not built (run make deb)")
    return DEBS[arch]


def tree(top: Path) -> dict:
    """Every regular file under `top`: relative path -> sha256."""
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in top.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_package_holds_its_program_the_unit_the_pages_and_the_docs(arch, tmp_path):
    package = deb(arch)
    fields = {k: run(["dpkg-deb", "-f", str(package), k]).stdout.strip()
              for k in ("Package", "Version", "Architecture", "Section", "Depends")}
    depends = re.fullmatch(r"libc6 \(>= (\d+)\.(\d+)\), zlib1g \(>= [^)]+\)", fields["Depends"])
    assert fields == {"Package": "etun", "Version": VERSION, "Architecture": arch, "Section": "net",
                      "Depends": fields["Depends"]}
    # The C library and zlib are all it needs, and Debian 12's C library is new enough.
    assert depends and (int(depends[1]), int(depends[2])) <= DEBIAN_12_GLIBC, fields["Depends"]
    listing, links = {}, {}
    for line in run(["dpkg-deb", "-c", str(package)]).stdout.splitlines():
        perms, owner, *_, path = line.split()
        if perms.startswith("l"):
            *_, path, arrow, target = line.split()
            assert arrow == "->", line
            links[path.removeprefix("./")] = target
        listing[path.removeprefix("./")] = (perms, owner)
    for path, mode in FILES.items():
        assert path in listing, f"{path} missing from {package.name}"
        perms, owner = listing[path]
        assert owner == "root/root" and perms == "-" + "".join(
            "rwx"[i % 3] if mode & (1 << (8 - i)) else "-" for i in range(9)), (path, perms, owner)
    assert links == {"usr/sbin/etun": "../lib/etun/etun"}, links
    # Only the program runs: its libraries are read, never executed (lintian: shared-library-is-executable).
    executables = sorted(p for p, (perms, _) in listing.items() if perms[0] == "-" and "x" in perms)
    assert executables == ["usr/lib/etun/etun"], executables
    out = tmp_path / "x"
    assert run(["dpkg-deb", "-x", str(package), str(out)]).returncode == 0
    assert tree(out / "usr/lib/etun") == tree(PROGRAMS[arch]), f"/usr/lib/etun is not {PROGRAMS[arch]}"
    unit = (out / "lib/systemd/system/etun@.service").read_text()
    assert "ExecStart=/usr/sbin/etun run /etc/etun/%i.toml" in unit and "/usr/local" not in unit
    assert "Documentation=man:etun(8) man:etun.toml(5)" in unit


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_package_depends_on_the_package_of_every_system_library_it_loads(arch, tmp_path):
    """The boot loader starts on the system's libraries alone (it has no RUNPATH and points the
    loader at _internal/ only for its second start); the rest take from the system what
    _internal/ lacks. Each such library's owner in a Debian 12 root must be named in Depends."""
    package = deb(arch)
    admindir = DEBIAN_ROOTS[arch] / "var/lib/dpkg"
    if not (DEBIAN_ROOTS[arch] / ".etun-root").exists():
        pytest.skip(f"{DEBIAN_ROOTS[arch]} is not made (make test makes it)")
    assert run(["dpkg-deb", "-x", str(package), str(tmp_path)]).returncode == 0
    top = tmp_path / "usr/lib/etun"
    bundled = {p.name for p in (top / "_internal").iterdir()}
    wanted = set()
    for p in top.rglob("*"):
        if p.is_file() and p.read_bytes()[:4] == b"\x7fELF":
            needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run(["readelf", "-d", str(p)]).stdout)
            wanted |= {n for n in needed if p == top / "etun" or n not in bundled}
    assert "libz.so.1" in wanted            # the boot loader's own, before _internal/ is on the path
    named = {d.split()[0] for d in run(["dpkg-deb", "-f", str(package), "Depends"]).stdout.split(",")}
    for soname in sorted(wanted):
        r = run(["dpkg-query", f"--admindir={admindir}", "-S", f"*/{soname}"])
        owners = {line.split(":")[0] for line in r.stdout.splitlines()}
        assert r.returncode == 0 and owners & named, f"{soname}: owned by {owners or 'nobody'}, Depends names {named}"


def test_lintian_finds_no_errors_and_only_the_known_warnings():
    packages = [deb("amd64"), deb("arm64")]
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (make test installs it)")
    r = run(["lintian", *map(str, packages)], timeout=300)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert not [t for t in tags if t.startswith("E: ")], r.stdout
    assert {t.split()[2] for t in tags} <= KNOWN_WARNINGS, r.stdout


def dpkg_root(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["dpkg", f"--root={root}", "--force-script-chrootless", "--log=/dev/null", *args])


@contextlib.contextmanager
def overlay(lower: Path, tmp: Path):
    """`lower` seen through an overlay at tmp/root: changes land in tmp/upper, `lower` never changes."""
    for d in ("upper", "work", "root"):
        (tmp / d).mkdir()
    options = f"lowerdir={lower},upperdir={tmp / 'upper'},workdir={tmp / 'work'}"
    r = run(["mount", "-t", "overlay", "overlay", "-o", options, str(tmp / "root")])
    assert r.returncode == 0, r.stderr
    try:
        yield tmp / "root"
    finally:
        run(["umount", str(tmp / "root")])
        assert f" {tmp / 'root'} " not in Path("/proc/self/mounts").read_text(), "the overlay is still mounted"


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_a_debian_12_root_installs_runs_and_purges_each_package(arch, tmp_path):
    package = deb(arch)
    if arch == "arm64" and qemu_missing():
        pytest.skip(qemu_missing())
    if not (DEBIAN_ROOTS[arch] / ".etun-root").exists():
        pytest.skip(f"{DEBIAN_ROOTS[arch]} is not made (make test makes it)")
    with overlay(DEBIAN_ROOTS[arch], tmp_path) as root:
        debian_root_installs_runs_and_purges(arch, package, root, tmp_path)
    # Whatever the package added to the root, file or directory, is gone (a file of the root it
    # removed would show as a whiteout, a character device).
    upper, lower = tmp_path / "upper", DEBIAN_ROOTS[arch]
    left = [str(p.relative_to(upper)) for p in upper.rglob("*")
            if not str(p.relative_to(upper)).startswith(("var/lib/dpkg", "tmp/", "dev", "proc"))
            and not (p.is_dir() and (lower / p.relative_to(upper)).is_dir())]
    assert left == [], f"left after purge: {left}"


def debian_root_installs_runs_and_purges(arch: str, package: Path, root: Path, tmp_path: Path) -> None:
    if arch != "amd64":             # this machine's dpkg installs: arm64 is a foreign architecture to it
        assert dpkg_root(root, "--add-architecture", arch).returncode == 0
    r = dpkg_root(root, "-i", str(package))
    assert r.returncode == 0, r.stdout + r.stderr
    for path in FILES:
        assert (root / path).is_file(), path
    assert dpkg_root(root, "--verify", "etun").stdout == ""                  # every file as packaged
    with mounted(root):
        r = run(["chroot", str(root), "/usr/sbin/etun", "--version"])
    assert (r.returncode, r.stdout) == (0, f"etun {VERSION}\n"), r.stderr
    for page in ("usr/share/man/man8/etun.8.gz", "usr/share/man/man5/etun.toml.5.gz"):
        r = run(["man", "--warnings", "-l", str(root / page)], env=dict(os.environ, MANWIDTH="80"))
        assert r.returncode == 0 and r.stderr == "", r.stderr
    if arch == "amd64":
        # The installed unit as systemd reads it, with the installed manual pages for Documentation=.
        unit = tmp_path / "etun@site.service"
        unit.write_text((root / "lib/systemd/system/etun@.service").read_text()
                        .replace("/usr/sbin/etun", str(root / "usr/sbin/etun")))
        r = run(["systemd-analyze", "verify", str(unit)], env=dict(os.environ, MANPATH=str(root / "usr/share/man")))
        assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    assert run(["systemctl", f"--root={root}", "enable", "etun@site"]).returncode == 0
    link = root / "etc/systemd/system/multi-user.target.wants/etun@site.service"
    assert link.is_symlink()
    assert dpkg_root(root, "-r", "etun").returncode == 0
    assert not (root / "usr/sbin/etun").exists() and link.is_symlink()      # removal keeps the admin's choice
    assert dpkg_root(root, "-P", "etun").returncode == 0


# -- a booted Debian 12: the README's steps as an admin types them ---------------------------------


def container_init(nspawn: int) -> int:
    """The host pid of the container's PID 1 once it runs systemd (0 before): the descendant of
    systemd-nspawn that is pid 1 in a pid namespace of its own."""
    todo = [nspawn]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue                    # gone meanwhile
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if pid != nspawn and fields.get("NSpid", "").split()[-1:] == ["1"] and fields.get("Name") == "systemd":
            return pid
        todo += map(int, children)
    return 0


class Container:
    """systemd-nspawn -b over an overlay of SYSTEMD_ROOT; commands enter it with nsenter."""

    def __init__(self, tmp: Path):
        self.tmp, self.root = tmp, tmp / "root"
        self.nspawn: subprocess.Popen | None = None
        self.leader = 0

    def __enter__(self) -> "Container":
        self.mount = overlay(SYSTEMD_ROOT, self.tmp)
        self.mount.__enter__()
        try:
            self.boot()
        except BaseException:
            self.__exit__()
            raise
        return self

    def boot(self) -> None:
        log = open(self.tmp / "boot.log", "w")
        cmd = ["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit", "--private-network",
               "--console=passive", "-q", "-b"]
        print("[root]", " ".join(cmd))
        self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + BOOT_S
        # systemd-nspawn's first child is not the container: it sets up the mounts, starts the
        # container's PID 1 and exits. Entering it (the first child pgrep finds) raced that exit:
        # every command then failed at once and the boot looked like systemd saying ''.
        while not self.leader and time.monotonic() < deadline:
            assert self.nspawn.poll() is None, self.boot_log()
            self.leader = container_init(self.nspawn.pid)
            if not self.leader:
                time.sleep(0.2)
        assert self.leader, f"systemd-nspawn started no container with systemd in {BOOT_S} s:\n{self.boot_log()}"
        seen = []
        while time.monotonic() < deadline:
            assert self.nspawn.poll() is None, self.boot_log()
            r = self.sh("systemctl is-system-running --wait", timeout=max(1.0, deadline - time.monotonic()))
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            # Early in the boot systemctl may find no bus yet: say so, and ask again.
            seen.append(f"{state!r} (exit {r.returncode}{', ' + r.stderr.strip() if r.stderr.strip() else ''})")
            time.sleep(1)
        raise AssertionError(f"the container's systemd is not up after {BOOT_S} s; systemctl said "
                             f"{'; '.join(seen[-5:]) or 'nothing'}:\n{self.boot_log()}")

    def boot_log(self) -> str:
        return (self.tmp / "boot.log").read_text(errors="replace")[-4000:]

    def sh(self, cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        print(f"[container] {cmd}")
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a", "sh", "-c", cmd], capture_output=True,
                              text=True, timeout=timeout)

    def __exit__(self, *exc) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.leader:
                self.sh("systemctl poweroff")
            try:
                self.nspawn.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()          # the one process this test started
                self.nspawn.wait()
        self.mount.__exit__(None, None, None)


def test_dpkg_i_then_systemctl_enable_now_runs_etun_under_its_unit_and_dpkg_purge_undoes_it(tmp_path):
    package = deb("amd64")
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs systemd-container and util-linux)")
    if not (SYSTEMD_ROOT / ".etun-root").exists():
        pytest.skip(f"{SYSTEMD_ROOT} is not made (make test runs tests/packaging/systemd-root.sh)")
    with Container(tmp_path) as ct:
        shutil.copy(package, ct.root / "root" / package.name)
        r = ct.sh(f"dpkg -i /root/{package.name}")
        assert r.returncode == 0, r.stdout + r.stderr
        # README step 2: key and configuration (tap mode: the container has no LAN NIC to give).
        r = ct.sh("mkdir -p /etc/etun && etun keygen /etc/etun/site.key")
        assert r.returncode == 0 and "fingerprint" in r.stdout, r.stderr
        ct.sh("""printf '[lan]\\nmode = "tap"\\n[tunnel]\\npeer = "198.19.2.1:5555"\\n[security]\\n'"""
              """'key_file = "/etc/etun/site.key"\\n' > /etc/etun/site.toml""")
        assert ct.sh("etun check /etc/etun/site.toml").returncode == 0
        # README step 3, as written.
        r = ct.sh("systemctl enable --now etun@site")
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 20
        while "running:" not in ct.sh("journalctl -u etun@site --no-pager").stdout and time.monotonic() < deadline:
            time.sleep(0.3)
        journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert "etun[site]: etun" in journal and "running:" in journal, journal
        assert ct.sh("systemctl is-active etun@site").stdout.strip() == "active", journal
        status = ct.sh("etun status /etc/etun/site.toml")
        assert status.returncode == 0 and status.stdout.startswith(f"etun {VERSION}, site site"), status.stdout
        # The unit's processes: etun and its monitor, nothing else (the package's unpacked build
        # runs in the process systemd started: no boot loader waits beside it, as the one-file
        # binary's do). Neither holds more than the unit's five capabilities; etun, once set up,
        # runs as [run] user (nobody) with none, and its monitor keeps root's uid with none
        # (etun(8), "Privileges"). The "running as" line comes after the drop ("running:" before it).
        while "running as nobody" not in journal and time.monotonic() < deadline:
            time.sleep(0.3)
            journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert f"running as nobody (uid {NOBODY_ID}) with no capabilities" in journal, journal
        cgroup = ct.sh("systemctl show -p ControlGroup --value etun@site").stdout.strip()
        members = ct.sh(f"grep -lx '0::{cgroup}' /proc/[0-9]*/cgroup").stdout.split()
        procs = {pid: dict(line.split(":\t", 1) for line in ct.sh(f"cat /proc/{pid}/status").stdout.splitlines()
                           if ":\t" in line)
                 for pid in (m.split("/")[2] for m in members)}
        unit_caps = sum(1 << cap for cap in UNIT_CAPS)
        for pid, st in procs.items():
            assert int(st["CapBnd"], 16) & ~unit_caps == 0 and int(st["CapEff"], 16) & ~unit_caps == 0, (pid, st)
        [daemon] = [st for st in procs.values() if st["Uid"].split() == [str(NOBODY_ID)] * 4]
        [monitor] = [st for st in procs.values() if st["Name"] == "etun-monitor"]
        assert len(procs) == 2, procs
        assert ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip() in procs
        assert int(daemon["CapEff"], 16) == int(daemon["CapPrm"], 16) == 0, daemon
        assert monitor["Uid"].split() == ["0"] * 4 and int(monitor["CapEff"], 16) == 0, monitor
        # README step 5: a live change reloads through the unit's ExecReload=, the process stays; a
        # change that needs a restart fails the reload job, is named in the journal, and etun goes on.
        main_pid = ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip()
        ct.sh("sed -i 's/^\\[tunnel\\]$/[tunnel]\\nkeepalive = 7/' /etc/etun/site.toml")
        r = ct.sh("etun check /etc/etun/site.toml && systemctl reload etun@site")
        assert r.returncode == 0, r.stdout + r.stderr
        journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert any("reloaded /etc/etun/site.toml:" in line and "keepalive" in line for line in journal.splitlines()), journal
        # The unit's main process is etun itself: a SIGHUP sent to it reloads (the one-file
        # binary's boot loader would die of it, and systemd would restart etun).
        ct.sh("sed -i 's/^keepalive = 7$/keepalive = 8/' /etc/etun/site.toml")
        assert ct.sh("systemctl kill --kill-whom=main -s HUP etun@site").returncode == 0
        deadline = time.monotonic() + 10
        while not any("reloaded /etc/etun/site.toml:" in line and "keepalive 7 -> 8" in line
                      for line in ct.sh("journalctl -u etun@site --no-pager").stdout.splitlines()):
            assert time.monotonic() < deadline, ct.sh("journalctl -u etun@site --no-pager").stdout[-3000:]
            time.sleep(0.3)
        assert ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip() == main_pid
        ct.sh("sed -i 's/^keepalive = 8$/keepalive = 8\\nlisten = \"0.0.0.0:5556\"/' /etc/etun/site.toml")
        r = ct.sh("systemctl reload etun@site")
        journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert r.returncode != 0, r.stdout + r.stderr
        assert any("reload refused" in line and "listen" in line for line in journal.splitlines()), journal
        assert ct.sh("systemctl is-active etun@site").stdout.strip() == "active", journal
        assert ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip() == main_pid
        # The watchdog under real systemd: with the test hooks on (a drop-in), one datapath thread
        # wedged on purpose stops WATCHDOG=1; systemd kills etun and starts it again.
        ct.sh("mkdir -p /etc/systemd/system/etun@site.service.d && printf '[Service]\\nEnvironment=ETUN_TEST_HOOKS=1\\n"
              "WatchdogSec=3s\\n' > /etc/systemd/system/etun@site.service.d/hooks.conf && sed -i '/^listen = /d' "
              "/etc/etun/site.toml && systemctl daemon-reload && systemctl restart etun@site")
        assert ct.sh("systemctl is-active etun@site").stdout.strip() == "active"
        restarts = int(ct.sh("systemctl show -p NRestarts --value etun@site").stdout)
        stall = ("perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => \"/run/etun/site.sock\") or die $!;"
                 " print $s qq({\"request\": \"stall\", \"pump\": \"rx\"}\\n); print scalar <$s>'")
        r = ct.sh(stall)
        assert '"ok": true' in r.stdout, r.stdout + r.stderr
        deadline = time.monotonic() + 30
        while int(ct.sh("systemctl show -p NRestarts --value etun@site").stdout) == restarts:
            assert time.monotonic() < deadline, ct.sh("journalctl -u etun@site --no-pager").stdout[-3000:]
            time.sleep(0.5)
        journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert "Watchdog timeout" in journal, journal[-3000:]
        while ct.sh("systemctl is-active etun@site").stdout.strip() != "active":
            assert time.monotonic() < deadline, ct.sh("journalctl -u etun@site --no-pager").stdout[-3000:]
            time.sleep(0.5)
        ct.sh("rm -r /etc/systemd/system/etun@site.service.d && systemctl daemon-reload")
        # An upgrade (here: the same package again) stops the running instance before dpkg unpacks
        # (a running etun must not read modules from the new files) and starts it on the new program.
        while ct.sh("systemctl is-active etun@site").stdout.strip() != "active":
            assert time.monotonic() < deadline, ct.sh("journalctl -u etun@site --no-pager").stdout[-3000:]
            time.sleep(0.5)
        before = ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip()
        stops = ct.sh("journalctl -u etun@site --no-pager").stdout.count("stopping (SIGTERM)")
        r = ct.sh(f"dpkg -i /root/{package.name}")
        assert r.returncode == 0, r.stdout + r.stderr
        # dpkg prints the maintainer scripts' lines in order: stopped by prerm, dpkg unpacks, and
        # started by postinst.
        said = r.stdout
        stopping = said.find("etun: stopping etun@site.service for the upgrade")
        unpacking = said.find("Unpacking etun")
        starting = said.find("etun: starting etun@site.service again")
        assert -1 < stopping < unpacking < starting, said
        assert ct.sh("systemctl is-active etun@site").stdout.strip() == "active"
        assert ct.sh("systemctl show -p MainPID --value etun@site").stdout.strip() not in (before, "0")
        assert ct.sh("test -e /run/etun.upgrade-restart").returncode == 1
        journal = ct.sh("journalctl -u etun@site --no-pager").stdout
        assert journal.count("stopping (SIGTERM)") == stops + 1, journal[-3000:]
        # Removal stops the instance; purge forgets the admin's enable.
        r = ct.sh("dpkg -r etun")
        assert r.returncode == 0, r.stdout + r.stderr
        assert ct.sh("systemctl is-active etun@site").stdout.strip() in ("inactive", "failed")
        assert ct.sh("test -e /usr/sbin/etun").returncode == 1
        assert ct.sh("dpkg -P etun").returncode == 0
        assert ct.sh("ls /etc/systemd/system/multi-user.target.wants/").stdout.split().count("etun@site.service") == 0
        assert ct.sh("dpkg -S etun 2>/dev/null; ls /lib/systemd/system/etun@.service 2>/dev/null").stdout == ""
