"""The fuzz runs' sanitizer environment (fuzz/run.py) catches heap errors, with allocation stacks only where a crash is reproduced."""

import importlib.util
import subprocess

import pytest

from tests import REPO

SPEC = importlib.util.spec_from_file_location("fuzz_run", REPO / "fuzz" / "run.py")
run = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run)

# A heap bug of the kind the datapath could have, made through libc's malloc so it needs no
# instrumented code: ASan's memcpy interceptor checks the bytes that ctypes.string_at copies.
BUG = """
import ctypes, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(64)
if sys.argv[1] == "heap-use-after-free":
    libc.free(p)
    ctypes.string_at(p, 8)
else:
    ctypes.string_at(p, 65)
print("not caught")
"""


def frames_after(report: str, heading: str) -> int:
    """How many stack frames the report lists under `heading`."""
    lines = report.split(heading, 1)[1].splitlines()[1:]
    count = 0
    for line in lines:
        if line.strip().startswith("#"):
            count += 1
        elif line.strip() and count:
            break
    return count


@pytest.mark.parametrize("bug", ["heap-use-after-free", "heap-buffer-overflow"])
@pytest.mark.parametrize("full_stacks", [False, True], ids=["fuzzing", "repro"])
def test_the_sanitizer_reports_the_heap_bug(bug, full_stacks):
    try:
        env = run.environment(full_stacks=full_stacks)
    except SystemExit:
        pytest.skip("atheris is not installed (make fuzz-build)")
    r = subprocess.run([run.PYTHON, "-c", BUG, bug], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not caught" not in r.stdout, r.stdout + r.stderr[-3000:]
    assert f"ERROR: AddressSanitizer: {bug}" in r.stderr, r.stderr[-3000:]
    heading = "freed by thread" if bug == "heap-use-after-free" else "allocated by thread"
    # Fuzzing records no allocation stack (only the interceptor's own frame); repro records it.
    assert (frames_after(r.stderr, heading) > 1) == full_stacks, r.stderr[-3000:]
