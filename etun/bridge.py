"""[bridge] for the running daemon: put the settings into the datapath, and turn the loops it
records into log lines (the datapath never logs): one when a loop begins, one when it is gone."""

import logging

from etun import _fast, filters

log = logging.getLogger("etun")

DIRECTIONS = (("tx", "LAN → tunnel"), ("rx", "tunnel → LAN"))


def install(datapath, config) -> None:
    """[bridge] (and its guard presets, which live in the nic_ingress filter) into the datapath."""
    b = config.bridge
    datapath.set_bridge(b.learning, b.mac_age, b.loop_protection, b.storm_limit)
    filters.install(datapath, config.filter, b.guard)


class LoopWatch:
    """Polled by the control loop: says once when a segment starts looping in a direction, and
    once when that loop is over (the datapath carried on for a whole hold without it coming back)."""

    def __init__(self, datapath, segments: dict[int, str]):
        self.datapath = datapath
        self.segments = segments               # segment id -> the name a log line gives it
        self.seen = {(seg, d): 0 for seg in segments for d, _ in DIRECTIONS}     # episodes logged
        self.open: dict[tuple[int, str], int] = {}     # loops under way -> holds when they began

    def poll(self, mode: str) -> None:
        for seg, name in self.segments.items():
            st = self.datapath.bridge_stats(seg)
            for d, label in DIRECTIONS:
                self._one(seg, name, d, label, st[d], st["now_ms"], mode)

    def _one(self, seg: int, name: str, d: str, label: str, s: dict, now: int, mode: str) -> None:
        key = (seg, d)
        if s["episodes"] > self.seen[key]:
            self.seen[key] = s["episodes"]
            self.open[key] = s["loops"]
            macs = ", ".join(s["loop_macs"]) or "?"
            if mode == "block":
                action = (f"not carrying {label} for {s['hold_ms'] / 1000:g} s, "
                          "longer each time it comes back")
            else:
                action = f'still carrying {label} (loop_protection = "{mode}")'
            log.warning("bridging loop on segment %s: MAC %s seen on both sides within %g s, again and "
                        "again (%s); %s", name, macs, _fast.BRIDGE_FLIP_WITHIN_MS / 1000,
                        "frames arriving " + ("from the LAN" if d == "tx" else "from the tunnel"), action)
        elif key in self.open and now >= s["hold_until_ms"] + s["hold_ms"]:
            holds = s["loops"] - self.open.pop(key) + 1
            log.info("bridging loop on segment %s is gone: %s carried again (held off %d time%s)",
                     name, label, holds, "" if holds == 1 else "s")
