"""A full fuzz run shared by several libFuzzer processes (fuzz/run.py --workers) reports as one run."""

import importlib.util

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
