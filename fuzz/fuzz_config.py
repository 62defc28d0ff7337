"""Fuzz target: site.toml loading; every input ends in a valid Config or one one-line ConfigError."""

# The committed corpus starts from the configurations the tests and docs/CONFIG.md write, so
# mutations reach every table and key. Oracle: load_config() returns a Config, or raises
# ConfigError whose message is one non-empty line naming the file; any other exception is a
# crash (cli.main() would print it as an internal error, which the SPEC forbids for a user's
# mistake).

import os
import tempfile

import harness

harness.instrumented("tomli", "etun.config")

from etun.config import Config, load_config  # noqa: E402  (after the instrumented import)
from etun.errors import ConfigError  # noqa: E402

DIR = tempfile.mkdtemp(prefix="etun-fuzz-config-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(DIR, "site.toml")


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        config = load_config(PATH)
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, f"not one line: {message!r}"
        assert message.startswith(PATH), f"does not name the file: {message!r}"
        return
    assert isinstance(config, Config)


if __name__ == "__main__":
    harness.main(test_one_input)
