"""dist/etun-aarch64: static, at most 40 MB, runs from an empty root, holds the ARMv8 code.

dist/etun-aarch64 (`make binary-aarch64`): an aarch64 program, static, at most 40 MB, that runs under
qemu-user from an otherwise empty root (only /dev and /proc mounted) and bundles libcrypto's ARMv8 code.

    root/  etun  dev/ (bind)  proc/  tmp/  run/     run as: chroot root /etun ...  (qemu via binfmt_misc)
"""

import re
import struct
import time

import pytest

import etun
from tests import REPO
from tests.packaging.foreign import BINARY_AARCH64, chrooted, empty_root, qemu_missing

BUILD_INFO = REPO / "dist" / "etun-aarch64.build-info"
EM_AARCH64 = 183
PT_INTERP = 3


@pytest.fixture
def root(tmp_path):
    reason = qemu_missing()
    if reason:
        pytest.skip(reason)
    with empty_root(BINARY_AARCH64, tmp_path / "root") as root:
        yield root


def elf_facts(path) -> tuple[int, bool]:
    """(e_machine, has a PT_INTERP program header) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        head = f.read(64)
        assert head[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file"
        machine = struct.unpack_from("<H", head, 18)[0]
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    kinds = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
    return machine, PT_INTERP in kinds


def test_the_aarch64_binary_is_a_static_aarch64_program_of_at_most_40_mb():
    if not BINARY_AARCH64.exists():
        pytest.skip("dist/etun-aarch64 is not built (run make binary-aarch64)")
    machine, dynamic = elf_facts(BINARY_AARCH64)
    assert machine == EM_AARCH64
    assert not dynamic, "dist/etun-aarch64 asks for a dynamic loader: it would depend on the target's libc"
    assert BINARY_AARCH64.stat().st_size <= 40 * 1024 * 1024


def test_an_empty_root_runs_version_in_under_3_s_then_keygen_and_check(root):
    started = time.monotonic()
    r = chrooted(root, "--version")
    elapsed = time.monotonic() - started
    assert (r.returncode, r.stdout) == (0, f"etun {etun.__version__}\n"), r.stderr
    assert elapsed < 3.0, f"--version took {elapsed:.2f} s under qemu-user"
    r = chrooted(root, "keygen", "/site.key")
    assert r.returncode == 0 and "fingerprint" in r.stdout, r.stderr
    assert (root / "site.key").stat().st_size == 32768
    assert (root / "site.key").stat().st_mode & 0o777 == 0o600
    (root / "site.toml").write_text(
        '[lan]\ninterface = "eth1"\n[tunnel]\npeer = "198.19.2.1:5555"\n[security]\nkey_file = "/site.key"\n')
    r = chrooted(root, "check", "/site.toml")
    assert r.returncode == 0 and r.stdout.startswith("/site.toml: ok"), r.stderr
    r = chrooted(root, "check", "/missing.toml")
    assert (r.returncode, r.stderr) == (2, "etun: /missing.toml: cannot read: No such file or directory\n")


def test_under_qemu_user_run_refuses_a_privilege_drop_that_would_leave_qemus_own_thread_root(root):
    # qemu-user runs a thread of its own beside the emulated program and changes ids and
    # capabilities per thread: etun says so before it touches anything, and how to run it there
    # (tests/e2e/test_mixed_arch.py runs the emulated site with [run] user = "root").
    assert chrooted(root, "keygen", "/site.key").returncode == 0
    (root / "site.toml").write_text(
        '[lan]\nmode = "tap"\n[tunnel]\npeer = "198.19.2.1:5555"\n[security]\nkey_file = "/site.key"\n')
    r = chrooted(root, "run", "/site.toml")
    assert r.returncode == 1, r.stderr
    assert re.fullmatch(
        r"etun: cannot drop privileges: this process has \d+ threads? etun did not start, which would keep root's "
        r"ids and capabilities \(an emulator such as qemu-user runs one of its own\); run etun natively, or, "
        r'started as root, keep root with \[run\] user = "root"\n', r.stderr), r.stderr
    assert not (root / "run" / "etun").exists()                   # no control socket was made


def test_an_empty_root_runs_the_benchmark_at_every_level(root):
    r = chrooted(root, "bench", "--seconds", "0.2", timeout=300)
    assert r.returncode == 0, r.stderr
    levels = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.split()[:1] in (["none"], ["auth"],
                                                                                            ["encrypt"])]
    assert levels.count("encrypt") >= 4 and levels.count("auth") >= 4 and levels.count("none") >= 4, r.stdout
    assert "OpenSSL 3." in r.stdout.splitlines()[0]


def test_the_build_info_records_libcrypto_and_its_armv8_code_paths():
    if not BUILD_INFO.exists():
        pytest.skip("dist/etun-aarch64.build-info is not built (run make binary-aarch64)")
    info = BUILD_INFO.read_text()
    assert "bundled libcrypto.so.3:" in info
    assert f"dist/etun-aarch64: {BINARY_AARCH64.stat().st_size} bytes" in info
    # The unpacked build the arm64 package installs carries the very same libraries.
    unpacked = next((ln for ln in info.splitlines() if ln.startswith("dist/etun-aarch64-dir: ")), "")
    assert unpacked.endswith("every library the same bytes as in the one file"), info
    # The datapath's ciphers: ChaCha20 (NEON) and HMAC-SHA256 (SHA-256 crypto extension), chosen at run time.
    for path in ("ChaCha20 NEON", "SHA-256 ARMv8 crypto extension", "run-time choice by CPU features"):
        line = next((ln for ln in info.splitlines() if path in ln), "")
        assert line.strip().startswith("yes "), f"build info: {line or path + ' missing'}"
