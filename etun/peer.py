"""The peer's liveness, and the re-resolution of a peer given by DNS name while it is silent.

The peer is up while authenticated packets keep arriving."""

import ipaddress
import logging

from etun.errors import RuntimeFailure
from etun.transport import format_sockaddr, resolve_peer

log = logging.getLogger("etun")

SILENT_KEEPALIVES = 3           # the peer is down after this many silent keepalive intervals
RESOLVE_MIN_MS = 10_000         # re-resolve a silent DNS peer every 3 keepalives, at most this often


def is_name(host: str) -> bool:
    """Whether a configured peer host is a DNS name rather than an address literal."""
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


class PeerWatch:
    """Decides, tick by tick, whether the peer is up and whether to look its name up again.

    `configured` is the [tunnel] peer (an etun.config.Address), `family` the tunnel socket's.
    """

    def __init__(self, configured, family: int, keepalive_ms: int, now_ms: int):
        self.configured = configured
        self.family = family
        self.silent_ms = SILENT_KEEPALIVES * keepalive_ms
        self.up = False
        self.resolved_ms = now_ms

    def update(self, last_heard_ms: int, settled: bool, now_ms: int) -> bool | None:
        """The peer was last heard from at last_heard_ms (0: never): returns True when it just
        came up, False when it just went down, None when nothing changed."""
        up = bool(last_heard_ms) and now_ms - last_heard_ms < self.silent_ms and settled
        if up == self.up:
            return None
        self.up = up
        return up

    def resolve(self, last_heard_ms: int, current: bytes | None, now_ms: int) -> bytes | None:
        """A peer given by name that has been silent for a while is looked up again (its
        address may have changed): returns the new raw address, or None to keep `current`."""
        silent = not last_heard_ms or now_ms - last_heard_ms >= self.silent_ms
        if not silent or not is_name(self.configured.host):
            return None
        if now_ms - self.resolved_ms < max(RESOLVE_MIN_MS, self.silent_ms):
            return None
        self.resolved_ms = now_ms
        try:
            fresh = resolve_peer(self.configured, self.family)
        except RuntimeFailure as e:
            log.info("%s", e.message)
            return None
        if fresh == current:
            return None
        log.info("peer %s now resolves to %s", self.configured.host, format_sockaddr(fresh))
        return fresh
