"""anon_kib: this process's anonymous resident memory (RssAnon in /proc/self/status), for tests of heap growth."""


def anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
