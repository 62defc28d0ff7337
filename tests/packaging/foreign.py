"""Run dist/etun-aarch64 on this x86_64 machine: qemu-user through binfmt_misc, in an otherwise empty root.

    root/  etun  dev/ (bind of /dev)  proc/ (a new proc)  tmp/  run/  and the files a test writes

The kernel hands every aarch64 ELF to qemu-aarch64-static because `make binary-aarch64` registered
it with the F flag (the interpreter is opened at registration), so it runs even where the root holds
no qemu. Every mount is undone when the block ends, pass or fail.
"""

import contextlib
import shutil
import subprocess
from pathlib import Path

from tests import REPO

BINARY_AARCH64 = REPO / "dist" / "etun-aarch64"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def qemu_missing() -> str | None:
    """Why an aarch64 binary cannot run here, or None when it can."""
    if not BINARY_AARCH64.exists():
        return "dist/etun-aarch64 is not built (run make binary-aarch64)"
    if not BINFMT.exists():
        return "qemu-aarch64 is not registered with binfmt_misc (make binary-aarch64 registers it)"
    text = BINFMT.read_text()
    if not text.startswith("enabled"):
        return "qemu-aarch64 is registered with binfmt_misc but disabled (run: update-binfmts --enable qemu-aarch64)"
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"qemu-aarch64 is registered without the F flag ({flags!r}), so a chroot cannot reach the interpreter"
    return None


def run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    print("[root]", " ".join(map(str, cmd)))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@contextlib.contextmanager
def mounted(root: Path):
    """/dev (bound) and a new /proc inside `root` for the block; unmounted afterwards, pass or fail."""
    done: list[Path] = []
    try:
        for args in (["--bind", "/dev", str(root / "dev")], ["-t", "proc", "proc", str(root / "proc")]):
            Path(args[-1]).mkdir(parents=True, exist_ok=True)
            r = run(["mount", *args])
            assert r.returncode == 0, r.stderr
            done.append(Path(args[-1]))
        yield root
    finally:
        for path in reversed(done):
            run(["umount", "-l", str(path)])
        leftover = [line for line in Path("/proc/self/mounts").read_text().splitlines() if f" {root}/" in line]
        assert not leftover, f"mounts left behind: {leftover}"


@contextlib.contextmanager
def empty_root(binary: Path, root: Path):
    """`root` holding only `binary` as /etun, with /dev and /proc mounted; unmounted afterwards."""
    for d in ("dev", "proc", "tmp", "run"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(binary, root / "etun")
    with mounted(root):
        assert not (root / "lib").exists() and not (root / "usr").exists()
        yield root


def chrooted(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run(["chroot", str(root), "/etun", *args], timeout=timeout)
