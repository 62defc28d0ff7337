"""systemd for `etun run`: sd_notify(3) messages and a watchdog fed only while the datapath moves.

The protocol is small: one datagram of KEY=value lines to the Unix socket named in $NOTIFY_SOCKET
(a path, or "@name" in the abstract namespace). It is spoken here directly: a package would add
a dependency to the one-file binary for some twenty lines (systemd-python also needs libsystemd at
build and run time; sdnotify has not been released since 2017).

The socket is connected once, at start, while etun is still root: a connected datagram socket
keeps working after etun becomes [run] user, whatever the permissions on the socket's directory.

In the one-file binary, Python runs two processes below the one systemd started (the staticx and
PyInstaller boot loaders), so the unit says NotifyAccess=all. etun does not claim MAINPID: systemd
cannot wait for a process that is not its child, and would lose the exit status Restart= needs.
"""

import logging
import os
import socket
import threading
import time

log = logging.getLogger("etun")

WATCHDOG_SHARE = 2              # keep-alives this many times per WatchdogSec, as sd_watchdog_enabled(3) advises
WATCHDOG_TICK_S = 0.2           # how often the watchdog thread looks at the heartbeats


def format_message(*fields: tuple[str, object]) -> bytes:
    """One notification: "KEY=value" lines. A value is one line: newlines would start new keys."""
    lines = []
    for key, value in fields:
        if not key or not key.replace("_", "").isalnum() or not key.isupper():
            raise ValueError(f"not a notification key: {key!r}")
        lines.append(f"{key}={' '.join(str(value).splitlines())}")
    return "\n".join(lines).encode()


def socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as an AF_UNIX address: a path, or "@name" for the abstract namespace
    (a leading NUL byte); None for other kinds (systemd 254+ also speaks vsock)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def ancestors(pid: int) -> list[int]:
    """pid and the processes above it, from /proc, up to init."""
    chain = [pid]
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        chain.append(pid)
    return chain


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Systemd:
    """What `etun run` tells the service manager; every method does nothing when none listens."""

    def __init__(self, environ=None, pid: int | None = None):
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        self.sock: socket.socket | None = None
        self.last_status: str | None = None
        self.watchdog_us = 0
        self.next_ping_us = 0
        self.last_beats: tuple | None = None
        self.withheld_since_us: int | None = None
        self.feeding: tuple[threading.Thread, threading.Event] | None = None
        where = environ.get("NOTIFY_SOCKET", "")
        if where:
            address = socket_address(where)
            if address is None:
                log.info("NOTIFY_SOCKET %s is not a Unix socket: systemd is not told how etun is", where)
                return
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(address)
            except OSError as e:
                sock.close()
                log.info("cannot reach NOTIFY_SOCKET %s: %s: systemd is not told how etun is", where, e.strerror)
                return
            self.sock = sock
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd started: in the one-file binary a boot loader
        # above us. A watchdog meant for another process (a child inherited the variables) is not ours.
        ours = not owner or (owner.isdigit() and int(owner) in ancestors(pid))
        if self.sock is not None and usec.isdigit() and int(usec) > 0 and ours:
            self.watchdog_us = int(usec)

    @property
    def active(self) -> bool:
        return self.sock is not None

    def send(self, *fields: tuple[str, object]) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(format_message(*fields))
        except OSError as e:
            log.debug("notification to systemd not sent: %s", e.strerror)

    def ready(self, status: str) -> None:
        """The tunnel's sockets are open and both datapath threads run."""
        self.last_status = status
        self.send(("READY", 1), ("STATUS", status))

    def status(self, text: str) -> None:
        """STATUS=, only when it changed."""
        if text != self.last_status:
            self.last_status = text
            self.send(("STATUS", text))

    def reloading(self) -> None:
        # MONOTONIC_USEC: systemd 253+ matches it against the reload it asked for (notify-reload).
        self.send(("RELOADING", 1), ("MONOTONIC_USEC", monotonic_usec()), ("STATUS", "reloading"))

    def reloaded(self, status: str) -> None:
        self.last_status = status
        self.send(("READY", 1), ("STATUS", status))

    def stopping(self) -> None:
        self.send(("STOPPING", 1), ("STATUS", "stopping"))

    def watchdog(self, beats: tuple[int, ...], names: tuple[str, ...], now_us: int | None = None) -> None:
        """Called every tick with each datapath thread's heartbeat (its loop count): keep systemd's
        watchdog fed while every one of them moved since the last keep-alive, and only then."""
        if not self.watchdog_us:
            return
        now_us = monotonic_usec() if now_us is None else now_us
        if now_us < self.next_ping_us:
            return
        if self.last_beats is None:
            self.last_beats = beats
        stuck = [name for name, beat, last in zip(names, beats, self.last_beats, strict=True) if beat == last]
        if stuck and self.next_ping_us:
            if self.withheld_since_us is None:
                self.withheld_since_us = now_us
                log.info("watchdog keep-alive withheld: the %s thread makes no progress; systemd restarts etun "
                         "if it stays so for %.0f s", " and ".join(stuck), self.watchdog_us / 1e6)
            return
        if self.withheld_since_us is not None:
            log.info("watchdog keep-alive resumed: the datapath moves again after %.1f s",
                     (now_us - self.withheld_since_us) / 1e6)
            self.withheld_since_us = None
        self.last_beats = beats
        self.next_ping_us = now_us + self.watchdog_us // WATCHDOG_SHARE
        self.send(("WATCHDOG", 1))

    def start_watchdog(self, beats, names: tuple[str, ...]) -> None:
        """Feed the watchdog from a thread of its own, which calls beats() for the heartbeats: what
        it watches is the datapath, and a control loop busy for a while (a lookup of the peer's
        name may take 10 s when DNS is down) must not starve it."""
        if not self.watchdog_us:
            return
        stop = threading.Event()

        def feed():
            while True:
                self.watchdog(beats(), names)
                if stop.wait(WATCHDOG_TICK_S):
                    return

        thread = threading.Thread(target=feed, name="etun-watchdog", daemon=True)
        thread.start()
        self.feeding = (thread, stop)

    def stop_watchdog(self) -> None:
        """Before the datapath stops on purpose, so that a stopping pump is not taken for a wedged one."""
        if self.feeding is not None:
            thread, stop = self.feeding
            stop.set()
            thread.join(1.0)
            self.feeding = None
