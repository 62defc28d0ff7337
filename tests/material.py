"""random_secrets: what a test site keeps of a fresh random key file, as etun.keys.load_secrets would give it."""

import os

from etun import keys


def random_secrets() -> keys.Secrets:
    """The secrets of new random key material (every call draws another key file)."""
    return keys.Secrets.from_prk(keys.derive_prk(os.urandom(keys.MATERIAL_LEN)))
