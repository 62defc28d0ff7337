"""Run the fuzz targets in fuzz/ under the sanitizer build: smoke (CI), full (figures), repro (one crash)."""

# make fuzz-build   builds build/fuzz (fuzz/build.sh)
# python fuzz/run.py smoke [--seconds=30] [TARGET...]   each target from the committed corpus
# python fuzz/run.py full [--runs=10000000] [--max-minutes=M] [--workers=N] [TARGET...]
#                                                        each target that many executions (shared
#                                                        by N libFuzzer processes on one corpus);
#                                                        figures into build/fuzz/figures.json, new
#                                                        inputs merged (minimised) into fuzz/corpus/
# python fuzz/run.py repro TARGET CRASH_FILE            re-run one input, sanitizer report shown
# python fuzz/run.py table                              the latest full runs' figures, as markdown
# python fuzz/run.py merge [TARGET...]                  what full runs learnt into fuzz/corpus/
#
# A crash leaves its input in build/fuzz/crashes/TARGET/ and prints the one command that
# reproduces it.

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(REPO, "build", "fuzz")
CRASHES = os.path.join(BUILD, "crashes")
CORPUS = os.path.join(HERE, "corpus")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
MAX_LEN = {"config": 4096, "lan": 9300, "gro": 16384}       # -max_len per target; default below
DEFAULT_MAX_LEN = 4096


def targets() -> list[str]:
    return sorted(f[5:-3] for f in os.listdir(HERE) if f.startswith("fuzz_") and f.endswith(".py"))


def environment(full_stacks: bool = False) -> dict:
    """The sanitizer runtime's environment. Fuzzing runs record no allocation stacks
    (malloc_context_size=0): with every Python object allocated through ASan, storing a stack per
    malloc in ASan's stack depot took a fifth of the handshake target's time (perf), and
    dropping it runs that target 1.39 times as fast. A report still names the faulting access
    with its stack and the crash input is kept; `repro` runs it again with `full_stacks`, so the
    report there also says where the memory was allocated and freed."""
    import importlib.util

    spec = importlib.util.find_spec("atheris")
    if spec is None:
        sys.exit("fuzz: atheris is not installed (make fuzz-build installs requirements-fuzz.txt)")
    runtime = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "asan_with_fuzzer.so")
    env = dict(os.environ)
    env.update({
        # ASan and libFuzzer in one preloaded runtime, as atheris documents for native extensions.
        "LD_PRELOAD": runtime,
        "PYTHONPATH": os.pathsep.join([BUILD, os.path.join(BUILD, "pure"), REPO]),
        # Every Python allocation through malloc, so ASan sees the bytes objects handed to the datapath.
        "PYTHONMALLOC": "malloc",
        # CPython's own allocations are never freed at exit: leak reports would all be its.
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:"
                        "handle_abort=1:symbolize=1" + ("" if full_stacks else ":malloc_context_size=0"),
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    })
    return env


STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)")
COUNTERS = re.compile(r"Loaded \d+ modules\s+\((\d+) inline 8-bit counters\)")
DONE = re.compile(r"Done (\d+) runs in (\d+) second")


class Siblings:
    """The libFuzzer processes of one run: the first to exit with an error (a crash, a sanitizer
    report, a timeout) stops the others with SIGUSR1, libFuzzer's graceful exit: final figures,
    exit status 0 (atheris takes SIGINT itself and stops without them). A crash is then reported
    when it happens, not when the other workers are done."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: list[subprocess.Popen] = []
        self.stopped: set[int] = set()
        self.failed = False

    def started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running.append(proc)
            late = self.failed
        if late:
            self.stop(proc)

    def exited(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running.remove(proc)
            if proc.returncode == 0 or self.failed:
                return
            self.failed = True
            others = list(self.running)
        for other in others:
            self.stop(other)

    def stop(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.stopped.add(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)


def run_target(name: str, args: list[str], log_path: str, siblings: Siblings | None = None) -> dict:
    """One libFuzzer run of a target; its figures from the log. With `siblings`, the run is one
    of several processes of a target: see Siblings."""
    os.makedirs(os.path.join(CRASHES, name), exist_ok=True)
    cmd = [PYTHON, os.path.join(HERE, f"fuzz_{name}.py"), f"-max_len={MAX_LEN.get(name, DEFAULT_MAX_LEN)}",
           f"-artifact_prefix={os.path.join(CRASHES, name)}/", "-print_final_stats=1", *args]
    # An executable that runs this target, for libFuzzer's -merge (it re-runs argv[0]).
    wrapper = os.path.join(BUILD, "bin", name)
    os.makedirs(os.path.dirname(wrapper), exist_ok=True)
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec "{PYTHON}" "{os.path.join(HERE, f"fuzz_{name}.py")}" "$@"\n')
    os.chmod(wrapper, 0o755)
    env = {**environment(), "ETUN_FUZZ_ARGV0": wrapper}
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        if siblings:
            siblings.started(proc)
        rc = proc.wait()
        if siblings:
            siblings.exited(proc)
    elapsed = time.monotonic() - started
    text = open(log_path, errors="replace").read()
    stats = STATS.findall(text)
    runs = int(stats[-1][0]) if stats else 0
    done = DONE.search(text)
    if done:
        runs = int(done.group(1))
    final = re.search(r"stat::number_of_executed_units:\s+(\d+)", text)
    if final:
        runs = int(final.group(1))
    counters = COUNTERS.findall(text)
    crash = re.search(r"Test unit written to (\S+)", text)
    return {
        "target": name, "rc": rc, "seconds": round(elapsed, 1), "execs": runs,
        "execs_per_s": round(runs / elapsed) if elapsed else 0,
        "cov": int(stats[-1][1]) if stats else None, "ft": int(stats[-1][2]) if stats else None,
        "corpus": int(stats[-1][3]) if stats else None,
        "native_counters": sum(int(c) for c in counters) if counters else None,
        "crash": crash.group(1) if crash else None, "log": log_path,
        "stopped": bool(siblings) and proc.pid in siblings.stopped,
    }


def report_crash(result: dict) -> None:
    print(f"fuzz: {result['target']}: CRASH (log {result['log']})", file=sys.stderr)
    tail = open(result["log"], errors="replace").read().splitlines()[-40:]
    print("\n".join(tail), file=sys.stderr)
    if result["crash"]:
        print(f"reproduce with: make fuzz-repro TARGET={result['target']} CRASH={result['crash']}", file=sys.stderr)


def cmd_smoke(names: list[str], seconds: int) -> int:
    failed = 0
    for name in names:
        seeds = os.path.join(CORPUS, name)
        with tempfile.TemporaryDirectory(prefix=f"etun-fuzz-{name}-") as scratch:
            # New inputs go to a scratch directory: the committed corpus stays as committed.
            result = run_target(name, [f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
                                       scratch, seeds],
                                os.path.join(BUILD, f"smoke-{name}.log"))
        ok = result["rc"] == 0 and result["crash"] is None
        print(f"fuzz smoke {name}: {'ok' if ok else 'FAILED'}: {result['execs']} execs in {result['seconds']} s, "
              f"cov {result['cov']}, ft {result['ft']}", flush=True)
        if not ok:
            report_crash(result)
            failed += 1
    return 1 if failed else 0


def cmd_full(names: list[str], runs: int, minutes: int, workers: int = 1) -> int:
    failed = 0
    for name in names:
        grown = os.path.join(BUILD, "corpus", name)
        seeds = os.path.join(CORPUS, name)
        os.makedirs(grown, exist_ok=True)
        cap = [f"-max_total_time={minutes * 60}"] if minutes else []
        each = -(-runs // workers)
        logs = [os.path.join(BUILD, f"full-{name}.log" if w == 0 else f"full-{name}-{w + 1}.log")
                for w in range(workers)]
        args = [f"-runs={each}", *cap, "-timeout=10", "-rss_limit_mb=4096", grown, seeds]
        siblings = Siblings() if workers > 1 else None
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run_target, [name] * workers, [args] * workers, logs, [siblings] * workers))
        result = combine(parts)
        result["runs_asked"] = runs
        result["minutes_cap"] = minutes
        result["date"] = time.strftime("%Y-%m-%d")
        record_figures(result)
        print(f"fuzz full {name}: rc {result['rc']}: {result['execs']} execs in {result['seconds']} s "
              f"({result['execs_per_s']}/s), cov {result['cov']}, ft {result['ft']}, corpus {result['corpus']}, "
              f"native counters {result['native_counters']}"
              + (f", {workers} workers: {' + '.join(str(p['execs']) for p in parts)} execs" if workers > 1 else ""),
              flush=True)
        if result["rc"] != 0 or result["crash"]:
            report_crash(result)
            failed += 1
            continue
        merge(name)
    return 1 if failed else 0


def combine(parts: list[dict]) -> dict:
    """One run's figures from its workers' (libFuzzer processes side by side on one corpus
    directory, each loading what the others found): executions add up over the longest worker's
    time; coverage, features and corpus are the furthest any worker got; a crash in any is the
    run's (not the stop it made the others take)."""
    if len(parts) == 1:
        return parts[0]
    worst = next((p for p in parts if (p["rc"] != 0 or p["crash"]) and not p.get("stopped")), parts[0])
    seconds = max(p["seconds"] for p in parts)
    execs = sum(p["execs"] for p in parts)
    best = {k: max((p[k] for p in parts if p[k] is not None), default=None) for k in ("cov", "ft", "corpus")}
    return {**worst, **best, "execs": execs, "seconds": seconds,
            "execs_per_s": round(execs / seconds) if seconds else 0, "workers": len(parts),
            "worker_execs": [p["execs"] for p in parts], "logs": [p["log"] for p in parts]}


def record_figures(result: dict) -> None:
    """Put one run's figures into build/fuzz/figures.json, read again just before: two `make fuzz`
    runs of different targets side by side (one a core) keep each other's figures."""
    path = os.path.join(BUILD, "figures.json")
    figures = json.load(open(path)) if os.path.exists(path) else {}
    figures[result["target"]] = result
    with open(path + ".new", "w") as f:
        json.dump(figures, f, indent=1)
    os.replace(path + ".new", path)


def merge(name: str) -> None:
    """Keep what a full run learnt, minimised: the committed corpus grows only by inputs that add
    coverage (libFuzzer -merge=1)."""
    seeds, grown = os.path.join(CORPUS, name), os.path.join(BUILD, "corpus", name)
    result = run_target(name, ["-merge=1", seeds, grown], os.path.join(BUILD, f"merge-{name}.log"))
    added = re.search(r"MERGE-OUTER: (\d+) new files", open(result["log"]).read())
    print(f"fuzz merge {name}: {added.group(1) if added else '?'} inputs added to fuzz/corpus/{name}", flush=True)


def cmd_repro(name: str, crash: str) -> int:
    cmd = [PYTHON, os.path.join(HERE, f"fuzz_{name}.py"), "-runs=1", crash]
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, env=environment(full_stacks=True), cwd=REPO)


def cmd_table() -> int:
    """The figures of the latest full runs as docs/RELIABILITY.md's table rows."""
    figures = json.load(open(os.path.join(BUILD, "figures.json")))
    print("| target | executions | seconds | exec/s | cov | ft | corpus | crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in sorted(figures):
        f = figures[name]
        label = f"{name} ({f['workers']} processes)" if f.get("workers", 1) > 1 else name
        print(f"| {label} | {f['execs']:,} | {f['seconds']:,.0f} | {f['execs_per_s']:,} | {f['cov']} | {f['ft']} | "
              f"{f['corpus']} | {'none' if f['rc'] == 0 and not f['crash'] else f['crash']} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=("smoke", "full", "repro", "list", "table", "merge"))
    p.add_argument("names", nargs="*")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--runs", type=int, default=10_000_000)
    p.add_argument("--max-minutes", type=int, default=0, help="full: stop a target after this long (0: no cap)")
    p.add_argument("--workers", type=int, default=1, help="full: libFuzzer processes sharing a target's runs")
    a = p.parse_intermixed_args()
    if a.mode == "table":
        return cmd_table()
    if a.mode == "merge":
        for name in a.names or targets():
            merge(name)
        return 0
    if a.mode == "list":
        print("\n".join(targets()))
        return 0
    if a.mode == "repro":
        if len(a.names) != 2:
            p.error("repro TARGET CRASH_FILE")
        return cmd_repro(*a.names)
    if a.workers < 1:
        p.error("--workers must be at least 1")
    names = a.names or targets()
    unknown = set(names) - set(targets())
    if unknown:
        p.error(f"unknown targets: {sorted(unknown)}; known: {targets()}")
    if not os.path.isdir(BUILD) or shutil.which(PYTHON) is None:
        sys.exit("fuzz: no sanitizer build; run make fuzz-build")
    return cmd_smoke(names, a.seconds) if a.mode == "smoke" else cmd_full(names, a.runs, a.max_minutes, a.workers)


if __name__ == "__main__":
    sys.exit(main())
