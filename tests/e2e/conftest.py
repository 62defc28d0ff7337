"""End-to-end fixtures: root and network namespaces required; every topology torn down, leaks checked."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.topology import Topology

TOOLS = ("ip", "ping", "ethtool", "tcpdump", "iperf3", "nft")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"needs {tool} (make test installs it)"
    probe = f"etun-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if r.returncode != 0:
        return f"cannot create network namespaces: {r.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe])
    return None


@pytest.fixture(scope="session")
def e2e_ready():
    reason = _missing()
    if reason:
        pytest.skip(reason)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def topo(e2e_ready, request, tmp_path):
    """Build topologies on demand (topo(lan_mode="tap", ...)); all are torn down after the test,
    pass or fail, and the test fails if any namespace or etun process outlived it."""
    before = _namespaces()
    built: list[Topology] = []
    counter = [0]

    def make(**options) -> Topology:
        counter[0] += 1
        name = f"et{os.getpid() % 10000}{counter[0]}"
        t = Topology(name=name, workdir=tmp_path / name, **options)
        built.append(t)
        try:
            return t.up()
        except BaseException:
            t.down()
            raise

    yield make
    procs = [e.proc for t in built for e in t.etuns.values()]
    for t in built:
        t.down()
    assert all(p.poll() is not None for p in procs), "an etun process outlived its topology"
    ours = tuple(f"{t.name}-" for t in built)
    leaked = {ns for ns in _namespaces() - before if ns.startswith(ours)}
    assert not leaked, f"namespaces leaked: {sorted(leaked)}"


def etun_cli(t: Topology, site: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    cmd = " ".join([sys.executable, "-m", "etun.cli", *args])
    return t.run(cmd, f"g{site}", check=False, capture=True, timeout=timeout)


def status(t: Topology, site: str) -> dict:
    r = etun_cli(t, site, "status", "--json", str(t.workdir / f"{site}.toml"))
    assert r.returncode == 0, r.stdout
    return json.loads(r.stdout)


def wait_until(predicate, timeout: float = 10, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
