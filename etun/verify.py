"""`etun verify-peer`: probe the peer's etun and report each check as ok or a clear failure.

Probes leave from the running daemon's tunnel socket when there is a daemon (control.py's
"verify" request), else from a socket bound to the configured listen address; probe.py holds
the wire format and the logic of both ends.
"""

import json
import os
import select

from etun import _fast, keys
from etun.config import load_config
from etun.control import NoDaemon, ask
from etun.errors import UsageError
from etun.probe import Prober
from etun.selftest import run_selftest
from etun.transport import open_transport, resolve_peer, sockaddr_tuple

TIMEOUT_MIN_S, TIMEOUT_MAX_S = 0.5, 300


def render(site: str, report: dict) -> str:
    lines = [f"verify-peer {site} -> {report['peer']}"]
    for c in report["checks"]:
        lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    failed = sum(not c["ok"] for c in report["checks"])
    lines.append("all checks passed" if not failed else f"{failed} of {len(report['checks'])} checks failed")
    return "\n".join(lines)


def run_standalone(config, secrets: keys.Secrets, timeout_s: float) -> dict:
    """No daemon here: probe from our own listen address, as the daemon would."""
    datapath = _fast.Datapath(_fast.LEVELS[config.security.level], config.tunnel.max_packet)
    secrets.install(datapath)
    udp = open_transport(config.tunnel.listen)
    try:
        peer = resolve_peer(config.tunnel.peer, udp.family)
        prober = Prober(datapath, os.urandom(16), config.tunnel.max_packet, peer, timeout_s, udp.family)
        udp.sock.setblocking(False)
        while not prober.done():
            for datagram in prober.outgoing():
                try:
                    udp.sock.sendto(datagram, sockaddr_tuple(peer))
                except OSError:
                    pass                # counted as no answer, as a lost packet would be
            ready, _, _ = select.select([udp.sock], [], [], 0.05)
            while ready:
                try:
                    datagram = udp.sock.recv(65535)
                except BlockingIOError:
                    break
                prober.incoming(datagram)
        return prober.report()
    finally:
        udp.close()


def run_verify(config_path, timeout_s: float, as_json: bool) -> int:
    """The verify-peer command: through the running daemon if there is one, else on our own."""
    if not TIMEOUT_MIN_S <= timeout_s <= TIMEOUT_MAX_S:
        raise UsageError(f"--timeout: expected {TIMEOUT_MIN_S:g}..{TIMEOUT_MAX_S:g} seconds, got {timeout_s:g}")
    config = load_config(config_path)
    run_selftest()
    try:
        report = ask(config.control.socket, {"request": "verify", "timeout": timeout_s}, timeout_s + 5)
    except NoDaemon:
        secrets = keys.load_site_secrets(config.security) or keys.Secrets.none()
        report = run_standalone(config, secrets, timeout_s)
    print(json.dumps(report, indent=2) if as_json else render(config.site.name, report))
    return 0 if report["ok"] else 3
