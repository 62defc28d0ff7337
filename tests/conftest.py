"""Test-suite wiring: the fixtures the end-to-end and packaging tiers share.

The fixtures the end-to-end and packaging tiers share (root, namespaces, topologies torn down and
checked for leaks); with ETUN_REQUIRE_E2E=1 (CI, `make test`) a skipped end-to-end, packaging or
fuzz test is a failure."""

import logging
import os
import shutil
import subprocess

import pytest

from tests.e2e.topology import Topology

REQUIRE_E2E = os.environ.get("ETUN_REQUIRE_E2E", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    node = item.nodeid.replace("\\", "/")
    if REQUIRE_E2E and report.skipped and any(f"tests/{tier}" in node for tier in ("e2e", "packaging", "fuzz")):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"end-to-end test skipped, but ETUN_REQUIRE_E2E=1 requires it to run: {reason}"


@pytest.fixture
def etun_log(caplog, monkeypatch):
    """etun's own log lines at INFO, even after a daemon in this process set its logger not to propagate."""
    monkeypatch.setattr(logging.getLogger("etun"), "propagate", True)
    caplog.set_level(logging.INFO, logger="etun")
    return caplog


TOOLS = ("ip", "ping", "ethtool", "tcpdump", "iperf3", "nft", "keepalived")


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
