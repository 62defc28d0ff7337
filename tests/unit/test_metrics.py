"""The Prometheus exposition (etun/metrics.py), read back with prometheus_client's parsers.

The Prometheus exposition (etun/metrics.py): every family with HELP and TYPE, the names and labels
docs/STATUS.md lists, in the text format and in OpenMetrics when asked, read back with
prometheus_client's own parsers; and the endpoint over real HTTP on loopback."""

import json
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from etun import metrics
from etun.config import Address
from tests import REPO

DOCS = REPO / "docs"
DROPS = ("malformed", "auth", "filter")


def status(rtt_ms=0.25, send_index=3) -> dict:
    """A status document as the daemon builds it (docs/STATUS.md), with a few of each kind."""
    def direction(traffic):
        d = {key: n for n, key in enumerate(traffic, 1)}
        d["drops"] = {reason: 0 for reason in DROPS} | {"filter": 2}
        return d

    def segment_direction(filt):
        return {"frames": 7, "bytes": 700, "drops": {"filter": 2, "malformed": 0, "unknown_segment": 1},
                "filter": {"name": filt, "rules": [{"rule": 1, "match": 'deny mac 01:80:c2:00:00:00', "hits": 2}],
                           "default": {"action": "allow", "hits": 40}},
                "ethertypes": {"0x0800": 30, "0x86dd": 12}}

    return {
        "schema": 2, "etun": "0.1.0", "site": "berlin", "level": "encrypt", "uptime_s": 12.5,
        "peer": {"configured": "198.19.2.1:5555", "address": "198.19.2.1:5555", "site": "paris", "up": True,
                 "last_seen_s": 0.4, "rtt_ms": rtt_ms, "roams": 1, "segments": ["office"],
                 "segments_only_here": ["voice"], "segments_only_there": []},
        "keys": {"send_index": send_index, "recv_index": 0, "settled": True},
        "ha": {"role": "active", "since_s": 2.5, "switches": 4, "announce": True, "announced": 3},
        "directions": {
            "outbound": direction(("frames", "bytes", "packets", "fragments", "superframes")),
            "inbound": direction(("frames", "bytes", "packets", "fragments", "reassembled", "control", "superframes")),
        },
        "segments": [
            {"name": name, "interface": "eth1", "mode": "packet", "vlan": vlan, "mtu": 1500, "at_peer": at_peer,
             "directions": {"outbound": segment_direction("nic_ingress"),
                            "inbound": segment_direction("tunnel_ingress")}}
            for name, vlan, at_peer in (("office", "10", True), ("voice", "20", False))
        ],
        "bridge": {"learning": True, "mac_age": 300, "loop_protection": "block", "storm_limit": 5000, "guard": [],
                   "macs_max": 65536, "table_bytes": 1 << 20, "segments": [
                       {"segment": 0, "name": "eth1", "macs": {"local": 7, "remote": 5}, "macs_share": 65536,
                        "outbound": {"learnt": 7, "moves": 0, "flips": 0, "full": 0, "over_share": 4, "loops": 1,
                                     "held": False, "loop_macs": [], "hold_s": 0},
                        "inbound": {"learnt": 5, "moves": 0, "flips": 3, "full": 0, "over_share": 0, "loops": 2,
                                    "held": True, "loop_macs": ["02:00:00:00:00:01"], "hold_s": 1.5}}]},
    }


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


@pytest.mark.parametrize("accept,parse,content_type", [
    (None, parse_text, "text/plain; version=0.0.4"),
    ("application/openmetrics-text; version=1.0.0", parse_openmetrics, "application/openmetrics-text; version=1.0.0"),
])
def test_both_formats_parse_with_the_client_librarys_own_parser_and_carry_every_documented_family(
        accept, parse, content_type):
    body, ctype = metrics.exposition(metrics.make_registry(status), accept)
    assert ctype.startswith(content_type)
    text = body.decode()
    families = list(parse(text))
    got = samples(families)
    assert got[("etun_peer_up", ())] == 1
    assert got[("etun_peer_rtt_seconds", ())] == 0.00025
    assert got[("etun_peer_roams_total", ())] == 1
    assert got[("etun_frames_total", (("direction", "outbound"),))] == 1
    assert got[("etun_drops_total", (("direction", "inbound"), ("reason", "filter")))] == 2
    assert got[("etun_filter_hits_total", (("direction", "outbound"), ("filter", "nic_ingress"), ("match", "allow"),
                                           ("rule", "default"), ("segment", "voice")))] == 40
    assert got[("etun_segment_frames_total", (("direction", "inbound"), ("segment", "office")))] == 7
    assert got[("etun_segment_drops_total", (("direction", "outbound"), ("reason", "unknown_segment"),
                                             ("segment", "voice")))] == 1
    assert got[("etun_segment_at_peer", (("segment", "voice"),))] == 0
    assert got[("etun_info", (("level", "encrypt"), ("site", "berlin"), ("version", "0.1.0")))] == 1
    assert got[("etun_bridge_macs", (("segment", "eth1"), ("side", "local")))] == 7
    assert got[("etun_bridge_held", (("direction", "inbound"), ("segment", "eth1")))] == 1
    assert got[("etun_bridge_loops_total", (("direction", "inbound"), ("segment", "eth1")))] == 2
    assert got[("etun_bridge_over_share_total", (("direction", "outbound"), ("segment", "eth1")))] == 4
    assert got[("etun_ha_active", ())] == 1
    assert got[("etun_ha_switches_total", ())] == 4
    assert got[("etun_ha_role_seconds", ())] == 2.5
    assert got[("etun_ha_announced_total", ())] == 3
    names = {f.name for f in families}
    documented = {n.removesuffix("_total") for n in
                  __import__("re").findall(r"`(etun_[a-z_]+)`", (DOCS / "STATUS.md").read_text())}
    assert names == documented, names ^ documented
    for family in families:                              # HELP and TYPE for every family, in either format
        assert f"# HELP {family.name}" in text and f"# TYPE {family.name}" in text
        assert family.documentation and family.type in ("gauge", "counter", "info")
    if parse is parse_openmetrics:
        assert text.endswith("# EOF\n")


def test_a_value_the_status_does_not_know_yet_is_left_out_not_written_as_zero():
    body, _ = metrics.exposition(metrics.make_registry(lambda: status(rtt_ms=None, send_index=None)), None)
    got = samples(parse_text(body.decode()))
    assert not any(name == "etun_peer_rtt_seconds" for name, _ in got)
    assert ("etun_key_index", (("direction", "receive"),)) in got
    assert ("etun_key_index", (("direction", "send"),)) not in got


def test_the_endpoint_answers_on_loopback_in_the_format_asked_for_and_404_elsewhere():
    server = metrics.MetricsServer(Address("127.0.0.1", 0), status)
    port = server.server.server_address[1]
    server.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "etun_peer_up 1.0" in r.read().decode()
        request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert list(parse_openmetrics(r.read().decode()))
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert e.value.code == 404
    finally:
        server.close()
    assert json.dumps(status())                         # the fixture stays a JSON document, as the daemon's is
