"""Reload (SIGHUP, `etun reload`): apply at once what can change under a running tunnel, refuse the rest.

FIELDS is the whole policy: every configuration field with the way a change to it is applied, or
RESTART. A reload is all or nothing. It reads the configuration and the key file (through the
privileged monitor once etun runs as [run] user), and refuses, with one log line per reason, a file
that does not validate or a change that needs a restart; otherwise it prepares every change that
can fail (resolve the peer, bind the metrics socket) before it commits any, then commits them and
logs one line saying what changed. None of it starts a new session: the pumps keep carrying frames
under the keys they hold.
"""

import dataclasses
import logging
import typing
from dataclasses import dataclass, field

from etun import _fast, bridge
from etun.errors import EtunError
from etun.metrics import MetricsServer
from etun.peer import SILENT_KEEPALIVES, is_name
from etun.transport import format_sockaddr, resolve_peer

log = logging.getLogger("etun")

RESTART = "restart"

# Every field of etun.config.Config, and how a change to it takes effect. A new table is one line
# each (e.g. ("bridge.learning", "bridge"), ("ha.announce", "announce")) plus, for a live one, its
# apply_<how> below; tests/unit/test_reload.py fails while any field is missing here.
FIELDS = (
    ("site.name", RESTART),
    ("segment.layout", RESTART),            # [lan], or the [[segment]] tables but their filters
    ("segment.filters", "filters"),
    ("tunnel.listen", RESTART),
    ("tunnel.peer", "peer"),
    ("tunnel.max_packet", RESTART),
    ("tunnel.keepalive", "timers"),
    ("security.level", RESTART),
    ("security.key_file", "secrets"),        # the material itself is compared by fingerprint
    ("security.rekey", "timers"),
    ("filter.nic_ingress", "filters"),
    ("filter.tunnel_ingress", "filters"),
    ("control.socket", RESTART),
    ("metrics.listen", "metrics"),
    ("ha.standby", "start_role"),           # the role at start; etun activate / standby change it
    ("ha.announce", "announce"),
    ("bridge.learning", "bridge"),
    ("bridge.mac_age", "bridge"),
    ("bridge.loop_protection", "bridge"),
    ("bridge.storm_limit", "bridge"),
    ("bridge.guard", "bridge"),
    ("run.user", RESTART),
)


@dataclass(frozen=True)
class Change:
    path: str                   # "tunnel.peer", or "key material"
    old: object
    new: object
    how: str                    # RESTART, or the name of the apply_ method

    def describe(self) -> str:
        if self.path == "segment.layout":
            return f"segments {show_segments(self.old)} -> {show_segments(self.new)}"
        if self.path == "segment.filters":
            return "[segment.filter.*] tables"
        table, _, key = self.path.rpartition(".")
        where = f"[{table}] {key}" if table and table != "filter" else f"[{self.path}]" if table else self.path
        return f"{where} {show(self.old)} -> {show(self.new)}"


def show(value) -> str:
    """A configuration value as a log line shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if hasattr(value, "rules") and hasattr(value, "default"):
        n = len(value.rules)
        return f"({n} rule{'s' if n != 1 else ''}, default {value.default})"
    return f'"{value}"' if isinstance(value, str) or hasattr(value, "host") else str(value)


def show_segments(layout) -> str:
    """Segments as a log line shows them: "office (eth1 VLAN 10), voice (eth1 VLAN 20)"."""
    return ", ".join(f"{g.name} ({'TAP ' + g.tap + ' on ' if g.mode == 'tap' else ''}{g.interface or 'no bridge'}"
                     + (f" VLAN {g.vlan_text}" if g.vlan else "") + ")" for g in layout)


def lookup(config, path: str):
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


def config_fields(config_class) -> list[str]:
    """Every key of every table of the configuration as "table.key" (a filter table is one key:
    it is compared, and swapped, whole)."""
    tables = typing.get_type_hints(config_class)
    return [f"{table}.{key.name}" for table in (f.name for f in dataclasses.fields(config_class)) if table != "path"
            for key in dataclasses.fields(tables[table])]


def diff(old, new, old_fingerprint: str | None = None, new_fingerprint: str | None = None) -> list[Change]:
    """What differs between two configurations, in FIELDS order, and the key material last."""
    changes = [Change(path, lookup(old, path), lookup(new, path), how)
               for path, how in FIELDS if lookup(old, path) != lookup(new, path)]
    if old_fingerprint != new_fingerprint and not any(c.path == "security.key_file" for c in changes):
        changes.append(Change("key material", old_fingerprint, new_fingerprint, "secrets"))
    return changes


@dataclass
class Outcome:
    """What a reload did: `applied` (may be empty: nothing changed) or `refused` reasons."""

    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused

    def answer(self) -> dict:
        return {"ok": self.ok, "applied": self.applied, "refused": self.refused}


class Reload:
    """One reload of a running Daemon (etun/daemon.py): prepare_<how> may fail and changes nothing;
    apply_<how> cannot fail and changes the running tunnel."""

    def __init__(self, daemon, config, secrets):
        self.d = daemon
        self.new = config
        self.secrets = secrets
        self.prepared: dict[str, object] = {}

    # -- prepare: whatever can fail ---------------------------------------------------------

    def prepare_peer(self):
        return resolve_peer(self.new.tunnel.peer, self.d.udp.family)

    def prepare_metrics(self):
        listen = self.new.metrics.listen
        return MetricsServer(listen, self.d.status) if listen is not None else None

    # -- apply: cannot fail ----------------------------------------------------------------

    def apply_peer(self, address: bytes) -> None:
        d = self.d
        d.engine.set_peer(address)
        d.peer_gen = d.engine.peer()[1]
        d.watch.configured = self.new.tunnel.peer
        if is_name(self.new.tunnel.peer.host):
            log.info("peer %s resolves to %s", self.new.tunnel.peer.host, format_sockaddr(address))
        # Greet the new address at once: a keepalive asking for an answer, sent to it by name. Sent
        # through the engine's peer, it could go to the old address instead: a packet from there,
        # arriving first, moves the peer back (roaming follows authenticated traffic).
        if d.role.active and d.session.established:
            for datagram in d.session.status_message(_fast.now_ms(), answer=True):
                d.send(datagram, address)

    def apply_timers(self, _) -> None:
        d, t = self.d, self.new
        d.keepalive_ms = t.tunnel.keepalive * 1000
        d.watch.silent_ms = SILENT_KEEPALIVES * d.keepalive_ms
        d.session.set_timers(d.keepalive_ms, t.security.rekey * 1000)

    def apply_filters(self, _) -> None:
        bridge.install(self.d.datapath, self.new)     # the guard presets live in nic_ingress

    def apply_bridge(self, _) -> None:
        bridge.install(self.d.datapath, self.new)

    def apply_secrets(self, _) -> None:
        d, s = self.d, self.secrets
        if s is None:
            return
        d.session.set_secrets(s)              # the datapath's handshake and probe keys, at once
        d.fingerprint = s.fingerprint

    def apply_start_role(self, _) -> None:
        """Nothing changes now: [ha] standby is the role a start begins in; a running etun's role
        is keepalived's to change (etun activate / etun standby)."""

    def apply_announce(self, _) -> None:
        self.d.role.announce = self.new.ha.announce

    def apply_metrics(self, server) -> None:
        d = self.d
        if d.metrics is not None:
            d.metrics.close()
        d.metrics = server
        if server is not None:
            server.start()


def run(daemon, reader) -> Outcome:
    """Reload the running daemon from what `reader` (etun.monitor) reads; logs the outcome."""
    out = Outcome()
    old = daemon.config
    try:
        new, secrets = reader.read()
    except EtunError as e:
        out.refused.append(e.message)
    else:
        fingerprint = secrets.fingerprint if secrets else None
        changes = diff(old, new, daemon.fingerprint, fingerprint)
        out.refused = [f"{c.describe()} needs a restart" for c in changes if c.how == RESTART]
        if not out.refused:
            r = Reload(daemon, new, secrets)
            hows = list(dict.fromkeys(c.how for c in changes))
            prepared: dict[str, object] = {}
            try:
                for how in hows:
                    prepared[how] = getattr(r, f"prepare_{how}", lambda: None)()
            except EtunError as e:
                out.refused.append(e.message)
                if prepared.get("metrics") is not None:
                    prepared["metrics"].close()     # bound, never served
            else:
                with daemon.lock:                       # status() sees the old or the new, never half
                    for how in hows:
                        getattr(r, f"apply_{how}")(prepared[how])
                    daemon.config = new
                out.applied = [c.describe() for c in changes]
    for reason in out.refused:
        log.info("reload refused: %s; etun goes on unchanged", reason)
    if out.ok:
        log.info("reloaded %s: %s", old.path, ", ".join(out.applied) if out.applied else "nothing changed")
    return out
