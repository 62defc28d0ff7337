"""Paired A/B of `etun bench`'s loops between two builds: one long-lived process per tree, fed the same case in turn.

    python3 tests/bench_ab.py BEFORE_TREE AFTER_TREE ROUNDS "encrypt 1514 0.25,auth 1514 0.25"

Each tree is a checkout built in place with its own virtualenv at TREE/.venv. A case is
"level frame_bytes seconds". Even rounds ask BEFORE then AFTER, odd ones AFTER then BEFORE;
printed per case: the median of the rounds' ratios after/before - 1, and the smallest and
largest round (docs/PERFORMANCE.md).
"""

import json
import statistics
import subprocess
import sys

WORKER = """import sys, json
from etun import bench, _fast
print(_fast.__file__, file=sys.stderr)
for line in sys.stdin:
    level, frame, seconds = line.split()
    r = bench.measure(_fast.LEVELS[level], int(frame), float(seconds))
    print(json.dumps([r['seal']['gbit_per_s'], r['open']['gbit_per_s']]), flush=True)
"""


def start(tree: str) -> subprocess.Popen:
    return subprocess.Popen([f"{tree}/.venv/bin/python", "-c", WORKER], cwd=tree, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def ask(worker: subprocess.Popen, case: str) -> list:
    worker.stdin.write(case + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def main(before: str, after: str, rounds: str, cases: str) -> None:
    a, b = start(before), start(after)
    ratios = {case: ([], []) for case in cases.split(",")}
    for r in range(int(rounds)):
        for case, (seal, opened) in ratios.items():
            if r % 2 == 0:
                x, y = ask(a, case), ask(b, case)
            else:
                y, x = ask(b, case), ask(a, case)
            seal.append(y[0] / x[0] - 1)
            opened.append(y[1] / x[1] - 1)
    for case, runs in ratios.items():
        line = "  ".join(f"{name} {statistics.median(v):+.1%} [{min(v):+.1%}, {max(v):+.1%}]"
                         for name, v in zip(("seal", "open"), runs, strict=True))
        print(f"{case:20s} {line}")


if __name__ == "__main__":
    main(*sys.argv[1:])
