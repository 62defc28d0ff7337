"""`etun status`: the status document (docs/STATUS.md) built, asked for and shown.

The daemon builds it from what it holds; the command asks the running daemon for it and shows it,
for people or (--json) machines."""

import json
import signal
import sys
import time

from etun import __version__, _fast, filters
from etun.config import load_config
from etun.control import ask
from etun.errors import RuntimeFailure
from etun.transport import format_sockaddr

SCHEMA = 2                      # 2: per-segment filters, EtherTypes and counters under "segments"
STATUS_TIMEOUT_S = 3.0
CHECK_INTERVAL_S = 0.3          # --check: the two looks at the datapath threads are this far apart
DIRECTIONS = (("outbound", "LAN → tunnel"), ("inbound", "tunnel → LAN"))
TRAFFIC = ("frames", "bytes", "packets", "fragments", "reassembled", "control", "superframes")
OUTBOUND_TRAFFIC = ("frames", "bytes", "packets", "fragments", "control", "superframes")
INBOUND_TRAFFIC = ("frames", "bytes", "packets", "fragments", "reassembled", "control", "superframes")
TOP_ETHERTYPES = 8              # EtherTypes listed per direction


# -- the document ------------------------------------------------------------------------------

def _direction(raw: dict, traffic: tuple) -> dict:
    d = {name: raw[name] for name in traffic}
    d["drops"] = {name: raw[name] for name in _fast.DROP_REASONS}
    return d


def _segment_direction(raw: dict, table, stats: dict, filter_name: str) -> dict:
    d = {name: raw[name] for name in ("frames", "bytes")}
    d["drops"] = {name: raw[name] for name in raw if name not in ("frames", "bytes")}
    d["filter"] = {
        "name": filter_name,
        "rules": [{"rule": i + 1, "match": filters.describe(r), "hits": hits}
                  for i, (r, hits) in enumerate(zip(table.rules, stats["rules"], strict=True))],
        "default": {"action": table.default, "hits": stats["default"]},
        "guards": [{"guard": name, "hits": hits} for name, hits in stats.get("guards", {}).items()],
    }
    top = sorted(stats["ethertypes"].items(), key=lambda kv: -kv[1])[:TOP_ETHERTYPES]
    d["ethertypes"] = {("802.3" if et == 0 else f"0x{et:04x}"): n for et, n in top}
    return d


def _segments(config, ports, port_of, datapath, peer: dict) -> list[dict]:
    out = []
    for k, g in enumerate(config.segment.layout):
        port = ports[port_of[k]]
        counts = datapath.segment_counters(k)
        stats = {name: datapath.filter_stats(direction, k) for name, direction in filters.DIRECTIONS.items()}
        out.append({
            "name": g.name, "interface": port.name, "mode": g.mode, "vlan": g.vlan_text or None, "mtu": port.mtu,
            "at_peer": None if peer.get("segments") is None else g.name in peer["segments"],
            "directions": {
                "outbound": _segment_direction(counts["tx"], filters.table_of(config, k, "nic_ingress"),
                                               stats["nic_ingress"], "nic_ingress"),
                "inbound": _segment_direction(counts["rx"], filters.table_of(config, k, "tunnel_ingress"),
                                              stats["tunnel_ingress"], "tunnel_ingress"),
            },
        })
    return out


def _bridge(config, datapath, segments: dict) -> dict:
    """[bridge] as configured, and per segment the MAC table's size and the loop state."""
    b = config.bridge
    out = {"learning": b.learning, "mac_age": b.mac_age, "loop_protection": b.loop_protection,
           "storm_limit": b.storm_limit, "guard": list(b.guard), "macs_max": _fast.BRIDGE_ENTRIES,
           "table_bytes": _fast.BRIDGE_TABLE_BYTES, "segments": []}
    for seg, name in segments.items():
        st = datapath.bridge_stats(seg)
        one = {"segment": seg, "name": name, "macs": st["macs"], "macs_share": st["share"]}
        for key, direction in (("tx", "outbound"), ("rx", "inbound")):
            d = st[key]
            one[direction] = {k: d[k] for k in ("learnt", "moves", "flips", "full", "over_share", "loops", "held",
                                                "loop_macs")}
            one[direction]["hold_s"] = round(max(0, d["hold_until_ms"] - st["now_ms"]) / 1000, 1) if d["held"] else 0
        out["segments"].append(one)
    return out


def peer_status(config, session, up: bool, address: bytes | None, roams: int, last_heard_ms: int,
                now_ms: int) -> dict:
    """The `peer` table: what the control plane (session.Session, peer.PeerWatch's `up`) and the
    engine (where we send, how often it moved) know of the other site."""
    s = session
    return {
        "configured": str(config.tunnel.peer),
        "address": format_sockaddr(address) if address else None,
        "site": s.peer_site or None,
        "up": up,
        "last_seen_s": round((now_ms - last_heard_ms) / 1000, 3) if last_heard_ms else None,
        "rtt_ms": s.rtt_ms,
        "roams": roams,
        "segments": None if s.peer_segments is None else list(s.peer_segments),
        "segments_only_here": s.segments_only_here(),
        "segments_only_there": s.segments_only_there(),
    }


def session_status(session, now_ms: int) -> dict:
    """The `session` table: the running session of a session.Session."""
    s = session
    return {
        "established": s.established,
        "role": s.role,
        "age_s": round((now_ms - s.born_ms) / 1000, 1) if s.current_id is not None else None,
        "handshakes": s.handshakes,
    }


def build_macs(config, macs) -> dict:
    """`etun status --macs`: the datapath's (MAC, segment id, side, age in ms) entries, by segment,
    side and MAC, each segment named."""
    names = [g.name for g in config.segment.layout]
    return {"macs": [{"mac": mac, "segment": names[seg] if seg < len(names) else str(seg), "side": side,
                      "age_s": round(age / 1000, 1)}
                     for mac, seg, side, age in sorted(macs, key=lambda m: (m[1], m[2], m[0]))]}


def build_status(config, ports, port_of, datapath, snapshot: dict, *, uptime_s: float, peer: dict,
                 session: dict, ha: dict) -> dict:
    """The status document (docs/STATUS.md) of a running daemon: its configuration, its LAN
    ports (lan.LanPort; port_of: each segment's), the datapath's counters and filter hits, the
    engine's snapshot, and the peer_status() and session_status() tables."""
    counters = datapath.counters()
    return {
        "schema": SCHEMA,
        "etun": __version__,
        "site": config.site.name,
        "level": config.security.level,
        "uptime_s": round(uptime_s, 1),
        "tunnel": {"listen": str(config.tunnel.listen), "max_packet": config.tunnel.max_packet,
                   "gso": snapshot["gso"], "gro": snapshot["gro"]},
        "peer": peer,
        "keys": {"send_index": datapath.send_index, "recv_index": datapath.recv_index,
                 "settled": session["established"]},
        "session": session,
        "ha": ha,
        "pumps": snapshot["pumps"],
        "directions": {
            "outbound": _direction(counters["tx"], OUTBOUND_TRAFFIC),
            "inbound": _direction(counters["rx"], INBOUND_TRAFFIC),
        },
        "segments": _segments(config, ports, port_of, datapath, peer),
        "bridge": _bridge(config, datapath, {k: g.name for k, g in enumerate(config.segment.layout)}),
    }


# -- the command -------------------------------------------------------------------------------


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
    peer, keys, tun = st["peer"], st["keys"], st["tunnel"]
    ha = st["ha"]
    lines = [
        f"etun {st['etun']}, site {st['site']}, level {st['level']}, up {_uptime(st['uptime_s'])}, "
        f"{ha['role'].upper() if ha['role'] == 'standby' else ha['role']} for {_uptime(ha['since_s'])}",
        f"peer {peer['site'] or '?'} at {peer['address']}: {'up' if peer['up'] else 'DOWN'}, "
        f"last seen {_ago(peer['last_seen_s'])}, "
        f"rtt {'-' if peer['rtt_ms'] is None else format(peer['rtt_ms'], '.2f') + ' ms'}, "
        f"moved {peer['roams']} times",
        f"key index: sending {_dash(keys['send_index'])}, receiving {_dash(keys['recv_index'])}; "
        + _session_line(st.get("session", {})),
        f"UDP {tun['listen']} "
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
    only_here, only_there = peer.get("segments_only_here") or [], peer.get("segments_only_there") or []
    if only_here or only_there:
        lines.append("SEGMENT MISMATCH: " + "; ".join(
            f"{', '.join(names)} only {where}" for names, where in ((only_here, "here"), (only_there, "at the peer"))
            if names) + " (dropped: unknown_segment)")
    for g in st["segments"]:
        lines += _render_segment(g)
    if "bridge" in st:
        lines += [""] + _bridge_lines(st["bridge"])
    return "\n".join(lines)


def _render_segment(g: dict) -> list[str]:
    at_peer = {None: "peer's segments not known yet", True: "joined at the peer", False: "MISSING AT THE PEER"}
    out, inb = g["directions"]["outbound"], g["directions"]["inbound"]
    lines = ["", f"segment {g['name']}: {g['interface']}" + (f" VLAN {g['vlan']}" if g["vlan"] else "")
             + f" ({g['mode']} mode, MTU {g['mtu']}), {at_peer[g['at_peer']]}"]
    for name in ("frames", "bytes"):
        lines.append(f"  {name:22}{out[name]:>16,}{inb[name]:>16,}")
    for reason in out["drops"]:
        lines.append(f"  {reason:22}{out['drops'][reason]:>16,}{inb['drops'][reason]:>16,}")
    for d in (out, inb):
        f = d["filter"]
        lines.append(f"  filter {f['name']}:")
        for r in f["rules"]:
            lines.append(f"    rule {r['rule']:<3} {r['match']:<32}{r['hits']:>14,} hits")
        lines.append(f"    default {f['default']['action']:<32}{f['default']['hits']:>14,} hits")
        for g in f.get("guards", []):
            lines.append(f"    guard {g['guard']:<34}{g['hits']:>14,} hits")
    for label, d in (("LAN → tunnel", out), ("tunnel → LAN", inb)):
        shown = ", ".join(f"{et} {n:,}" for et, n in d["ethertypes"].items()) or "none yet"
        lines.append(f"  EtherTypes {label}: {shown}")
    return lines


def _bridge_lines(b: dict) -> list[str]:
    storm = f"{b['storm_limit']:,}/s" if b["storm_limit"] else "no limit"
    lines = [f"bridge: learning {'on' if b['learning'] else 'off'}, mac_age {b['mac_age']} s, "
             f"loop_protection {b['loop_protection']}, storm_limit {storm}, "
             f"guard {', '.join(b['guard']) or 'none'}"]
    for seg in b["segments"]:
        m = seg["macs"]
        share = seg["macs_share"]
        bound = (f"at most {b['macs_max']:,} in all" if share == b["macs_max"]
                 else f"at most {share:,} on this segment, {b['macs_max']:,} in all")
        lines.append(f"  segment {seg['name']}: {m['local']:,} MACs local, {m['remote']:,} remote ({bound})")
        for direction, label in DIRECTIONS:
            d = seg[direction]
            state = f"HELD OFF {d['hold_s']:g} s more (loop: {', '.join(d['loop_macs'])})" if d["held"] else "carrying"
            lines.append(f"    {label}: {state}; loops {d['loops']:,}, moves {d['moves']:,}, "
                         f"fast flips {d['flips']:,}, not learnt (table full) {d['full']:,}"
                         + (f", (segment's share held) {d['over_share']:,}" if d["over_share"] else ""))
    return lines


def render_macs(answer: dict) -> str:
    """`etun status --macs` as text: one MAC a line."""
    lines = [f"{'MAC':<19}{'segment':>8}  {'side':<7}{'age':>9}"]
    for m in answer["macs"]:
        lines.append(f"{m['mac']:<19}{m['segment']:>8}  {m['side']:<7}{m['age_s']:>7.1f} s")
    lines.append(f"{len(answer['macs']):,} MACs")
    return "\n".join(lines)


def _session_line(session: dict) -> str:
    if not session.get("established"):
        return "no session yet"
    return (f"session set up by {'us' if session['role'] == 'initiator' else 'the peer'} "
            f"{session['age_s']:.0f} s ago ({session['handshakes']} handshakes so far)")


def _dash(value) -> str:
    return "-" if value is None else str(value)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def check(config_path) -> int:
    """`etun status --check`, keepalived's track_script: 0 when the daemon answers and both
    datapath threads turn (their loop counts grow: even idle they turn ten times a second),
    else 1 with one line saying what is wrong. A standby is healthy."""
    try:
        first = fetch(config_path)["pumps"]
        time.sleep(CHECK_INTERVAL_S)
        second = fetch(config_path)["pumps"]
    except RuntimeFailure as e:                  # no daemon, or one that does not answer
        print(f"etun: {e.message}", file=sys.stderr)
        return 1
    stuck = [name for name, key in (("LAN → tunnel", "tx_loops"), ("tunnel → LAN", "rx_loops"))
             if second[key] <= first[key]]
    if stuck:
        print(f"etun: the {' and '.join(stuck)} datapath thread{'s' if len(stuck) > 1 else ''} stopped turning",
              file=sys.stderr)
        return 1
    return 0


def run_status(config_path, as_json: bool, watch: bool, macs: bool = False, health: bool = False) -> int:
    if health:
        return check(config_path)
    if macs:
        config = load_config(config_path)
        answer = ask(config.control.socket, {"request": "macs"}, STATUS_TIMEOUT_S)
        print(json.dumps(answer, indent=2) if as_json else render_macs(answer))
        return 0
    if not watch:
        st = fetch(config_path)
        print(json.dumps(st, indent=2) if as_json else render(st))
        return 0
    # Ctrl-C (and SIGTERM) end the watch at once, wherever it waits: in the socket call, in the
    # sleep. Python raises KeyboardInterrupt only if SIGINT was not ignored when it started, and
    # a shell ignores SIGINT in what it starts in the background (`cmd &` in a script, POSIX
    # 2.11): there a plain Ctrl-C or `kill -INT` never stopped the watch. Take both signals here.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
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
