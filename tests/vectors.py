"""Published test vectors (RFC 8439 ChaCha20, RFC 4231 HMAC-SHA-256, RFC 5869 HKDF-SHA256) as plain data."""

# Byte strings are written as hex exactly as printed in the RFCs (whitespace is
# ignored by bytes.fromhex), so each vector can be compared to its source by eye.
# Every vector is checked against the `cryptography` package by
# tests/unit/test_reference.py.

_IETF_TEXT = (
    b"Any submission to the IETF intended by the Contributor for publication as all"
    b" or part of an IETF Internet-Draft or RFC and any statement made within the"
    b' context of an IETF activity is considered an "IETF Contribution". Such'
    b" statements include oral statements in IETF sessions, as well as written and"
    b" electronic communications made at any time or place, which are addressed to"
)

_JABBERWOCKY = (
    b"'Twas brillig, and the slithy toves\nDid gyre and gimble in the wabe:\n"
    b"All mimsy were the borogoves,\nAnd the mome raths outgrabe."
)

_SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip"
    b" for the future, sunscreen would be it."
)

# ChaCha20 encryption: key, 96-bit nonce, 32-bit initial block counter,
# plaintext, ciphertext. Keystream vectors (A.1) are encryptions of zeros.
CHACHA20 = [
    # RFC 8439 §2.4.2: example and test vector for the ChaCha20 cipher.
    {
        "name": "RFC 8439 2.4.2 sunscreen",
        "key": bytes.fromhex(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        ),
        "nonce": bytes.fromhex("000000000000004a00000000"),
        "counter": 1,
        "plaintext": _SUNSCREEN,
        "ciphertext": bytes.fromhex(
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
            "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
            "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
            "5af90bbf74a35be6b40b8eedf2785e42874d"
        ),
    },
    # RFC 8439 Appendix A.1, test vector #1: block function, all-zero key and nonce, counter 0.
    {
        "name": "RFC 8439 A.1 #1 keystream",
        "key": bytes(32),
        "nonce": bytes(12),
        "counter": 0,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
        ),
    },
    # RFC 8439 Appendix A.1, test vector #2: all-zero key and nonce, counter 1.
    {
        "name": "RFC 8439 A.1 #2 keystream",
        "key": bytes(32),
        "nonce": bytes(12),
        "counter": 1,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
            "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
        ),
    },
    # RFC 8439 Appendix A.1, test vector #3: key ends in 01, zero nonce, counter 1.
    {
        "name": "RFC 8439 A.1 #3 keystream",
        "key": bytes(31) + b"\x01",
        "nonce": bytes(12),
        "counter": 1,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "3aeb5224ecf849929b9d828db1ced4dd832025e8018b8160b82284f3c949aa5a"
            "8eca00bbb4a73bdad192b5c42f73f2fd4e273644c8b36125a64addeb006c13a0"
        ),
    },
    # RFC 8439 Appendix A.1, test vector #4: key 00 ff 00.., zero nonce, counter 2.
    {
        "name": "RFC 8439 A.1 #4 keystream",
        "key": b"\x00\xff" + bytes(30),
        "nonce": bytes(12),
        "counter": 2,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "72d54dfbf12ec44b362692df94137f328fea8da73990265ec1bbbea1ae9af0ca"
            "13b25aa26cb4a648cb9b9d1be65b2c0924a66c54d545ec1b7374f4872e99f096"
        ),
    },
    # RFC 8439 Appendix A.1, test vector #5: zero key, nonce ending in 02, counter 0.
    {
        "name": "RFC 8439 A.1 #5 keystream",
        "key": bytes(32),
        "nonce": bytes(11) + b"\x02",
        "counter": 0,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "c2c64d378cd536374ae204b9ef933fcd1a8b2288b3dfa49672ab765b54ee27c7"
            "8a970e0e955c14f3a88e741b97c286f75f8fc299e8148362fa198a39531bed6d"
        ),
    },
    # RFC 8439 Appendix A.2, test vector #1: encryption of 64 zero bytes (= A.1 #1).
    {
        "name": "RFC 8439 A.2 #1 encryption",
        "key": bytes(32),
        "nonce": bytes(12),
        "counter": 0,
        "plaintext": bytes(64),
        "ciphertext": bytes.fromhex(
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
        ),
    },
    # RFC 8439 Appendix A.2, test vector #2: the IETF boilerplate, 375 bytes, counter 1.
    {
        "name": "RFC 8439 A.2 #2 encryption",
        "key": bytes(31) + b"\x01",
        "nonce": bytes(11) + b"\x02",
        "counter": 1,
        "plaintext": _IETF_TEXT,
        "ciphertext": bytes.fromhex(
            "a3fbf07df3fa2fde4f376ca23e82737041605d9f4f4f57bd8cff2c1d4b7955ec"
            "2a97948bd3722915c8f3d337f7d370050e9e96d647b7c39f56e031ca5eb6250d"
            "4042e02785ececfa4b4bb5e8ead0440e20b6e8db09d881a7c6132f420e527950"
            "42bdfa7773d8a9051447b3291ce1411c680465552aa6c405b7764d5e87bea85a"
            "d00f8449ed8f72d0d662ab052691ca66424bc86d2df80ea41f43abf937d3259d"
            "c4b2d0dfb48a6c9139ddd7f76966e928e635553ba76c5c879d7b35d49eb2e62b"
            "0871cdac638939e25e8a1e0ef9d5280fa8ca328b351c3c765989cbcf3daa8b6c"
            "cc3aaf9f3979c92b3720fc88dc95ed84a1be059c6499b9fda236e7e818b04b0b"
            "c39c1e876b193bfe5569753f88128cc08aaa9b63d1a16f80ef2554d7189c411f"
            "5869ca52c5b83fa36ff216b9c1d30062bebcfd2dc5bce0911934fda79a86f6e6"
            "98ced759c3ff9b6477338f3da4f9cd8514ea9982ccafb341b2384dd902f3d1ab"
            "7ac61dd29c6f21ba5b862f3730e37cfdc4fd806c22f221"
        ),
    },
    # RFC 8439 Appendix A.2, test vector #3: Jabberwocky, 127 bytes, counter 42.
    {
        "name": "RFC 8439 A.2 #3 encryption",
        "key": bytes.fromhex(
            "1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0"
        ),
        "nonce": bytes(11) + b"\x02",
        "counter": 42,
        "plaintext": _JABBERWOCKY,
        "ciphertext": bytes.fromhex(
            "62e6347f95ed87a45ffae7426f27a1df5fb69110044c0d73118effa95b01e5cf"
            "166d3df2d721caf9b21e5fb14c616871fd84c54f9d65b283196c7fe4f60553eb"
            "f39c6402c42234e32a356b3e764312a61a5532055716ead6962568f87d3f3f77"
            "04c6a8d1bcd1bf4d50d6154b6da731b187b58dfd728afa36757a797ac188d1"
        ),
    },
]

# HMAC-SHA-256: key, data, expected MAC. `truncate` is the number of leading
# bytes of the MAC the RFC gives (case 5 is truncated to 128 bits, which is also
# how etun uses HMAC-SHA-256: HMAC-SHA-256-128, RFC 4868).
HMAC_SHA256 = [
    # RFC 4231 §4.2, test case 1.
    {
        "name": "RFC 4231 case 1",
        "key": bytes.fromhex("0b" * 20),
        "data": b"Hi There",
        "truncate": 32,
        "mac": bytes.fromhex(
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        ),
    },
    # RFC 4231 §4.3, test case 2: a key shorter than the hash output.
    {
        "name": "RFC 4231 case 2",
        "key": b"Jefe",
        "data": b"what do ya want for nothing?",
        "truncate": 32,
        "mac": bytes.fromhex(
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ),
    },
    # RFC 4231 §4.4, test case 3: combined length of key and data above 64 bytes.
    {
        "name": "RFC 4231 case 3",
        "key": bytes.fromhex("aa" * 20),
        "data": bytes.fromhex("dd" * 50),
        "truncate": 32,
        "mac": bytes.fromhex(
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        ),
    },
    # RFC 4231 §4.5, test case 4: combined length of key and data above 64 bytes.
    {
        "name": "RFC 4231 case 4",
        "key": bytes.fromhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
        "data": bytes.fromhex("cd" * 50),
        "truncate": 32,
        "mac": bytes.fromhex(
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
        ),
    },
    # RFC 4231 §4.6, test case 5: truncation to 128 bits.
    {
        "name": "RFC 4231 case 5 (truncated to 128 bits)",
        "key": bytes.fromhex("0c" * 20),
        "data": b"Test With Truncation",
        "truncate": 16,
        "mac": bytes.fromhex("a3b6167473100ee06e0c796c2955552b"),
    },
    # RFC 4231 §4.7, test case 6: a key larger than the 64-byte block.
    {
        "name": "RFC 4231 case 6",
        "key": bytes.fromhex("aa" * 131),
        "data": b"Test Using Larger Than Block-Size Key - Hash Key First",
        "truncate": 32,
        "mac": bytes.fromhex(
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        ),
    },
    # RFC 4231 §4.8, test case 7: key and data both larger than the block.
    {
        "name": "RFC 4231 case 7",
        "key": bytes.fromhex("aa" * 131),
        "data": (
            b"This is a test using a larger than block-size key and a larger than"
            b" block-size data. The key needs to be hashed before being used by"
            b" the HMAC algorithm."
        ),
        "truncate": 32,
        "mac": bytes.fromhex(
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        ),
    },
]

# HKDF-SHA256: ikm, salt, info, length, expected PRK and OKM.
HKDF_SHA256 = [
    # RFC 5869 Appendix A.1, test case 1: basic test case with SHA-256.
    {
        "name": "RFC 5869 A.1 case 1",
        "ikm": bytes.fromhex("0b" * 22),
        "salt": bytes.fromhex("000102030405060708090a0b0c"),
        "info": bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        "length": 42,
        "prk": bytes.fromhex(
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        ),
        "okm": bytes.fromhex(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
            "34007208d5b887185865"
        ),
    },
    # RFC 5869 Appendix A.2, test case 2: longer inputs and outputs.
    {
        "name": "RFC 5869 A.2 case 2",
        "ikm": bytes(range(0x00, 0x50)),
        "salt": bytes(range(0x60, 0xB0)),
        "info": bytes(range(0xB0, 0x100)),
        "length": 82,
        "prk": bytes.fromhex(
            "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244"
        ),
        "okm": bytes.fromhex(
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
            "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
            "cc30c58179ec3e87c14c01d5c1f3434f1d87"
        ),
    },
    # RFC 5869 Appendix A.3, test case 3: zero-length salt and info.
    {
        "name": "RFC 5869 A.3 case 3",
        "ikm": bytes.fromhex("0b" * 22),
        "salt": b"",
        "info": b"",
        "length": 42,
        "prk": bytes.fromhex(
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
        ),
        "okm": bytes.fromhex(
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
            "9d201395faa4b61a96c8"
        ),
    },
]
