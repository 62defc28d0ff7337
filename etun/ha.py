"""Two gateways per site: this gateway's role, its switches, and the RARP frames a new active one sends.

docs/MANUAL.md, "High availability": keepalived's notify scripts ask for the switch between active
and standby; a new active gateway sends RARP frames so the LAN's switches move the far side's MACs
to its port at once.

A standby holds its sockets, keys and tables but carries nothing: its packet sockets queue no frame
(a drop-all filter), the datapath drops what still arrives (counted as `standby`), and the control
plane neither shakes hands nor answers. Becoming active undoes that, starts a handshake at once and
asks the peer for the MACs it knows on its side (session.py, FLAG_MACS); each comes back to be
announced on the segment it lives in.
"""

import logging
import os
import struct

from etun import lan

log = logging.getLogger("etun")

ETH_P_RARP = 0x8035
BROADCAST = b"\xff" * 6
MIN_FRAME = 60                    # an Ethernet frame without its FCS is at least this long
ZERO_VNET = bytes(10)             # the LAN fds take a virtio_net_hdr in front of every frame


def rarp(mac: bytes, tags: bytes = b"") -> bytes:
    """A RARP request from `mac` to everyone (what a hypervisor sends after moving a VM): a frame
    that teaches every switch on the way where `mac` lives now, and that no host answers."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 3, mac, bytes(4), mac, bytes(4))
    frame = BROADCAST + mac + tags + struct.pack("!H", ETH_P_RARP) + body
    return frame.ljust(MIN_FRAME + len(tags), b"\0")


class Role:
    """Active or standby, and what the last switches did."""

    def __init__(self, standby: bool, announce: bool, now_ms: int):
        self.active = not standby
        self.announce = announce
        self.since_ms = now_ms
        self.switches = 0
        self.announced = 0                    # RARP frames sent since start

    @property
    def name(self) -> str:
        return "active" if self.active else "standby"

    def switch(self, daemon, active: bool, now_ms: int) -> bool:
        """Become active (or standby); returns whether the role changed. Idempotent, and fast:
        socket filters and a flag; the handshake follows in the control loop."""
        if active == self.active:
            return False
        d = daemon
        if active:
            for port in d.ports:
                lan.set_capture(port, True)
            d.engine.standby = False
            d.session.takeover(now_ms)        # a handshake at once, and the far side's MACs
        else:
            d.engine.standby = True
            for port in d.ports:
                lan.set_capture(port, False)
            d.datapath.drop_sessions()
            d.session.stand_down()
            d.watch.up = False                # the peer is the active gateway's now
        self.active = active
        self.since_ms = now_ms
        self.switches += 1
        log.info("now %s (etun %s)%s", self.name, "activate" if active else "standby",
                 ": capturing and injecting again, shaking hands with the peer" if active
                 else ": no capture, no injection, no tunnel traffic")
        return True

    def announce_macs(self, daemon, macs: list[tuple[int, bytes]]) -> int:
        """One RARP frame per far-side MAC, into its segment's LAN with that segment's tags."""
        if not self.active or not self.announce or not macs:
            return 0
        sent = 0
        layout = daemon.config.segment.layout
        for segment, mac in macs:
            if not 0 <= segment < len(layout):
                continue
            port = daemon.ports[daemon.port_of[segment]]
            try:
                os.write(port.fd, ZERO_VNET + rarp(mac, daemon.datapath.segment_tags(segment)))
                sent += 1
            except OSError as e:
                log.debug("announcement for %s not sent on %s: %s", mac.hex(":"), port.name, e.strerror)
        self.announced += sent
        log.info("announced %d MAC address%s of the far side on the LAN (RARP)", sent, "" if sent == 1 else "es")
        return sent

    def status(self, now_ms: int) -> dict:
        return {"role": self.name, "since_s": round((now_ms - self.since_ms) / 1000, 1),
                "switches": self.switches, "announce": self.announce, "announced": self.announced}
