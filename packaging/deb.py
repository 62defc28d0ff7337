"""Build dist/etun_<version>_<arch>.deb with dpkg-deb from a built program, the unit, the manual pages and the docs.

    python3 packaging/deb.py amd64 dist/etun-dir build/man dist
    python3 packaging/deb.py arm64 dist/etun-aarch64-dir build/man dist

The package installs the unpacked build of `make binary` (dist/etun-dir: the program `etun` and
its `_internal/`) as /usr/lib/etun, with /usr/sbin/etun a link to it: unlike the one-file
dist/etun it has nothing to unpack before it starts, so `etun status --check` (keepalived runs
it every second) and `etun activate` start in a quarter of the time. It depends on what it
loads from the system: the C library (at the newest symbol version its files ask for) and zlib,
which the boot loader needs before it points the loader at _internal/.

No network and no debhelper: the program is already built, so the package is a tree of files, a
control file and three small maintainer scripts (packaging/debian/). Every file gets the time of
the last commit (or SOURCE_DATE_EPOCH), so the same tree builds the same package.
"""

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHES = {"amd64": "x86-64", "arm64": "ARM aarch64"}      # Debian name -> what file(1) says
MAINTAINER = "etun developers <etun-dev@lists.etun.dev>"
HOMEPAGE = "https://github.com/etun/etun"
# Documents the manual pages point at (/usr/share/doc/etun/NAME.md), shipped as they are.
DOCS = ["PROTOCOL.md", "SECURITY.md", "OFFLOADS.md", "STATUS.md", "PERFORMANCE.md"]
DESCRIPTION = """\
Layer-2 site-to-site VPN joining two Ethernet LANs
 etun joins two Ethernet LANs across any IP network. One gateway at each
 site runs it, and the hosts of both sites share one Ethernet segment with
 the standard MTU of 1500, VLAN tags and all. Tunnel packets are UDP
 datagrams below 800 bytes by default, authenticated with HMAC-SHA256 and
 encrypted with ChaCha20; nothing on the path needs configuring.
 .
 This package holds the etun program (Python, the datapath and libcrypto
 bundled in /usr/lib/etun), the hardened systemd template unit
 etun@.service and the manual pages etun(8) and etun.toml(5)."""


class PackageError(Exception):
    pass


def version() -> str:
    return re.search(r'^__version__ = "(.+)"', (REPO / "etun" / "__init__.py").read_text(), re.M)[1]


def build_time() -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return int(epoch)
    r = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO, capture_output=True, text=True)
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else 0


def put(stage: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    target = stage / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def unit_text() -> bytes:
    """packaging/etun@.service with the package's binary path and its manual pages."""
    text = (REPO / "packaging" / "etun@.service").read_text()
    if "/usr/local/bin/etun" not in text:
        raise PackageError("packaging/etun@.service: expected ExecStart to name /usr/local/bin/etun")
    text = text.replace("/usr/local/bin/etun", "/usr/sbin/etun")
    return re.sub(r"^Documentation=", "Documentation=man:etun(8) man:etun.toml(5) ", text, flags=re.M).encode()


def debian_changelog(when: int) -> bytes:
    """CHANGELOG.md's newest section as a Debian changelog entry (a native package has only this one)."""
    import email.utils
    lines = (REPO / "CHANGELOG.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    items, heading = [], ""
    for line in lines[start + 1:end]:
        if line.startswith("### "):
            heading = line[4:].strip()
        elif line.startswith("- "):
            items.append(f"{heading}: {line[2:].strip()}" if heading else line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    body = []
    for item in items:
        words, cur = item.split(), "  *"
        for word in words:
            if len(cur) + 1 + len(word) > 78:
                body.append(cur)
                cur = "   "
            cur += " " + word
        body.append(cur)
    date = email.utils.formatdate(when, usegmt=False).replace("-0000", "+0000")
    entry = f"etun ({version()}) unstable; urgency=medium\n\n" + "\n".join(body) + \
            f"\n\n -- {MAINTAINER}  {date}\n"
    return entry.encode()


# The system libraries an unpacked build may load, and the Debian 12 package holding each (zlib1g's
# minimum is its shlibs file's). Any other library it asks the system for stops the build.
SYSTEM_LIBRARIES = {
    "libc.so.6": "libc6", "libm.so.6": "libc6", "libdl.so.2": "libc6", "libpthread.so.0": "libc6",
    "librt.so.1": "libc6", "libutil.so.1": "libc6", "ld-linux-x86-64.so.2": "libc6", "ld-linux-aarch64.so.1": "libc6",
    "libz.so.1": "zlib1g (>= 1:1.2.3.3.dfsg-1)",
}


def files(stage: Path) -> list[Path]:
    """The regular files under `stage` (links are not files of their own), sorted."""
    return sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink())


def readelf(option: str, path: Path) -> str:
    r = subprocess.run(["readelf", option, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise PackageError(f"readelf {option} {path}: {r.stderr.strip()}")
    return r.stdout


def depends(program: Path) -> str:
    """The Depends field of an unpacked build (readelf reads every architecture's ELF). The boot
    loader starts with the system's libraries only (it has no RUNPATH; it sets LD_LIBRARY_PATH to
    _internal/ and runs itself again), so all it needs comes from the system; the libraries and
    modules in _internal/ find each other there and need the system for the rest."""
    newest, packages = (0, 0), set()
    bundled = {p.name for p in (program / "_internal").iterdir()}
    for p in files(program):
        if p.read_bytes()[:4] != b"\x7fELF":
            continue
        for major, minor in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", readelf("-V", p)):
            newest = max(newest, (int(major), int(minor)))
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", readelf("-d", p)):
            if p != program / "etun" and soname in bundled:
                continue
            if soname not in SYSTEM_LIBRARIES:
                raise PackageError(f"{p} needs {soname} from the system: not in SYSTEM_LIBRARIES (packaging/deb.py)")
            packages.add(SYSTEM_LIBRARIES[soname])
    if newest == (0, 0):
        raise PackageError(f"{program}: no file asks for a GLIBC_ symbol version: not a glibc build?")
    packages.discard("libc6")
    return ", ".join([f"libc6 (>= {newest[0]}.{newest[1]})", *sorted(packages)])


def control(arch: str, stage: Path, depends: str) -> str:
    # As dpkg-gencontrol counts: each file's size in KiB rounded up, 1 KiB for each directory and link.
    size_kib = sum((p.stat().st_size + 1023) // 1024 if p.is_file() and not p.is_symlink() else 1
                   for p in stage.rglob("*") if p.name != "DEBIAN" and "DEBIAN" not in p.relative_to(stage).parts)
    return (f"Package: etun\nVersion: {version()}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n"
            f"Installed-Size: {size_kib}\nDepends: {depends}\nSection: net\nPriority: optional\n"
            f"Homepage: {HOMEPAGE}\nDescription: {DESCRIPTION}\n")


def build(arch: str, program: Path, man: Path, out: Path) -> Path:
    if arch not in ARCHES:
        raise PackageError(f"architecture {arch!r}: expected one of {', '.join(ARCHES)}")
    binary = program / "etun"
    if not binary.is_file() or not (program / "_internal").is_dir():
        raise PackageError(f"{program}: not an unpacked build (etun and _internal/; make binary / make binary-aarch64)")
    links = [str(p) for p in program.rglob("*") if p.is_symlink()]
    if links:
        raise PackageError(f"{program}: holds links, which this script does not package: {', '.join(links)}")
    try:
        kind = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        kind = ARCHES[arch]                  # no file(1): the tests still run what was packaged
    if ARCHES[arch] not in kind:
        raise PackageError(f"{binary}: is not an {arch} program ({kind.strip()})")
    pages = [man / "etun.8", man / "etun.toml.5"]
    for page in pages:
        if not page.is_file():
            raise PackageError(f"{page}: not built (make man)")
    when = build_time()
    stage = REPO / "build" / "deb" / arch
    shutil.rmtree(stage, ignore_errors=True)
    for f in files(program):           # the program runs; its libraries and data are only read
        put(stage, f"/usr/lib/etun/{f.relative_to(program)}", f.read_bytes(), 0o755 if f == binary else 0o644)
    (stage / "usr/sbin").mkdir(parents=True)
    (stage / "usr/sbin/etun").symlink_to("../lib/etun/etun")
    put(stage, "/lib/systemd/system/etun@.service", unit_text())
    put(stage, "/usr/share/man/man8/etun.8.gz", gz(pages[0].read_bytes()))
    put(stage, "/usr/share/man/man5/etun.toml.5.gz", gz(pages[1].read_bytes()))
    put(stage, "/usr/share/doc/etun/copyright", (REPO / "packaging" / "debian" / "copyright").read_bytes())
    put(stage, "/usr/share/doc/etun/changelog.gz", gz(debian_changelog(when)))
    put(stage, "/usr/share/lintian/overrides/etun", (REPO / "packaging" / "debian" / "lintian-overrides").read_bytes())
    for doc in DOCS:
        source = REPO / "docs" / doc
        if source.is_file():
            put(stage, f"/usr/share/doc/etun/{doc}", source.read_bytes())
    keepalived = REPO / "packaging" / "keepalived"
    if keepalived.is_dir():
        for f in sorted(p for p in keepalived.rglob("*") if p.is_file()):
            mode = 0o755 if os.access(f, os.X_OK) else 0o644
            put(stage, f"/usr/share/etun/keepalived/{f.relative_to(keepalived)}", f.read_bytes(), mode)
    debian = stage / "DEBIAN"
    debian.mkdir()
    sums = "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n"
                   for p in files(stage) if debian not in p.parents)
    (debian / "control").write_text(control(arch, stage, depends(program)))
    (debian / "md5sums").write_text(sums)
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(REPO / "packaging" / "debian" / script, debian / script)
        (debian / script).chmod(0o755)
    for p in [stage, *stage.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
        os.utime(p, (when, when), follow_symlinks=False)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"etun_{version()}_{arch}.deb"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(when))
    r = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise PackageError(f"dpkg-deb failed: {r.stderr.strip()}")
    return deb


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print("usage: deb.py ARCH PROGRAM_DIR MANDIR OUTDIR", file=sys.stderr)
        return 2
    try:
        deb = build(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]))
    except PackageError as e:
        print(f"deb.py: {e}", file=sys.stderr)
        return 2
    print(f"{deb}: {deb.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
