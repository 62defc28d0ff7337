"""`etun run`: set the site up in one visible order, pump until told to stop, tear down in reverse."""

import logging
import os
import select
import signal
import threading
import time

from etun import __version__, _fast, bridge, env, keys, monitor, notify, privileges, reload
from etun.config import LAN_SEGMENT, load_config
from etun.control import ControlServer, Pending
from etun.errors import RuntimeFailure
from etun.ha import Role
from etun.lan import open_ports
from etun.metrics import MetricsServer
from etun.peer import PeerWatch, is_name
from etun.probe import Prober, Responder
from etun.selftest import run_selftest
from etun.session import Session
from etun.status import build_macs, build_status, peer_status, session_status
from etun.transport import format_sockaddr, open_transport, resolve_peer, sockaddr_tuple

log = logging.getLogger("etun")

TICK_S = 0.2                    # the control loop wakes at least this often
PROBE_TICK_S = 0.02             # ... and more often while verify-peer probes are out
PUMP_JOIN_S = 5.0
DROP_LOG_INTERVAL_MS = 30_000   # at most one log line about new drops this often
MAC_SWEEP_MS = 10_000           # the MAC table's aged slots are emptied this often
HEAP_TRIM_MS = 60_000           # the C heap's free pages are given back this often
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13


def require_capabilities(mode: str) -> None:
    """etun needs CAP_NET_RAW and CAP_NET_ADMIN, and says so before touching anything."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return                      # no /proc: let the first privileged call say what is missing
    missing = [name for bit, name in ((CAP_NET_RAW, "CAP_NET_RAW"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"))
               if not effective & (1 << bit)]
    if missing:
        why = "to create the TAP device" if mode == "tap" else "to capture and inject frames on the LAN"
        raise RuntimeFailure(f"missing {' and '.join(missing)}: etun needs CAP_NET_RAW and CAP_NET_ADMIN "
                             f"{why}; run it as root or from the etun@.service unit")


def setup_logging(site: str) -> None:
    handler = logging.StreamHandler()
    # Under systemd the journal stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler.setFormatter(logging.Formatter(f"{stamp}etun[{site}]: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if env.debug() else logging.INFO)
    log.propagate = False


def trace_line(direction: str, reason: str, kind: int, raw: bytes, more: int) -> str:
    """One sample of the drop trace (Datapath.pop_trace) as the debug line docs/MANUAL.md shows:
    the reason and who caused it, a UDP source, a frame's source MAC, or "-" for nobody."""
    if kind == _fast.TRACE_SOCKADDR:
        who = format_sockaddr(raw)
    elif kind == _fast.TRACE_MAC:
        who = raw.hex(":")
    else:
        who = "-"
    also = f" (and {more} more since the last line)" if more else ""
    return f"drop trace: {direction} {reason} from {who}{also}"


class Daemon:
    """One site's running tunnel: the objects `etun run` sets up, owns and tears down."""

    def __init__(self, config):
        self.config = config
        self.level = _fast.LEVELS[config.security.level]
        self.keepalive_ms = config.tunnel.keepalive * 1000
        self.spin_us = env.spin_us()            # a bad value stops etun before it touches anything
        self.stopping = False
        self.pump_result: dict[str, int] = {}
        self.udp = self.datapath = self.engine = self.control = self.metrics = None
        self.ports: list = []                   # the LAN sides (lan.LanPort), each segment on one
        self.port_of: list[int] = []            # ... by segment id
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()
        # Reload, privileges, systemd (etun/reload.py, monitor.py, notify.py):
        self.lock = threading.Lock()            # a reload swaps config and filters; status() reads them
        self.reload_asked = False               # SIGHUP: reload at the top of the next loop turn
        self.files = monitor.LocalFiles(config.path)   # what a reload reads through
        self.systemd = notify.Systemd()         # connected now, while still root

    # -- setup, in order ---------------------------------------------------------------------

    def setup(self) -> None:
        c = self.config
        run_selftest()
        segments = c.segment.layout
        require_capabilities("tap" if any(g.mode == "tap" for g in segments) else "packet")
        if os.geteuid() == 0 and c.run.user != "root":
            privileges.resolve_user(c.run.user, str(c.path))    # an unknown user stops etun here
        if os.geteuid() != 0 or c.run.user != "root":
            privileges.require_droppable()                       # ... and so does an emulator's thread
        secrets = keys.load_site_secrets(c.security) or keys.Secrets.none()
        # First of all that is visible: a second etun for this site stops here, touching nothing.
        handlers = {"status": self.handle_status, "verify": self.handle_verify, "reload": self.handle_reload,
                    "activate": self.handle_role, "standby": self.handle_role, "macs": self.handle_macs}
        if env.test_hooks():
            handlers["stall"] = self.handle_stall
        self.control = ControlServer(c.control.socket, handlers)
        self.ports, self.port_of = open_ports(segments, capture=not c.ha.standby)
        self.udp = open_transport(c.tunnel.listen)
        peer = resolve_peer(c.tunnel.peer, self.udp.family)
        self.datapath = _fast.Datapath(self.level, c.tunnel.max_packet)
        self.datapath.trace = env.debug()
        # A segment without vlan alone on its port carries every frame, tags included.
        self.datapath.set_segments([(port, g.vlan, not g.vlan and self.port_of.count(port) == 1)
                                    for g, port in zip(segments, self.port_of, strict=True)])
        bridge.install(self.datapath, c)              # [bridge], and the filters with its guards
        self.loops = bridge.LoopWatch(self.datapath, {k: g.name for k, g in enumerate(segments)})
        self.next_sweep_ms = 0
        self.next_trim_ms = 0
        secrets.install(self.datapath)
        first = self.ports[0]
        self.engine = _fast.Engine(self.datapath, first.fd, first.kind, self.udp.fd,
                                   self.udp.port, self.udp.gso, self.udp.gro)
        for port in self.ports[1:]:
            self.engine.add_port(port.fd, port.kind)
        self.engine.set_peer(peer)
        self.engine.spin_us = self.spin_us
        self.engine.standby = c.ha.standby
        self.probers: list[tuple[Prober, object]] = []
        now = _fast.now_ms()
        self.session = Session(self.level, self.datapath, c.site.name, now, self.keepalive_ms,
                               c.security.rekey * 1000, segments=tuple(g.name for g in segments),
                               local_macs=self.local_macs)
        self.role = Role(c.ha.standby, c.ha.announce, now)
        if c.ha.standby:
            self.session.stand_down()
        self.responder = Responder(self.datapath, c.site.name, self.session.instance)
        self.watch = PeerWatch(c.tunnel.peer, self.udp.family, self.keepalive_ms, now)
        self.peer_gen = self.engine.peer()[1]
        if c.metrics.listen is not None:
            self.metrics = MetricsServer(c.metrics.listen, self.status)      # bound now, served by start_pumps
            log.info("Prometheus metrics at http://%s/metrics", c.metrics.listen)
        self.drops_logged_ms = now
        self.drops_seen = self.drop_totals()
        self.refused_logged_ms: dict[str, int] = {}
        self.fingerprint = secrets.fingerprint
        # Logged once everything is open, so a failing start prints just its one error line.
        for note in [n for port in self.ports for n in port.notes] + self.udp.notes:
            log.info("%s", note)
        resolved = f" ({format_sockaddr(peer)})" if is_name(c.tunnel.peer.host) else ""
        key = f", key fingerprint {self.fingerprint}" if self.fingerprint else ""
        log.info("etun %s running: level %s%s, %s, peer %s%s%s", __version__, c.security.level, key,
                 self.describe_lan(), c.tunnel.peer, resolved,
                 " (standby: no capture, injection or tunnel traffic until etun activate)" if c.ha.standby else "")

    def describe_lan(self) -> str:
        """The LAN side for the start-up line: "LAN eth1 (packet mode, MTU 1500)" for [lan];
        with segments, each with its NIC and VLAN."""
        segments = self.config.segment.layout
        if len(segments) == 1 and segments[0].name == LAN_SEGMENT and not segments[0].vlan:
            port = self.ports[0]
            return f"LAN {port.name} ({segments[0].mode} mode, MTU {port.mtu})"
        return f"{len(segments)} segments: " + ", ".join(
            f"{g.name} ({self.ports[p].name}" + (f" VLAN {g.vlan_text}" if g.vlan else "") + ")"
            for g, p in zip(segments, self.port_of, strict=True))

    def start_pumps(self) -> None:
        # Privileges go while this is the only thread: capabilities belong to each thread.
        self.files = monitor.settle(self.config, self.ports, self.control.path)
        self.engine.make_resident()          # all the memory the pumps will use, now (not the monitor's)
        for name, fn in (("tx", self.engine.run_tx), ("rx", self.engine.run_rx)):
            t = threading.Thread(target=self._pump, args=(name, fn), name=f"etun-{name}", daemon=True)
            t.start()
            self.threads.append(t)
        if self.metrics is not None:
            self.metrics.start()
        self.systemd.ready(self.systemd_status())
        self.systemd.start_watchdog(self.heartbeats, ("LAN -> tunnel", "tunnel -> LAN"))

    def heartbeats(self) -> tuple[int, int]:
        """Each datapath thread's loop count: the watchdog's proof that it turns."""
        pumps = self.engine.snapshot()["pumps"]
        return pumps["tx_loops"], pumps["rx_loops"]

    def _pump(self, name, fn) -> None:
        self.pump_result[name] = fn()
        os.write(self.wake_w, b"p")

    # -- the control loop -------------------------------------------------------------------

    def loop(self) -> int:
        while not self.stopping:
            timeout = min(TICK_S if not self.probers else PROBE_TICK_S,
                          max(0.0, (self.session.next_due_ms() - _fast.now_ms()) / 1000))
            # poll(), not select(): descriptors may be numbered beyond 1024.
            poller = select.poll()
            for fd in (self.engine.control_fd, self.wake_r, *self.control.fds()):
                poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(timeout * 1000)}
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            if self.reload_asked:
                self.reload_asked = False
                self.reload()
            self.control.handle(ready)
            for name, rc in self.pump_result.items():
                if not self.stopping:
                    port = self.ports[self.engine.snapshot()["lan_error_port"]]
                    side = f"LAN interface {port.name}" if name == "tx" else "UDP socket"
                    raise RuntimeFailure(f"{side} failed: {os.strerror(rc) if rc else 'pump stopped'}")
            now = _fast.now_ms()
            for ptype, data, source, session_id in self.engine.pop_control():
                self.handle_control(ptype, data, source, session_id, now)
            self.tick(now)
        return 0

    def handle_control(self, ptype: int, data: bytes, source: bytes, session_id: int, now: int) -> None:
        """One packet the rx pump admitted: a probe, a handshake message, or a SESSION message
        it opened. Replies go back where it came from. A standby talks to nobody."""
        if not self.role.active and ptype != _fast.TYPE_PROBE_REPLY:
            self.datapath.count_rx_drop("standby")
            return
        if ptype == _fast.TYPE_PROBE:
            self.answer_probe(data, source)
            return
        if ptype == _fast.TYPE_PROBE_REPLY:
            for prober, _ in self.probers:
                prober.incoming(data)
            return
        s = self.session
        if ptype == _fast.TYPE_SESSION:
            out = s.receive_session(data, session_id, now)
        elif ptype == _fast.TYPE_INIT:
            out = s.receive_init(data, now)
        elif ptype == _fast.TYPE_RESP:
            out = s.receive_resp(data, now)
        else:
            out = s.receive_cookie(data, now)
        if out.drop:
            self.datapath.count_rx_drop(out.drop)
            log.debug("%s from %s dropped: %s", _fast.TYPE_NAMES.get(ptype, "?"), format_sockaddr(source), out.drop)
        for event in out.events:
            log.info("%s (peer %s at %s)", event, s.peer_site or "?", format_sockaddr(source))
        for reply in out.replies:
            self.send(reply, source)
        if out.macs:
            # A MAC our own LAN shows is ours: no peer may move it to us (switch table poisoning).
            ours = set(self.local_macs())
            self.role.announce_macs(self, [m for m in out.macs if m not in ours])

    def local_macs(self) -> list[tuple[int, bytes]]:
        """(segment id, MAC) of the hosts seen on our LAN, newest first: what a new active gateway
        of the peer's pair announces on its LAN."""
        local = sorted((age, seg, mac) for mac, seg, side, age in self.datapath.bridge_macs() if side == "local")
        return [(seg, bytes.fromhex(mac.replace(":", ""))) for _, seg, mac in local]

    def handle_role(self, request, client) -> dict:
        """`etun activate` / `etun standby` (keepalived's notify scripts)."""
        changed = self.role.switch(self, request["request"] == "activate", _fast.now_ms())
        self.systemd.status(self.systemd_status())
        return {"ok": True, "role": self.role.name, "changed": changed}

    def explain_refused(self, now: int) -> None:
        """A misconfigured or outdated peer shows as packets the datapath refuses: say why,
        once in a while (the drop counters say how many)."""
        refused = self.datapath.refused()
        if refused is None:
            return
        reason, byte0, raw = refused
        if now - self.refused_logged_ms.get(reason, -DROP_LOG_INTERVAL_MS) < DROP_LOG_INTERVAL_MS:
            return
        self.refused_logged_ms[reason] = now
        version, level, _ = _fast.packet_type(bytes([byte0]))
        # Nothing authenticated these packets: the address is only what they claim.
        who = f"claiming to come from {format_sockaddr(raw)}" if raw else "from an unknown address"
        if reason == "version":
            log.info("packets %s speak etun protocol version %d, this etun speaks %d: run the same "
                     "etun version at both sites", who, version, _fast.WIRE_VERSION)
        elif reason == "auth":
            log.info("handshakes %s do not authenticate: if they are the peer's, the key material differs "
                     "(compare fingerprints: etun check shows ours, %s)", who, self.fingerprint)
        else:
            log.info("packets %s are at level %s, we run %s: both sites need the same [security] level",
                     who, _fast.LEVEL_NAMES.get(level, "?"), self.config.security.level)

    def answer_probe(self, datagram: bytes, source: bytes) -> None:
        """Another site's verify-peer asks; answer from the tunnel socket it reached."""
        try:
            replies = self.responder.answer(datagram, source, self.engine.peer()[0], self.watch.up)
        except _fast.Dropped as e:
            self.datapath.count_rx_drop(e.reason)
            return
        for reply in replies:
            try:
                self.udp.sock.sendto(reply, sockaddr_tuple(source))
            except OSError as e:
                log.debug("probe answer to %s not sent: %s", format_sockaddr(source), e.strerror)

    def handle_verify(self, request, client):
        """`etun verify-peer` on this host: probe the peer from the tunnel socket itself."""
        timeout = float(request.get("timeout", 5))
        prober = Prober(self.datapath, self.session.instance, self.config.tunnel.max_packet,
                        self.engine.peer()[0], min(max(timeout, 0.5), 300), self.udp.family)
        self.probers.append((prober, client))
        return Pending()

    def drive_probers(self) -> None:
        for prober, client in list(self.probers):
            for datagram in prober.outgoing():
                try:
                    self.udp.sock.sendto(datagram, sockaddr_tuple(prober.peer))
                except OSError:
                    pass
            if prober.done():
                self.probers.remove((prober, client))
                theirs = self.session.peer_segments
                self.control.finish(client, prober.report(None if theirs is None else (self.session.segments, theirs)))

    def send(self, datagram: bytes, to: bytes | None = None) -> None:
        """One control datagram to `to`, or to the peer."""
        peer = to or self.engine.peer()[0]
        try:
            self.udp.sock.sendto(datagram, sockaddr_tuple(peer))
        except OSError as e:
            log.debug("control packet to %s not sent: %s", format_sockaddr(peer), e.strerror)

    # -- drops ------------------------------------------------------------------------------

    def drop_totals(self) -> dict:
        counters = self.datapath.counters()
        return {(direction, reason): counters[side][reason]
                for side, direction in (("tx", "outbound"), ("rx", "inbound"))
                for reason in _fast.DROP_REASONS}

    def log_new_drops(self, now: int) -> None:
        """Drops are counted, not logged one by one: one line now and then says what grew."""
        if now - self.drops_logged_ms < DROP_LOG_INTERVAL_MS:
            return
        self.drops_logged_ms = now
        totals = self.drop_totals()
        grown = []
        for (direction, reason), total in totals.items():
            before = self.drops_seen[(direction, reason)]
            if total > before:
                grown.append(f"{direction} {reason} +{total - before}")
        self.drops_seen = totals
        if grown:
            log.info("dropped in the last %d s: %s (etun status shows all counters)",
                     DROP_LOG_INTERVAL_MS // 1000, ", ".join(grown))

    def log_drop_trace(self) -> None:
        """With the drop trace on: one debug line per sampled drop (at most one per reason,
        direction and second), naming who caused it."""
        for sample in self.datapath.pop_trace():
            log.debug("%s", trace_line(*sample))

    def toggle_debug(self, signum, frame) -> None:
        """SIGUSR1: debug log lines and the drop trace on, or off again."""
        if self.datapath is None:
            return                      # still setting up
        on = not self.datapath.trace
        self.datapath.trace = on
        log.setLevel(logging.DEBUG if on else logging.INFO)
        log.info("debug log and drop trace %s (SIGUSR1 toggles them)", "on" if on else "off")

    # -- the tick ---------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        s = self.session
        self.drive_probers()
        self.log_new_drops(now)
        self.log_drop_trace()
        self.explain_refused(now)
        self.loops.poll(self.config.bridge.loop_protection)
        if now >= self.next_sweep_ms:
            self.datapath.bridge_sweep(now)            # aged MACs give their segment's share back
            self.next_sweep_ms = now + MAC_SWEEP_MS
        if now >= self.next_trim_ms:
            _fast.trim_heap()                          # RSS stays flat across bursts of work
            self.next_trim_ms = now + HEAP_TRIM_MS
        if not self.role.active:
            return
        for datagram in s.tick(now):
            self.send(datagram)
        peer, gen, _ = self.engine.peer()
        if gen != self.peer_gen:
            self.peer_gen = gen
            log.info("peer moved to %s (authenticated traffic from there)", format_sockaddr(peer))
        last = self.last_heard_ms()
        changed = self.watch.update(last, s.established, now)
        if changed is True:
            rtt = f", rtt {s.rtt_ms:.1f} ms" if s.rtt_ms is not None else ""
            log.info("peer up: %s at %s%s", s.peer_site or "?", format_sockaddr(peer), rtt)
        elif changed is False:
            log.info("peer down: nothing authenticated for %d s", (now - last) // 1000 if last else 0)
        fresh = self.watch.resolve(last, peer, now)
        if fresh is not None:
            self.engine.set_peer(fresh)
            self.peer_gen = self.engine.peer()[1]
        self.systemd.status(self.systemd_status())

    def last_heard_ms(self) -> int:
        """When the peer last sent something authenticated: data (the pumps) or a SESSION message."""
        return max(self.engine.snapshot()["last_auth_ms"], self.session.last_rx_ms or 0)

    # -- status -----------------------------------------------------------------------------

    def handle_status(self, request, client) -> dict:
        return self.status()

    def handle_macs(self, request, client) -> dict:
        """`etun status --macs`: the MAC table (docs/STATUS.md)."""
        return build_macs(self.config, self.datapath.bridge_macs())

    # -- reload, systemd -------------------------------------------------------------------

    def ask_reload(self, signum, frame) -> None:
        """SIGHUP: reload at the next turn of the control loop (the handler only sets a flag)."""
        self.reload_asked = True

    def reload(self) -> dict:
        """Re-read the configuration and key file and apply what may change live (etun/reload.py)."""
        self.systemd.reloading()
        outcome = reload.run(self, self.files)
        self.systemd.reloaded(self.systemd_status())
        return outcome.answer()

    def handle_reload(self, request, client) -> dict:
        return self.reload()

    def handle_stall(self, request, client) -> dict:
        """Test hook (ETUN_TEST_HOOKS only): wedge a datapath thread, for the watchdog test."""
        self.engine.stall(_fast.PUMPS[request.get("pump", "rx")])
        log.info("test hook: the %s datapath thread is wedged on purpose", request.get("pump", "rx"))
        return {"ok": True}

    def systemd_status(self) -> str:
        if not self.role.active:
            return "standby: waiting for etun activate"
        address = self.engine.peer()[0]
        if self.watch.up and address:
            return f"peer {self.session.peer_site or '?'} up at {format_sockaddr(address)}"
        return f"waiting for peer {self.config.tunnel.peer}"

    def status(self) -> dict:
        """Everything `etun status` shows; status.py builds it (docs/STATUS.md)."""
        with self.lock:
            return self._status()

    def _status(self) -> dict:
        now = _fast.now_ms()
        address, _, roams = self.engine.peer()
        peer = peer_status(self.config, self.session, self.watch.up, address, roams, self.last_heard_ms(), now)
        return build_status(self.config, self.ports, self.port_of, self.datapath, self.engine.snapshot(),
                            uptime_s=time.monotonic() - self.started, peer=peer,
                            session=session_status(self.session, now), ha=self.role.status(now))

    # -- teardown, in reverse ---------------------------------------------------------------

    def teardown(self) -> None:
        self.systemd.stopping()
        self.systemd.stop_watchdog()
        if self.metrics is not None:
            self.metrics.close()
        if self.control is not None:
            self.control.close()
        if self.engine is not None:
            self.engine.stop()
        for t in self.threads:
            t.join(PUMP_JOIN_S)
        if self.udp is not None:
            self.udp.close()
        for port in self.ports:
            port.close()
        self.files.close()                      # the monitor switches LRO back on, removes the socket

    def stop(self, signum, frame) -> None:
        if not self.stopping:
            log.info("stopping (%s)", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGUSR1: self.toggle_debug,
                    signal.SIGHUP: self.ask_reload}
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            self.setup()
            self.start_pumps()
            return self.loop()
        finally:
            self.teardown()
            signal.set_wakeup_fd(-1)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self.wake_r)
            os.close(self.wake_w)


def run_site(path) -> int:
    config = load_config(path)
    setup_logging(config.site.name)
    code = Daemon(config).run()
    log.info("stopped")
    return code
