"""[bridge] for the running daemon: its settings into the datapath, its loops into log lines.

The datapath never logs: the loops it records become one line when a loop begins and one when it
is gone."""

import logging

from etun import _fast, filters

log = logging.getLogger("etun")

DIRECTIONS = (("tx", "LAN → tunnel"), ("rx", "tunnel → LAN"))


def install(datapath, config) -> None:
    """[bridge] (and its guard presets, which live in the nic_ingress filter) into the datapath."""
    b = config.bridge
    datapath.set_bridge(b.learning, b.mac_age, b.loop_protection, b.storm_limit)
    filters.install(datapath, config)


class LoopWatch:
    """Polled by the control loop: says once when a segment starts looping, naming the MACs and
    the directions held off, and once when the loop is over (etun carried on for a whole hold
    without it coming back). A loop shows in both directions within milliseconds; it is one
    loop, one line."""

    def __init__(self, datapath, segments: dict[int, str]):
        self.datapath = datapath
        self.segments = segments               # segment id -> the name a log line gives it
        self.seen = {(seg, d): 0 for seg in segments for d, _ in DIRECTIONS}     # episodes told
        self.loops_at_start: dict[int, int] = {}      # segments looping -> their holds when it began

    def poll(self, mode: str) -> None:
        for seg, name in self.segments.items():
            st = self.datapath.bridge_stats(seg)
            fresh = [(d, label) for d, label in DIRECTIONS if st[d]["episodes"] > self.seen[(seg, d)]]
            for d, _ in fresh:
                self.seen[(seg, d)] = st[d]["episodes"]
            loops = sum(st[d]["loops"] for d, _ in DIRECTIONS)
            if fresh and seg not in self.loops_at_start:
                self.loops_at_start[seg] = loops - len(fresh)
                self._began(name, st, fresh, mode)
            elif not fresh and seg in self.loops_at_start and all(
                    st["now_ms"] >= st[d]["hold_until_ms"] + st[d]["hold_ms"] for d, _ in DIRECTIONS):
                holds = loops - self.loops_at_start.pop(seg)
                log.info("bridging loop on segment %s is gone: carrying frames both ways again "
                         "(held off %d time%s)", name, holds, "" if holds == 1 else "s")

    def _began(self, name: str, st: dict, fresh: list, mode: str) -> None:
        macs = ", ".join(dict.fromkeys(m for d, _ in fresh for m in st[d]["loop_macs"])) or "?"
        labels = " and ".join(label for _, label in fresh)
        if mode == "block":
            action = f"not carrying {labels} for {st[fresh[0][0]]['hold_ms'] / 1000:g} s, longer while it persists"
        else:
            action = f'still carrying {labels} (loop_protection = "{mode}")'
        log.warning("bridging loop on segment %s: MAC %s seen on both sides within %g s, again and again; %s",
                    name, macs, _fast.BRIDGE_FLIP_MS / 1000, action)
