"""`etun run`: set the site up in one visible order, pump until told to stop, tear down in reverse."""

import logging
import os
import select
import signal
import threading
import time

from etun import __version__, _fast, env, filters, keys
from etun.config import load_config
from etun.control import ControlServer, Pending
from etun.errors import RuntimeFailure
from etun.lan import open_lan
from etun.metrics import MetricsServer
from etun.peer import PeerWatch, is_name
from etun.probe import Prober, Responder
from etun.selftest import run_selftest
from etun.session import Session
from etun.status import build_status
from etun.transport import format_sockaddr, open_transport, resolve_peer, sockaddr_tuple

log = logging.getLogger("etun")

TICK_S = 0.2                    # the control loop wakes at least this often
PROBE_TICK_S = 0.02             # ... and more often while verify-peer probes are out
PUMP_JOIN_S = 5.0
DROP_LOG_INTERVAL_MS = 30_000   # at most one log line about new drops this often
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


def describe_trace_address(kind: int, raw: bytes) -> str:
    if kind == _fast.TRACE_SOCKADDR:
        return format_sockaddr(raw)
    if kind == _fast.TRACE_MAC:
        return raw.hex(":")
    return "-"


class Daemon:
    """One site's running tunnel: the objects `etun run` sets up, owns and tears down."""

    def __init__(self, config):
        self.config = config
        self.level = _fast.LEVELS[config.security.level]
        self.keepalive_ms = config.tunnel.keepalive * 1000
        self.spin_us = env.spin_us()            # a bad value stops etun before it touches anything
        self.stopping = False
        self.pump_result: dict[str, int] = {}
        self.lan = self.udp = self.datapath = self.engine = self.control = self.metrics = None
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()

    # -- setup, in order ---------------------------------------------------------------------

    def setup(self) -> None:
        c = self.config
        run_selftest()
        require_capabilities(c.lan.mode)
        secrets = keys.load_secrets(c.security.key_file) if self.level != _fast.LEVEL_NONE else None
        control_key = secrets.control_key if secrets else None
        # First of all that is visible: a second etun for this site stops here, touching nothing.
        self.control = ControlServer(c.control.socket, {"status": self.handle_status,
                                                        "verify": self.handle_verify})
        self.lan = open_lan(c.lan)
        self.udp = open_transport(c.tunnel.listen)
        peer = resolve_peer(c.tunnel.peer, self.udp.family)
        self.datapath = _fast.Datapath(self.level, c.tunnel.max_packet)
        self.datapath.trace = env.debug()
        filters.install(self.datapath, c.filter)
        if control_key is not None:
            self.datapath.set_control_key(control_key)
        self.engine = _fast.Engine(self.datapath, self.lan.fd, self.lan.kind, self.udp.fd,
                                   self.udp.port, self.udp.gso, self.udp.gro)
        self.engine.set_peer(peer)
        self.engine.spin_us = self.spin_us
        self.responder = Responder(self.level, control_key, c.site.name)
        self.control_key = control_key
        self.probers: list[tuple[Prober, object]] = []
        now = _fast.now_ms()
        self.session = Session(self.level, self.datapath, c.site.name, secrets.prk if secrets else None,
                               control_key, now, self.keepalive_ms, c.security.rekey * 1000)
        self.watch = PeerWatch(c.tunnel.peer, self.udp.family, self.keepalive_ms, now)
        self.peer_gen = self.engine.peer()[1]
        if c.metrics.listen is not None:
            self.metrics = MetricsServer(c.metrics.listen, self.status)
            log.info("Prometheus metrics at http://%s/metrics", c.metrics.listen)
        self.drops_logged_ms = now
        self.drops_seen = self.drop_totals()
        self.hello_refused_ms: dict[str, int] = {}
        self.fingerprint = secrets.fingerprint if secrets else None
        # Logged once everything is open, so a failing start prints just its one error line.
        for note in self.lan.notes + self.udp.notes:
            log.info("%s", note)
        resolved = f" ({format_sockaddr(peer)})" if is_name(c.tunnel.peer.host) else ""
        key = f", key fingerprint {self.fingerprint}" if secrets else ""
        log.info("etun %s running: level %s%s, LAN %s (%s mode, MTU %d), peer %s%s", __version__,
                 c.security.level, key, self.lan.name, c.lan.mode, self.lan.mtu, c.tunnel.peer, resolved)

    def start_pumps(self) -> None:
        for name, fn in (("tx", self.engine.run_tx), ("rx", self.engine.run_rx)):
            t = threading.Thread(target=self._pump, args=(name, fn), name=f"etun-{name}", daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, name, fn) -> None:
        self.pump_result[name] = fn()
        os.write(self.wake_w, b"p")

    # -- the control loop -------------------------------------------------------------------

    def loop(self) -> int:
        while not self.stopping:
            timeout = min(TICK_S if not self.probers else PROBE_TICK_S,
                          max(0.0, (self.session.next_hello_ms - _fast.now_ms()) / 1000))
            # poll(), not select(): descriptors may be numbered beyond 1024.
            poller = select.poll()
            for fd in (self.engine.control_fd, self.wake_r, *self.control.fds()):
                poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(timeout * 1000)}
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            self.control.handle(ready)
            for name, rc in self.pump_result.items():
                if not self.stopping:
                    side = "LAN interface " + self.lan.name if name == "tx" else "UDP socket"
                    raise RuntimeFailure(f"{side} failed: {os.strerror(rc) if rc else 'pump stopped'}")
            now = _fast.now_ms()
            for datagram, source in self.engine.pop_control():
                self.handle_control(datagram, source, now)
            self.tick(now)
        return 0

    def handle_control(self, datagram: bytes, source: bytes, now: int) -> None:
        try:
            _, ptype, _, _ = _fast.read_control(datagram)
        except _fast.Dropped as e:
            # The pump queues unverified control packets (rate-limited) for this loop to judge.
            self.datapath.count_rx_drop(e.reason)
            return
        if ptype == _fast.TYPE_PROBE:
            self.answer_probe(datagram, source)
            return
        if ptype == _fast.TYPE_PROBE_REPLY:
            for prober, _ in self.probers:
                prober.incoming(datagram)
            return
        out = self.session.receive(datagram, now)
        if out.drop:
            self.datapath.count_rx_drop(out.drop)
            self.explain_refused_hello(out.drop, datagram, source, now)
            return
        for event in out.events:
            log.info("%s (peer %s at %s)", event, self.session.peer_site or "?", format_sockaddr(source))
        if out.roam and self.level != _fast.LEVEL_NONE:
            current = self.engine.peer()[0]
            if current != source:
                self.engine.set_peer(source, roam=True)
                log.info("peer moved to %s", format_sockaddr(source))
        self.peer_gen = self.engine.peer()[1]
        if out.answer:
            # Answer where the HELLO came from: a peer that restarted at a new address can only
            # learn our challenge there (same size as its HELLO, rate-limited: no amplifier).
            self.send_hello(now, to=source)

    def explain_refused_hello(self, reason: str, datagram: bytes, source: bytes, now: int) -> None:
        """A misconfigured peer shows as HELLOs we refuse: say why, once in a while."""
        if reason not in ("auth", "level_mismatch") or now - self.hello_refused_ms.get(reason, -1e12) < \
                DROP_LOG_INTERVAL_MS:
            log.debug("HELLO from %s dropped: %s", format_sockaddr(source), reason)
            return
        self.hello_refused_ms[reason] = now
        if reason == "auth":
            log.info("HELLOs from %s do not authenticate: the key material differs (compare "
                     "fingerprints: etun check shows ours, %s)", format_sockaddr(source), self.fingerprint)
        else:
            theirs = _fast.LEVEL_NAMES.get(_fast.read_control(datagram)[0], "?")
            log.info("HELLOs from %s are at level %s, we run %s: both sites need the same [security] level",
                     format_sockaddr(source), theirs, self.config.security.level)

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
        prober = Prober(self.level, self.control_key, self.config.tunnel.max_packet,
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
                self.control.finish(client, prober.report())

    def send_hello(self, now: int, to: bytes | None = None) -> None:
        peer = to or self.engine.peer()[0]
        try:
            self.udp.sock.sendto(self.session.hello(now), sockaddr_tuple(peer))
        except OSError as e:
            log.debug("HELLO to %s not sent: %s", format_sockaddr(peer), e.strerror)

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
        for direction, reason, kind, address, more in self.datapath.pop_trace():
            also = f" (and {more} more since the last line)" if more else ""
            log.debug("drop trace: %s %s from %s%s", direction, reason,
                      describe_trace_address(kind, address), also)

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
        if s.hello_due(now):
            self.send_hello(now)
        s.rotate_if_due(now)
        peer, gen, _ = self.engine.peer()
        if gen != self.peer_gen:
            self.peer_gen = gen
            log.info("peer moved to %s (authenticated traffic from there)", format_sockaddr(peer))
        last = self.last_heard_ms()
        changed = self.watch.update(last, s.settled, now)
        if changed is True:
            rtt = f", rtt {s.rtt_ms:.1f} ms" if s.rtt_ms is not None else ""
            log.info("peer up: %s at %s%s", s.peer_site or "?", format_sockaddr(peer), rtt)
        elif changed is False:
            log.info("peer down: nothing authenticated for %d s", (now - last) // 1000 if last else 0)
        fresh = self.watch.resolve(last, peer, now)
        if fresh is not None:
            self.engine.set_peer(fresh)
            self.peer_gen = self.engine.peer()[1]

    def last_heard_ms(self) -> int:
        """When the peer last sent something authenticated: data (the pumps) or a HELLO."""
        return max(self.engine.snapshot()["last_auth_ms"], self.session.last_rx_ms or 0)

    # -- status -----------------------------------------------------------------------------

    def handle_status(self, request, client) -> dict:
        return self.status()

    def status(self) -> dict:
        """Everything `etun status` shows; status.py builds it (docs/STATUS.md)."""
        s, now = self.session, _fast.now_ms()
        address, _, roams = self.engine.peer()
        last = self.last_heard_ms()
        peer = {
            "configured": str(self.config.tunnel.peer),
            "address": format_sockaddr(address) if address else None,
            "site": s.peer_site or None,
            "up": self.watch.up,
            "last_seen_s": round((now - last) / 1000, 3) if last else None,
            "rtt_ms": s.rtt_ms,
            "roams": roams,
        }
        return build_status(self.config, self.lan, self.datapath, self.engine.snapshot(),
                            uptime_s=time.monotonic() - self.started, peer=peer, settled=s.settled)

    # -- teardown, in reverse ---------------------------------------------------------------

    def teardown(self) -> None:
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
        if self.lan is not None:
            self.lan.close()

    def stop(self, signum, frame) -> None:
        if not self.stopping:
            log.info("stopping (%s)", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGUSR1: self.toggle_debug}
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
