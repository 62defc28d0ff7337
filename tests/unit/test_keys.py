"""Tests for etun.keys: RFC 5869 vectors, PROTOCOL.md §4.1 labels and secrets, keygen and key-file checks."""

import hashlib
import hmac
import os
import re
import stat

import pytest

from etun import keys
from etun.config import Security
from etun.errors import KeyFileError

# RFC 5869 Appendix A, test cases 1-3 (HKDF-SHA256).
RFC5869_CASES = [
    pytest.param(
        bytes([0x0B] * 22),
        bytes(range(0x00, 0x0D)),
        bytes(range(0xF0, 0xFA)),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        id="case1-basic",
    ),
    pytest.param(
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
        id="case2-long-inputs",
    ),
    pytest.param(
        bytes([0x0B] * 22),
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        id="case3-empty-salt-and-info",
    ),
]

FINGERPRINT_RE = re.compile(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}")


def reference_hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.3 written out with the standard library, independent of etun.keys."""
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@pytest.fixture
def material():
    return bytearray(os.urandom(keys.MATERIAL_LEN))


@pytest.fixture
def key_path(tmp_path):
    return tmp_path / "site.key"


def write_file(path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


@pytest.mark.parametrize("ikm, salt, info, length, prk_hex, okm_hex", RFC5869_CASES)
def test_hkdf_extract_matches_rfc5869(ikm, salt, info, length, prk_hex, okm_hex):
    assert keys.hkdf_extract(salt, ikm).hex() == prk_hex


@pytest.mark.parametrize("ikm, salt, info, length, prk_hex, okm_hex", RFC5869_CASES)
def test_hkdf_expand_matches_rfc5869(ikm, salt, info, length, prk_hex, okm_hex):
    assert keys.hkdf_expand(bytes.fromhex(prk_hex), info, length).hex() == okm_hex


STATIC_LABELS = {  # Secrets field -> PROTOCOL.md §4.1 info string
    "psk": b"etun/v2 psk",
    "mac1_key": b"etun/v2 mac1",
    "cookie_key": b"etun/v2 cookie",
    "probe_key": b"etun/v2 probe",
    "index_root": b"etun/v2 index root",
}


def test_derivations_use_the_protocol_labels(material):
    prk = hmac.new(b"etun/v1", bytes(material), hashlib.sha256).digest()
    fp = reference_hkdf_expand(prk, b"etun/v1 fingerprint", 8).hex()

    assert keys.derive_prk(material) == prk
    assert keys.fingerprint(material) == f"{fp[0:4]}-{fp[4:8]}-{fp[8:12]}-{fp[12:16]}"
    secrets = keys.Secrets.from_prk(prk)
    for name, label in STATIC_LABELS.items():
        assert getattr(secrets, name) == reference_hkdf_expand(prk, label, 32), name
    assert secrets.fingerprint == keys.fingerprint(material)


def test_the_prk_and_fingerprint_are_unchanged_since_protocol_1():
    # The same key file shows the same fingerprint to a version 1 and a version 2 etun.
    material = bytes(range(256)) * 128
    assert keys.fingerprint(material) == "a282-73c5-2b42-a16c"


def test_fingerprint_is_four_groups_of_four_lowercase_hex_digits(material):
    assert FINGERPRINT_RE.fullmatch(keys.fingerprint(material))


def test_fingerprint_is_stable_and_differs_between_materials(material):
    other = bytearray(material)
    other[-1] ^= 1
    assert keys.fingerprint(material) == keys.fingerprint(bytes(material))
    assert keys.fingerprint(material) != keys.fingerprint(other)


def test_each_static_secret_is_its_own_32_bytes(material):
    secrets = keys.Secrets.from_prk(keys.derive_prk(material))
    values = [getattr(secrets, name) for name in STATIC_LABELS]
    assert all(len(v) == 32 for v in values)
    assert len(set(values)) == len(values)
    other = keys.Secrets.from_prk(keys.derive_prk(bytes(material[:-1]) + bytes([material[-1] ^ 1])))
    assert not {getattr(other, name) for name in STATIC_LABELS} & set(values)


def test_level_none_has_zeros_for_every_secret_and_no_fingerprint():
    none = keys.Secrets.none()
    assert all(getattr(none, name) == bytes(32) for name in STATIC_LABELS)
    assert none.fingerprint is None


def test_install_hands_the_secrets_to_the_datapath_in_the_order_it_takes_them(material):
    secrets = keys.Secrets.from_prk(keys.derive_prk(material))
    calls = []

    class Recorder:
        def set_static_keys(self, *args):
            calls.append(args)

    secrets.install(Recorder())
    assert calls == [(secrets.psk, secrets.mac1_key, secrets.cookie_key, secrets.probe_key, secrets.index_root)]


def test_load_secrets_derives_from_the_key_file(key_path):
    fp = keys.generate_key_file(key_path)
    secrets = keys.load_secrets(key_path)
    assert secrets == keys.Secrets.from_prk(keys.derive_prk(key_path.read_bytes()))
    assert secrets.fingerprint == fp


def test_a_site_has_the_secrets_of_its_key_file_and_none_at_level_none(key_path):
    keys.generate_key_file(key_path)
    security = Security(level="auth", key_file=key_path, rekey=120)
    assert keys.load_site_secrets(security) == keys.load_secrets(key_path)
    assert keys.load_site_secrets(Security(level="none", key_file=key_path, rekey=120)) is None
    assert keys.load_site_secrets(Security(level="none", key_file=None, rekey=120)) is None


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: keys.derive_prk(bytes(keys.MATERIAL_LEN - 1)), id="short-material"),
        pytest.param(lambda: keys.fingerprint(bytes(keys.MATERIAL_LEN + 1)), id="long-material"),
        pytest.param(lambda: keys.Secrets.from_prk(bytes(31)), id="short-prk"),
        pytest.param(lambda: keys.Secrets.from_prk(bytes(33)), id="long-prk"),
        pytest.param(lambda: keys.hkdf_expand(bytes(31), b"", 32), id="short-hkdf-prk"),
        pytest.param(lambda: keys.hkdf_expand(bytes(32), b"", 255 * 32 + 1), id="hkdf-too-long"),
    ],
)
def test_derivations_reject_wrong_argument_lengths(call):
    with pytest.raises(ValueError):
        call()


def test_wipe_zeroes_the_buffer_in_place():
    buf = bytearray(b"secret material")
    keys.wipe(buf)
    assert buf == bytearray(len(b"secret material"))


def test_wipe_refuses_immutable_bytes():
    with pytest.raises(TypeError):
        keys.wipe(b"cannot be zeroed")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_keygen_creates_exactly_mode_0600_and_32768_bytes(key_path, umask):
    old = os.umask(umask)
    try:
        fp = keys.generate_key_file(key_path)
    finally:
        os.umask(old)
    st = key_path.stat()
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == keys.MATERIAL_LEN
    assert fp == keys.fingerprint(key_path.read_bytes())


def test_keygen_leaves_no_temporary_file(key_path):
    keys.generate_key_file(key_path)
    assert os.listdir(key_path.parent) == [key_path.name]


def test_keygen_refuses_to_overwrite_and_leaves_the_file_alone(key_path):
    keys.generate_key_file(key_path)
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        keys.generate_key_file(key_path)
    assert info.value.exit_code == 2
    assert str(info.value) == f"{key_path}: already exists; use --force to replace it"
    assert key_path.read_bytes() == before
    assert os.listdir(key_path.parent) == [key_path.name]


def test_keygen_refuses_to_overwrite_a_dangling_symlink(key_path, tmp_path):
    os.symlink(tmp_path / "nowhere", key_path)
    with pytest.raises(KeyFileError, match="already exists"):
        keys.generate_key_file(key_path)
    assert not (tmp_path / "nowhere").exists()


def test_keygen_with_force_replaces_the_file_with_new_material(key_path):
    write_file(key_path, b"old", 0o644)
    fp = keys.generate_key_file(key_path, force=True)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.stat().st_size == keys.MATERIAL_LEN
    assert fp == keys.fingerprint(key_path.read_bytes())
    assert os.listdir(key_path.parent) == [key_path.name]


def test_keygen_draws_new_material_each_time(key_path):
    first = keys.generate_key_file(key_path)
    second = keys.generate_key_file(key_path, force=True)
    assert first != second


def test_keygen_into_a_missing_directory_names_the_path_and_reason(tmp_path):
    path = tmp_path / "no-such-dir" / "site.key"
    with pytest.raises(KeyFileError) as info:
        keys.generate_key_file(path)
    assert info.value.exit_code == 2
    assert str(info.value) == f"{path}: cannot create: No such file or directory"


def test_load_key_file_returns_the_material_as_a_bytearray(key_path):
    keys.generate_key_file(key_path)
    material = keys.load_key_file(key_path)
    assert isinstance(material, bytearray)
    assert material == key_path.read_bytes()


def test_load_key_file_names_a_missing_file():
    path = "/nonexistent/etun/site.key"
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(path)
    assert info.value.exit_code == 2
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


@pytest.mark.parametrize("size", [0, 100, keys.MATERIAL_LEN - 1, keys.MATERIAL_LEN + 1])
def test_load_key_file_rejects_a_file_of_the_wrong_size(key_path, size):
    write_file(key_path, bytes(size), 0o600)
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(key_path)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"{key_path}: must be exactly 32768 bytes, got {size}; create one with: etun keygen {key_path}"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o400 | 0o040])
def test_load_key_file_rejects_a_file_other_users_can_read(key_path, mode):
    write_file(key_path, bytes(keys.MATERIAL_LEN), mode)
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(key_path)
    assert info.value.exit_code == 2
    assert str(info.value) == f"{key_path}: readable by other users; run: chmod 600 {key_path}"


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_load_key_file_rejects_a_file_other_users_can_write(key_path, mode):
    write_file(key_path, bytes(keys.MATERIAL_LEN), mode)
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(key_path)
    assert str(info.value) == f"{key_path}: writable by other users; run: chmod 600 {key_path}"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_load_key_file_accepts_owner_only_modes(key_path, mode):
    write_file(key_path, bytes(keys.MATERIAL_LEN), mode)
    assert keys.load_key_file(key_path) == bytes(keys.MATERIAL_LEN)


def test_load_key_file_rejects_a_directory(tmp_path):
    os.chmod(tmp_path, 0o700)
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(tmp_path)
    assert str(info.value) == f"{tmp_path}: not a regular file"


def test_load_key_file_rejects_a_fifo_without_blocking(key_path):
    os.mkfifo(key_path, 0o600)
    with pytest.raises(KeyFileError) as info:
        keys.load_key_file(key_path)
    assert str(info.value) == f"{key_path}: not a regular file"
