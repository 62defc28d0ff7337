"""wait_until: poll a condition until it holds or a deadline passes, for tests of threads and processes."""

import time


def wait_until(predicate, timeout: float = 10, interval: float = 0.1, what: str = "condition"):
    """The first truthy value of predicate(), polled every `interval` s; AssertionError naming
    `what` when none came within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
