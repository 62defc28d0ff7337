"""One token bucket for every budget the control plane keeps against floods (answers, probes)."""

import time


class TokenBucket:
    """`rate` tokens a second, at most `burst` held (default: one second's worth); starts full.

    The clock is seconds from time.monotonic, or the caller's own (`now` on take()), so the same
    class serves budgets kept in milliseconds of the datapath's clock.
    """

    def __init__(self, rate: float, burst: float | None = None, now: float | None = None):
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.tokens = self.burst
        self.at = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Take one token if there is one."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
