"""Write dist/etun.build-info: what the one-file binary bundles, libcrypto above all, and its unpacked twin."""

import collections
import hashlib
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

from etun import __version__, _fast


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ARMv8 code in OpenSSL's perlasm modules, told apart by instructions only it uses: Debian strips the
# symbol names (ChaCha20_neon, sha256_block_armv8, ...), so the disassembly is the evidence.
ARMV8_PATHS = [
    ("ChaCha20 NEON (chacha-armv8: ChaCha20_neon, ChaCha20_512_neon)",
     [("sli .4s #7/#12 (quarter-round rotations)", r"sli\tv\d+\.4s, v\d+\.4s, #(?:7|12)$"),
      ("rev32 .8h (rotate by 16)", r"rev32\tv\d+\.8h, v\d+\.8h$")]),
    ("SHA-256 ARMv8 crypto extension (sha256-armv8: sha256_block_armv8)",
     [("sha256h", r"sha256h\t"), ("sha256h2", r"sha256h2\t"), ("sha256su0", r"sha256su0\t"),
      ("sha256su1", r"sha256su1\t")]),
    ("SHA-512 ARMv8.2 crypto extension (sha512_block_armv8)", [("sha512h", r"sha512h\t")]),
    ("AES ARMv8 crypto extension (aesv8-armx)", [("aese", r"aese\t"), ("aesd", r"aesd\t")]),
    ("GHASH with PMULL (ghashv8-armx)", [("pmull", r"pmull\t"), ("pmull2", r"pmull2\t")]),
]


def armv8_code_paths(libcrypto: bytes) -> list[str]:
    """What ARMv8 code the bundled libcrypto holds, from its disassembly (aarch64 builds only)."""
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(libcrypto)
        f.flush()
        asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f.name], capture_output=True, text=True,
                             check=True).stdout
        dynsym = subprocess.run(["objdump", "-T", f.name], capture_output=True, text=True, check=True).stdout
    mnemonics = {pattern.split("\\", 1)[0] for _, parts in ARMV8_PATHS for _, pattern in parts}
    counts: collections.Counter = collections.Counter()
    for line in asm.splitlines():
        insn = line.split("\t", 1)[1].strip() if "\t" in line else ""
        if insn.split("\t", 1)[0] not in mnemonics:
            continue
        for _, parts in ARMV8_PATHS:
            for name, pattern in parts:
                if re.match(pattern, insn):
                    counts[name] += 1
    lines = ["libcrypto ARMv8 code paths (instructions counted in its disassembly):"]
    for path, parts in ARMV8_PATHS:
        found = ", ".join(f"{counts[name]} {name}" for name, _ in parts)
        lines.append(f"  {'yes' if all(counts[n] for n, _ in parts) else 'NO '} {path}: {found}")
    armcap = b"OPENSSL_armcap" in libcrypto and "getauxval" in dynsym
    lines.append(f"  {'yes' if armcap else 'NO '} run-time choice by CPU features: getauxval(AT_HWCAP) imported, "
                 "OPENSSL_armcap environment override present")
    return lines


def main(dynamic: str, final: str, unpacked: str) -> int:
    archive = CArchiveReader(dynamic)
    armv8: list[str] = []
    print(f"etun {__version__}")
    print(f"python {platform.python_version()}")
    print(f"built against {_fast.openssl_version()}")
    for name in sorted(archive.toc):
        if "libcrypto" in name or "libssl" in name or name.startswith("libpython"):
            data = archive.extract(name)
            print(f"bundled {name}: {len(data)} bytes, sha256 {sha256(data)}")
            if name.startswith("libcrypto") and platform.machine() == "aarch64":
                armv8 = armv8_code_paths(data)
    blob = Path(final).read_bytes()
    print(f"{final}: {len(blob)} bytes, sha256 {sha256(blob)}, made libc-independent with staticx")
    # The unpacked build (what the .deb installs) must carry the very libraries the one file does.
    top = Path(unpacked)
    tree = [p for p in top.rglob("*") if p.is_file()]
    differ = [name for name in sorted(archive.toc) if archive.toc[name][-1] in "bx"
              and (not (top / "_internal" / name).is_file()
                   or sha256((top / "_internal" / name).read_bytes()) != sha256(archive.extract(name)))]
    print(f"{unpacked}: {len(tree)} files, {sum(p.stat().st_size for p in tree)} bytes, "
          + (f"libraries differing from the one file's: {', '.join(differ)}" if differ
             else "every library the same bytes as in the one file"))
    print("\n".join(armv8), end="\n" if armv8 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
