"""Key material: keygen, key-file checks, fingerprint, and the long-term secrets (PROTOCOL.md §4.1)."""

import os
import secrets
import stat
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from etun.errors import KeyFileError

MATERIAL_LEN = 32768  # bytes of shared key material, both sites
HASH_LEN = 32  # SHA-256 output bytes: PRK, control key and session secret lengths
NONCE_LEN = 16  # bytes in a sender nonce and in a challenge
MAX_INDEX = 2**32 - 1  # key indices are carried as be32

SALT = b"etun/v1"                       # unchanged in protocol 2: fingerprints stay the same
INFO_FINGERPRINT = b"etun/v1 fingerprint"
INFO_PSK = b"etun/v2 psk"
INFO_MAC1 = b"etun/v2 mac1"
INFO_COOKIE = b"etun/v2 cookie"
INFO_PROBE = b"etun/v2 probe"
INFO_INDEX_ROOT = b"etun/v2 index root"


def hkdf_extract(salt, ikm) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2): PRK = HMAC-SHA256(salt, IKM)."""
    # An empty salt is an HMAC key of zeros, exactly what RFC 5869 asks for
    # when the salt is "not provided".
    mac = hmac.HMAC(bytes(salt), hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def hkdf_expand(prk, info, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3)."""
    if len(prk) < HASH_LEN:
        raise ValueError(f"HKDF-Expand: PRK must be at least {HASH_LEN} bytes, got {len(prk)}")
    if not 0 < length <= 255 * HASH_LEN:
        raise ValueError(f"HKDF-Expand: length must be 1..{255 * HASH_LEN}, got {length}")
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=bytes(info)).derive(bytes(prk))


def _check_len(name: str, value, expected: int) -> None:
    if len(value) != expected:
        raise ValueError(f"{name} must be {expected} bytes, got {len(value)}")


def derive_prk(material) -> bytes:
    """The pseudorandom key every other secret is expanded from."""
    _check_len("key material", material, MATERIAL_LEN)
    return hkdf_extract(SALT, material)


def fingerprint(material) -> str:
    """A short public hash of the material, "xxxx-xxxx-xxxx-xxxx", for admins to compare by phone."""
    return _fingerprint(derive_prk(material))


def _fingerprint(prk) -> str:
    digits = hkdf_expand(prk, INFO_FINGERPRINT, 8).hex()
    return "-".join(digits[i : i + 4] for i in range(0, 16, 4))


SECRET_NAMES = ("psk", "mac1_key", "cookie_key", "probe_key", "index_root")   # Secrets' keys, in order


@dataclass(frozen=True)
class Secrets:
    """What etun keeps of a key file (the material itself is wiped as soon as these exist): the
    Noise PSK, the keys of mac1, cookie replies and verify-peer probes, and the root of the
    2^32 per-index secrets. At level none every one is zeros: nothing is secret there."""

    psk: bytes
    mac1_key: bytes
    cookie_key: bytes
    probe_key: bytes
    index_root: bytes
    fingerprint: str | None

    @classmethod
    def none(cls) -> "Secrets":
        zero = bytes(HASH_LEN)
        return cls(zero, zero, zero, zero, zero, None)

    @classmethod
    def from_prk(cls, prk: bytes, fingerprint: str | None = None) -> "Secrets":
        _check_len("PRK", prk, HASH_LEN)
        return cls(*(hkdf_expand(prk, info, HASH_LEN)
                     for info in (INFO_PSK, INFO_MAC1, INFO_COOKIE, INFO_PROBE, INFO_INDEX_ROOT)),
                   fingerprint=fingerprint or _fingerprint(prk))

    def install(self, datapath) -> None:
        """Hand the secrets to a datapath (Datapath.set_static_keys)."""
        datapath.set_static_keys(self.psk, self.mac1_key, self.cookie_key, self.probe_key, self.index_root)


def load_secrets(path) -> Secrets:
    """Read and check the key file at `path`, derive the secrets, and wipe the material."""
    material = load_key_file(path)
    try:
        prk = derive_prk(material)
    finally:
        wipe(material)
    return Secrets.from_prk(prk)


def load_site_secrets(security) -> Secrets | None:
    """The secrets of a site's [security] table (etun.config.Security): load_secrets() of its key
    file, or None at level none, which has no key file."""
    return None if security.level == "none" else load_secrets(security.key_file)


def wipe(buf: bytearray) -> None:
    """Overwrite a bytearray with zeros in place."""
    if not isinstance(buf, bytearray):
        raise TypeError(f"wipe needs a bytearray, got {type(buf).__name__}")
    # Equal-length slice assignment writes into the existing buffer; it never reallocates.
    buf[:] = bytes(len(buf))


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def generate_key_file(path, force: bool = False) -> str:
    """Write fresh random key material to path (mode 0600) and return its fingerprint."""
    path = os.fspath(path)
    exists_error = KeyFileError(f"{path}: already exists; use --force to replace it")
    # Checked again, race-free, by os.link below; this only spares writing a
    # temporary file in the common case.
    if not force and os.path.lexists(path):
        raise exists_error
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    material = bytearray(os.urandom(MATERIAL_LEN))
    try:
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create: {e.strerror}") from None
        try:
            # The umask can only remove bits, but "exactly 0600" is the promise.
            os.fchmod(fd, 0o600)
            _write_all(fd, material)
            os.fsync(fd)
        except OSError as e:
            raise KeyFileError(f"{path}: cannot write: {e.strerror}") from None
        finally:
            os.close(fd)
        try:
            if force:
                os.replace(tmp, path)
            else:
                # link() fails if path exists, so a file created since the
                # check above is never overwritten.
                os.link(tmp, path)
        except FileExistsError:
            raise exists_error from None
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create: {e.strerror}") from None
        try:
            _fsync_dir(directory)
        except OSError as e:
            raise KeyFileError(f"{path}: cannot sync directory {directory}: {e.strerror}") from None
        return fingerprint(material)
    finally:
        wipe(material)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def load_key_file(path) -> bytearray:
    """Read key material after checking it is a private regular file of exactly MATERIAL_LEN bytes."""
    path = os.fspath(path)
    try:
        # O_NONBLOCK so a FIFO in the key file's place cannot hang us before fstat rejects it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        # fstat on the open fd: the checks apply to the very file we read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if st.st_mode & 0o044:
            raise KeyFileError(f"{path}: readable by other users; run: chmod 600 {path}")
        # Whoever can write the material can choose it, and then forge packets.
        if st.st_mode & 0o022:
            raise KeyFileError(f"{path}: writable by other users; run: chmod 600 {path}")
        if st.st_size != MATERIAL_LEN:
            raise KeyFileError(
                f"{path}: must be exactly {MATERIAL_LEN} bytes, got {st.st_size}; "
                f"create one with: etun keygen {path}"
            )
        material = bytearray(MATERIAL_LEN)
        got = 0
        extra = b""
        try:
            with memoryview(material) as view:
                while got < MATERIAL_LEN:
                    n = os.readv(fd, [view[got:]])
                    if n == 0:
                        break
                    got += n
            extra = os.read(fd, 1)
        except OSError as e:
            wipe(material)
            raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
        # st_size was right a moment ago; a file that shrank or grew since is being rewritten.
        if got != MATERIAL_LEN or extra:
            wipe(material)
            raise KeyFileError(f"{path}: changed size while being read; expected exactly {MATERIAL_LEN} bytes")
        return material
    finally:
        os.close(fd)
