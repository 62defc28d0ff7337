"""The Prometheus endpoint: `etun status` counters as text exposition at /metrics ([metrics] listen)."""

import http.server
import os
import socket
import threading

from etun.errors import RuntimeFailure

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


class Exposition:
    """Builds the text format: each metric family once, with its HELP and TYPE lines."""

    def __init__(self):
        self.families: dict[str, tuple[str, str, list]] = {}

    def add(self, name: str, kind: str, text: str, value, **labels) -> None:
        if value is None:
            return
        family = self.families.setdefault(name, (kind, text, []))
        family[2].append((labels, value))

    def render(self) -> str:
        out = []
        for name, (kind, text, samples) in self.families.items():
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(**labels)} {value}")
        return "\n".join(out) + "\n"


def exposition(st: dict) -> str:
    """The daemon's status (docs/STATUS.md) as Prometheus metrics named etun_*."""
    e = Exposition()
    e.add("etun_info", "gauge", "etun version, site and security level", 1,
          version=st["etun"], site=st["site"], level=st["level"])
    e.add("etun_uptime_seconds", "gauge", "Seconds since this etun started", st["uptime_s"])
    peer = st["peer"]
    e.add("etun_peer_up", "gauge", "1 while the peer is up", int(peer["up"]))
    e.add("etun_peer_last_seen_seconds", "gauge", "Seconds since the peer's last authenticated packet",
          peer["last_seen_s"])
    rtt = peer["rtt_ms"]
    e.add("etun_peer_rtt_seconds", "gauge", "Round-trip time to the peer's etun",
          None if rtt is None else rtt / 1000)
    e.add("etun_peer_roams_total", "counter", "Times the peer was followed to a new address", peer["roams"])
    for direction, value in (("send", st["keys"]["send_index"]), ("receive", st["keys"]["recv_index"])):
        e.add("etun_key_index", "gauge", "Current key index of the session", value, direction=direction)
    for direction, d in st["directions"].items():
        for name, help_text in (
            ("frames", "Ethernet frames carried"),
            ("bytes", "Bytes of those frames"),
            ("packets", "Tunnel packets"),
            ("fragments", "Tunnel packets carrying part of a multi-packet frame"),
            ("reassembled", "Multi-packet frames put back together"),
            ("superframes", "GSO super-frames cut (outbound) or merged (inbound) by etun"),
            ("control", "Control packets: handshake, cookie, probe and SESSION messages"),
        ):
            if name in d:
                e.add(f"etun_{name}_total", "counter", help_text, d[name], direction=direction)
        for reason, count in d["drops"].items():
            e.add("etun_drops_total", "counter", "Frames or packets dropped, by reason", count,
                  direction=direction, reason=reason)
        f = d["filter"]
        for rule in f["rules"]:
            e.add("etun_filter_hits_total", "counter", "Frames decided by each filter rule", rule["hits"],
                  direction=direction, filter=f["name"], rule=str(rule["rule"]), match=rule["match"])
        e.add("etun_filter_hits_total", "counter", "Frames decided by each filter rule",
              f["default"]["hits"], direction=direction, filter=f["name"], rule="default",
              match=f["default"]["action"])
        for ethertype, count in d["ethertypes"].items():
            e.add("etun_ethertype_frames_total", "counter", "Frames by EtherType (the most frequent)",
                  count, direction=direction, ethertype=ethertype)
    return e.render()


SCRAPERS_MAX = 8                # connections served at once; more are closed at once
SCRAPE_TIMEOUT_S = 5.0          # a connection that sends nothing is closed after this long


class MetricsServer:
    """An HTTP server in its own threads, a few at most; `status` is called per scrape."""

    def __init__(self, listen, status):
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        slots = threading.BoundedSemaphore(SCRAPERS_MAX)

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = SCRAPE_TIMEOUT_S

            def do_GET(self):
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = exposition(status()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
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
        self.thread = threading.Thread(target=self.server.serve_forever, name="etun-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
