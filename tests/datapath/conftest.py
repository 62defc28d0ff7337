"""Fixtures the datapath tests share: `secrets`, a fresh random key file's secrets for a test's sites."""

import pytest

from tests.material import random_secrets


@pytest.fixture
def secrets():
    return random_secrets()
