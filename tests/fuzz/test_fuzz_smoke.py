"""The fuzz tier: each fuzz target (fuzz/) runs 30 s from its committed corpus under the sanitizer build; any crash or sanitizer report fails it."""

import os
import subprocess
import sys

import pytest

from tests import REPO

BUILD = REPO / "build" / "fuzz" / "etun"
TARGETS = sorted(p.stem[5:] for p in (REPO / "fuzz").glob("fuzz_*.py"))
SECONDS = int(os.environ.get("ETUN_FUZZ_SECONDS", "30"))


def test_every_target_has_a_committed_corpus():
    for target in TARGETS:
        corpus = REPO / "fuzz" / "corpus" / target
        assert corpus.is_dir() and any(corpus.iterdir()), f"fuzz/corpus/{target} is empty"


@pytest.mark.parametrize("target", TARGETS)
def test_the_fuzz_target_survives_its_corpus_and_30_seconds_of_mutations(target):
    if not any(BUILD.glob("_fast*.so")):
        pytest.skip("no sanitizer build (make fuzz-build)")
    r = subprocess.run([sys.executable, str(REPO / "fuzz" / "run.py"), "smoke", f"--seconds={SECONDS}", target],
                       capture_output=True, text=True, timeout=SECONDS + 300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr[-6000:]
    assert f"fuzz smoke {target}: ok" in r.stdout
