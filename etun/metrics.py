"""The Prometheus endpoint ([metrics] listen): `etun status` as etun_* metrics at /metrics, through prometheus_client.

A custom collector builds every family from the daemon's status document at each scrape, so the
numbers are the ones `etun status` shows and nothing is counted twice. prometheus_client writes
the exposition: the text format 0.0.4, or OpenMetrics when the scraper's Accept header asks for it.
The HTTP side stays a small server of our own: a few connections at most, each timed out.
"""

import http.server
import os
import socket
import threading

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from etun.errors import RuntimeFailure

TRAFFIC_HELP = (
    ("frames", "Ethernet frames carried"),
    ("bytes", "Bytes of those frames"),
    ("packets", "Tunnel packets"),
    ("fragments", "Tunnel packets carrying part of a multi-packet frame"),
    ("reassembled", "Multi-packet frames put back together"),
    ("superframes", "GSO super-frames cut (outbound) or merged (inbound) by etun"),
    ("control", "Control packets: handshake, cookie, probe and SESSION messages"),
)


def families(st: dict) -> list:
    """The daemon's status (docs/STATUS.md) as metric families named etun_* (docs/STATUS.md,
    "Prometheus metrics"); a value the status does not know yet (null) is left out."""
    out = []

    def gauge(name, text, value, labels=(), **label_values):
        family = GaugeMetricFamily(name, text, labels=list(labels))
        if value is not None:
            family.add_metric([str(label_values[k]) for k in labels], value)
        out.append(family)
        return family

    gauge("etun_info", "etun version, site and security level", 1, ("version", "site", "level"),
          version=st["etun"], site=st["site"], level=st["level"])
    gauge("etun_uptime_seconds", "Seconds since this etun started", st["uptime_s"])
    peer = st["peer"]
    gauge("etun_peer_up", "1 while the peer is up", int(peer["up"]))
    gauge("etun_peer_last_seen_seconds", "Seconds since the peer's last authenticated packet", peer["last_seen_s"])
    rtt = peer["rtt_ms"]
    gauge("etun_peer_rtt_seconds", "Round-trip time to the peer's etun", None if rtt is None else rtt / 1000)
    roams = CounterMetricFamily("etun_peer_roams", "Times the peer was followed to a new address")
    roams.add_metric([], peer["roams"])
    out.append(roams)
    keys = GaugeMetricFamily("etun_key_index", "Current key index of the session", labels=["direction"])
    for direction, value in (("send", st["keys"]["send_index"]), ("receive", st["keys"]["recv_index"])):
        if value is not None:
            keys.add_metric([direction], value)
    out.append(keys)
    traffic = {name: CounterMetricFamily(f"etun_{name}", text, labels=["direction"]) for name, text in TRAFFIC_HELP}
    drops = CounterMetricFamily("etun_drops", "Frames or packets dropped, by reason", labels=["direction", "reason"])
    for direction, d in st["directions"].items():
        for name, family in traffic.items():
            if name in d:
                family.add_metric([direction], d[name])
        for reason, count in d["drops"].items():
            drops.add_metric([direction, reason], count)
    out += [*traffic.values(), drops]
    out += _segment_families(st["segments"])
    if "ha" in st:
        gauge("etun_ha_active", "1 while this gateway is the active one of its pair, 0 as standby",
              int(st["ha"]["role"] == "active"))
        gauge("etun_ha_role_seconds", "Seconds since this gateway last changed role (or started)", st["ha"]["since_s"])
        switches = CounterMetricFamily("etun_ha_switches",
                                       "Role changes since start (etun activate / etun standby that changed it)")
        switches.add_metric([], st["ha"]["switches"])
        out.append(switches)
        announced = CounterMetricFamily("etun_ha_announced", "RARP frames sent for the far side's MACs on takeover")
        announced.add_metric([], st["ha"]["announced"])
        out.append(announced)
    if "bridge" in st:
        out += bridge_families(st["bridge"])
    return out


def _segment_families(segments: list[dict]) -> list:
    """Per segment: frames, bytes, drops, filter hits, EtherTypes, and whether the peer has it."""
    frames = CounterMetricFamily("etun_segment_frames", "Ethernet frames carried, per segment",
                                 labels=["segment", "direction"])
    nbytes = CounterMetricFamily("etun_segment_bytes", "Bytes of those frames, per segment",
                                 labels=["segment", "direction"])
    drops = CounterMetricFamily("etun_segment_drops", "Frames of a segment dropped, by reason",
                                labels=["segment", "direction", "reason"])
    hits = CounterMetricFamily("etun_filter_hits", "Frames decided by each filter rule",
                               labels=["segment", "direction", "filter", "rule", "match"])
    ethertypes = CounterMetricFamily("etun_ethertype_frames", "Frames by EtherType (the most frequent)",
                                     labels=["segment", "direction", "ethertype"])
    at_peer = GaugeMetricFamily("etun_segment_at_peer", "1 when the peer has this segment, 0 when it lacks it",
                                labels=["segment"])
    for g in segments:
        name = g["name"]
        if g["at_peer"] is not None:
            at_peer.add_metric([name], int(g["at_peer"]))
        for direction, d in g["directions"].items():
            frames.add_metric([name, direction], d["frames"])
            nbytes.add_metric([name, direction], d["bytes"])
            for reason, count in d["drops"].items():
                drops.add_metric([name, direction, reason], count)
            f = d["filter"]
            for rule in f["rules"]:
                hits.add_metric([name, direction, f["name"], str(rule["rule"]), rule["match"]], rule["hits"])
            hits.add_metric([name, direction, f["name"], "default", f["default"]["action"]], f["default"]["hits"])
            for g in f.get("guards", []):
                hits.add_metric([name, direction, f["name"], "guard", g["guard"]], g["hits"])
            for ethertype, count in d["ethertypes"].items():
                ethertypes.add_metric([name, direction, ethertype], count)
    return [frames, nbytes, drops, hits, ethertypes, at_peer]


def bridge_families(b: dict) -> list:
    """The MAC table's size and the loop state per segment (docs/STATUS.md)."""
    macs = GaugeMetricFamily("etun_bridge_macs", "Live MACs in the table", labels=["segment", "side"])
    cap = GaugeMetricFamily("etun_bridge_macs_max", "MACs the table holds at most (all segments)")
    cap.add_metric([], b["macs_max"])
    loops = CounterMetricFamily("etun_bridge_loops", "Bridging loops detected (holds begun)",
                                labels=["segment", "direction"])
    held = GaugeMetricFamily("etun_bridge_held", "1 while a loop holds this direction off",
                             labels=["segment", "direction"])
    full = CounterMetricFamily("etun_bridge_not_learnt", "Source MACs not learnt: the table was full",
                               labels=["segment", "direction"])
    over = CounterMetricFamily("etun_bridge_over_share", "Source MACs not learnt: the segment held its share "
                               "of the table", labels=["segment", "direction"])
    for seg in b["segments"]:
        name = seg["name"]
        for side, n in seg["macs"].items():
            macs.add_metric([name, side], n)
        for direction in ("outbound", "inbound"):
            d = seg[direction]
            loops.add_metric([name, direction], d["loops"])
            held.add_metric([name, direction], int(d["held"]))
            full.add_metric([name, direction], d["full"])
            over.add_metric([name, direction], d["over_share"])
    return [macs, cap, loops, held, full, over]


class StatusCollector:
    """A prometheus_client collector that asks the daemon for its status at every scrape."""

    def __init__(self, status):
        self.status = status

    def collect(self):
        yield from families(self.status())


def make_registry(status) -> CollectorRegistry:
    """A registry holding etun's collector only (no process or Python metrics: the same names as
    before, and nothing else)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and Content-Type for a scraper that sent `accept`."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


SCRAPERS_MAX = 8                # connections served at once; more are closed at once
SCRAPE_TIMEOUT_S = 5.0          # a connection that sends nothing is closed after this long


class MetricsServer:
    """An HTTP server in its own threads, a few at most. The socket is bound at construction (etun
    may still be root then); start() serves it once etun runs as [run] user."""

    def __init__(self, listen, status):
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        slots = threading.BoundedSemaphore(SCRAPERS_MAX)
        registry = make_registry(status)
        self.listen = listen

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = SCRAPE_TIMEOUT_S

            def do_GET(self):
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body, content_type = exposition(registry, self.headers.get("Accept"))
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass                    # scrapes every few seconds do not belong in the log

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

            def process_request(self, request, client_address):
                # Idle connections must not pile up threads: beyond a few, close at once.
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

        try:
            self.server = Server((listen.host, listen.port), Handler)
        except OSError as e:
            raise RuntimeFailure(f"cannot listen for metrics on {listen}: {os.strerror(e.errno or 0)}") from None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="etun-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()
