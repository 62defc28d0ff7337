"""The environment variables etun reads, each parsed in one place: ETUN_DEBUG and ETUN_SPIN_US."""

import os

from etun.errors import UsageError

DEFAULT_SPIN_US = 50
SPIN_US_MAX = 1_000_000


def debug() -> bool:
    """ETUN_DEBUG set to anything but "" or "0": debug log lines, the drop trace, tracebacks."""
    return os.environ.get("ETUN_DEBUG", "") not in ("", "0")


def spin_us() -> int:
    """How long a pump keeps polling after traffic before it sleeps (ETUN_SPIN_US, for tuning).

    A sleeping pump is woken by an interrupt on another CPU, which costs tens of microseconds
    on virtual machines; polling a little longer saves most wakeups under load for little CPU.
    """
    raw = os.environ.get("ETUN_SPIN_US", "")
    try:
        return max(0, min(int(raw), SPIN_US_MAX)) if raw else DEFAULT_SPIN_US
    except ValueError:
        raise UsageError(f'ETUN_SPIN_US: expected microseconds 0..{SPIN_US_MAX}, got "{raw}"') from None
