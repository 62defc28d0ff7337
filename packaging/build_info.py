"""Write dist/etun.build-info: what the one-file binary bundles, libcrypto above all."""

import hashlib
import platform
import sys
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

from etun import __version__, _fast


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(dynamic: str, final: str) -> int:
    archive = CArchiveReader(dynamic)
    print(f"etun {__version__}")
    print(f"python {platform.python_version()}")
    print(f"built against {_fast.openssl_version()}")
    for name in sorted(archive.toc):
        if "libcrypto" in name or "libssl" in name or name.startswith("libpython"):
            data = archive.extract(name)
            print(f"bundled {name}: {len(data)} bytes, sha256 {sha256(data)}")
    blob = Path(final).read_bytes()
    print(f"{final}: {len(blob)} bytes, sha256 {sha256(blob)}, made libc-independent with staticx")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
