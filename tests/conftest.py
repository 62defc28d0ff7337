"""Test-suite wiring: with ETUN_REQUIRE_E2E=1 (CI, `make test`) a skipped end-to-end or packaging
test is a failure."""

import os

import pytest

REQUIRE_E2E = os.environ.get("ETUN_REQUIRE_E2E", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    node = item.nodeid.replace("\\", "/")
    if REQUIRE_E2E and report.skipped and ("tests/e2e" in node or "tests/packaging" in node):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"end-to-end test skipped, but ETUN_REQUIRE_E2E=1 requires it to run: {reason}"
