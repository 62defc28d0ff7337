"""A full fuzz run shared by several libFuzzer processes (fuzz/run.py --workers) reports as one run."""

import importlib.util
import json
import os
import time

import pytest

from tests import REPO

SPEC = importlib.util.spec_from_file_location("fuzz_run_workers", REPO / "fuzz" / "run.py")
run = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run)


def part(execs, seconds, cov, ft, corpus, rc=0, crash=None, log="w.log"):
    return {"target": "gro", "rc": rc, "seconds": seconds, "execs": execs, "execs_per_s": round(execs / seconds),
            "cov": cov, "ft": ft, "corpus": corpus, "native_counters": 31234, "crash": crash, "log": log}


def test_one_worker_is_its_own_figures():
    p = part(1000, 2.0, 700, 3000, 190)
    assert run.combine([p]) is p


def test_workers_add_their_executions_over_the_longest_time_and_keep_the_furthest_coverage():
    r = run.combine([part(6_000_000, 5000.0, 702, 3380, 199, log="a.log"),
                     part(5_000_000, 5010.0, 705, 3371, 201, log="b.log")])
    assert (r["execs"], r["seconds"], r["execs_per_s"]) == (11_000_000, 5010.0, 2196)
    assert (r["cov"], r["ft"], r["corpus"]) == (705, 3380, 201)
    assert (r["workers"], r["worker_execs"], r["logs"]) == (2, [6_000_000, 5_000_000], ["a.log", "b.log"])
    assert r["rc"] == 0 and r["crash"] is None


def test_a_crash_in_any_worker_is_the_runs():
    r = run.combine([part(10, 1.0, 1, 1, 1, log="a.log"),
                     part(20, 1.0, 1, 1, 1, rc=1, crash="build/fuzz/crashes/gro/crash-1", log="b.log")])
    assert r["rc"] == 1 and r["crash"] == "build/fuzz/crashes/gro/crash-1" and r["log"] == "b.log"
    assert r["execs"] == 30


# A target one of whose two processes (the first to claim FLAG) fails 3 s in; the other would
# run until its cap (minutes) if nothing stopped it.
CRASHY = """
import os, sys, time
import atheris
try:
    os.close(os.open(os.environ["ETUN_TEST_FLAG"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    FAILS = True
except FileExistsError:
    FAILS = False
START = time.monotonic()
def one(data):
    if FAILS and time.monotonic() - START > 3:
        raise RuntimeError("the failure this test plants")
atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


def test_a_crash_in_one_worker_stops_the_others_at_once(tmp_path, monkeypatch, capsys):
    try:
        run.environment()
    except SystemExit:
        pytest.skip("atheris is not installed (make fuzz-build)")
    here, build = tmp_path / "fuzz", tmp_path / "build"
    (here / "corpus" / "crashy").mkdir(parents=True)
    (here / "fuzz_crashy.py").write_text(CRASHY)
    for attr, path in (("HERE", here), ("CORPUS", here / "corpus"), ("BUILD", build),
                       ("CRASHES", build / "crashes")):
        monkeypatch.setattr(run, attr, str(path))
    monkeypatch.setenv("ETUN_TEST_FLAG", str(tmp_path / "flag"))
    started = time.monotonic()
    assert run.cmd_full(["crashy"], runs=10**9, minutes=5, workers=2) == 1
    assert time.monotonic() - started < 60
    figures = json.loads((build / "figures.json").read_text())["crashy"]
    assert figures["workers"] == 2 and figures["rc"] != 0
    assert figures["crash"] and os.path.exists(figures["crash"]) and "crash-" in figures["crash"]
    failed, = (log for log in figures["logs"] if "the failure this test plants" in open(log).read())
    stopped, = (log for log in figures["logs"] if log != failed)
    assert figures["log"] == failed
    # The other worker was asked to stop and printed libFuzzer's final figures on its way out.
    text = open(stopped).read()
    assert "exiting as requested" in text and "stat::number_of_executed_units" in text, text[-2000:]
    assert sum(figures["worker_execs"]) == figures["execs"] and min(figures["worker_execs"]) > 0
    assert f"make fuzz-repro TARGET=crashy CRASH={figures['crash']}" in capsys.readouterr().err
