"""`etun status`: ask the running daemon for its state and show it, for people or (--json) machines."""

import json
import sys
import time

from etun.config import load_config
from etun.control import ask

STATUS_TIMEOUT_S = 3.0
DIRECTIONS = (("outbound", "LAN → tunnel"), ("inbound", "tunnel → LAN"))
TRAFFIC = ("frames", "bytes", "packets", "fragments", "reassembled", "superframes")


def fetch(config_path) -> dict:
    config = load_config(config_path)
    return ask(config.control.socket, {"request": "status"}, STATUS_TIMEOUT_S)


def _ago(seconds) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s ago"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def render(st: dict) -> str:
    """The status as a screenful of text."""
    peer, keys, lan, tun = st["peer"], st["keys"], st["lan"], st["tunnel"]
    lines = [
        f"etun {st['etun']}, site {st['site']}, level {st['level']}, up {_uptime(st['uptime_s'])}",
        f"peer {peer['site'] or '?'} at {peer['address']}: {'up' if peer['up'] else 'DOWN'}, "
        f"last seen {_ago(peer['last_seen_s'])}, "
        f"rtt {'-' if peer['rtt_ms'] is None else format(peer['rtt_ms'], '.2f') + ' ms'}, "
        f"moved {peer['roams']} times",
        f"key index: sending {_dash(keys['send_index'])}, receiving {_dash(keys['recv_index'])}; "
        f"sessions {'settled' if keys['settled'] else 'being set up'}",
        f"LAN {lan['interface']} ({lan['mode']} mode, MTU {lan['mtu']}); UDP {tun['listen']} "
        f"(GSO {'on' if tun['gso'] else 'off'}, GRO {'on' if tun['gro'] else 'off'}), "
        f"max_packet {tun['max_packet']}",
        "",
        f"{'':24}{DIRECTIONS[0][1]:>16}{DIRECTIONS[1][1]:>16}",
    ]
    out, inb = st["directions"]["outbound"], st["directions"]["inbound"]
    for name in TRAFFIC:
        lines.append(f"{name:24}{out.get(name, 0):>16,}{inb.get(name, 0):>16,}")
    lines.append("drops")
    for reason in out["drops"]:
        lines.append(f"  {reason:22}{out['drops'][reason]:>16,}{inb['drops'][reason]:>16,}")
    for d in (out, inb):
        f = d["filter"]
        lines.append(f"filter {f['name']}:")
        for r in f["rules"]:
            lines.append(f"  rule {r['rule']:<3} {r['match']:<34}{r['hits']:>14,} hits")
        lines.append(f"  default {f['default']['action']:<34}{f['default']['hits']:>14,} hits")
    for label, d in (("LAN → tunnel", out), ("tunnel → LAN", inb)):
        shown = ", ".join(f"{et} {n:,}" for et, n in d["ethertypes"].items()) or "none yet"
        lines.append(f"EtherTypes {label}: {shown}")
    return "\n".join(lines)


def _dash(value) -> str:
    return "-" if value is None else str(value)


def run_status(config_path, as_json: bool, watch: bool) -> int:
    if not watch:
        st = fetch(config_path)
        print(json.dumps(st, indent=2) if as_json else render(st))
        return 0
    try:
        while True:
            st = fetch(config_path)
            if as_json:
                print(json.dumps(st), flush=True)
            else:
                sys.stdout.write("\033[H\033[2J" + render(st) + "\n")
                sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
