"""What every fuzz target shares: the sanitized-build check, the atheris entry, input readers."""

import functools
import os
import sys

import atheris

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZED = os.path.join(REPO, "build", "fuzz", "etun")
KEY = bytes(range(32))                 # a session secret both ends of a target know (set_*_session)
WRONG_KEY = bytes(range(1, 33))        # ... and one they do not
PRK = bytes(range(100, 132))           # the key file both sites of a target share (PROTOCOL.md §4.1)


def require_sanitized_build() -> None:
    """Fuzzing the normal build would find nothing the sanitizers catch: refuse to."""
    from etun import _fast

    if not os.path.realpath(_fast.__file__).startswith(os.path.realpath(SANITIZED)):
        sys.exit(f"fuzz: etun._fast comes from {_fast.__file__}, not the sanitizer build in {SANITIZED}; "
                 "run the targets through fuzz/run.py (make fuzz)")


def main(test_one_input, instrument_python: bool = False) -> None:
    """Run a target: libFuzzer's own argv (corpus dirs, -runs=, -max_total_time=, a crash file)."""
    require_sanitized_build()
    argv = list(sys.argv)
    # libFuzzer's -merge re-runs argv[0]: fuzz/run.py names an executable wrapper for this script.
    argv[0] = os.environ.get("ETUN_FUZZ_ARGV0", argv[0])
    atheris.Setup(argv, test_one_input, internal_libfuzzer=None)
    atheris.Fuzz()


def instrumented(*modules: str) -> None:
    """Import Python modules with atheris's coverage instrumentation (before anything imports them)."""
    with atheris.instrument_imports(include=list(modules)):
        for name in modules:
            module = __import__(name)
            if not getattr(module, "__file__", "").endswith(".py"):
                sys.exit(f"fuzz: {name} is compiled ({module.__file__}): atheris cannot see its coverage")


class Reader:
    """Reads an input as a sequence of small decisions; past its end every read gives 0 / b""."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, nbytes: int) -> int:
        return int.from_bytes(self.bytes(nbytes).ljust(nbytes, b"\0"), "big")

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def pick(self, options):
        return options[self.byte() % len(options)]

    def chunk(self, limit: int = 0xFFFF) -> bytes:
        """A length-prefixed (2 bytes) piece of the input."""
        return self.bytes(min(self.int(2), limit))


_DATAPATHS: dict = {}


@functools.cache
def secrets(level: int):
    """The static secrets of the targets' key file (keys.Secrets); zeros at level none."""
    from etun import keys

    return keys.Secrets.none() if level == 0 else keys.Secrets.from_prk(PRK)


def datapath(level: int, max_packet: int = 800, now_ms: int = 1000, role: str = "receiver"):
    """A datapath in the state a new one starts in (reset_datapath) with the targets' key file
    installed, built once per process and parameters: building one costs far more than opening
    a few packets."""
    from etun import _fast

    key = (level, max_packet, role)
    dp = _DATAPATHS.get(key)
    if dp is None:
        dp = _DATAPATHS[key] = _fast.Datapath(level, max_packet=max_packet, reassembly_kib=64,
                                               reassembly_timeout_ms=100)
        secrets(level).install(dp)
    _fast.reset_datapath(dp, now_ms)
    return dp
