"""The operator's side, end to end: filters, status, the control socket, verify-peer, metrics.

Filters in both directions, status (human, JSON, watch), the control socket, verify-peer's checks
and failures, and the Prometheus endpoint. Topology in tests/e2e/topology.py."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.e2e.topology import HOST_IP, REPO

pytestmark = pytest.mark.usefixtures("e2e_ready")
DOCS = REPO / "docs"

FILTERS_A = """
[filter.nic_ingress]
default = "allow"
rules = [
  { action = "deny", mac = "02:de:ad:00:00:01" },
  { action = "deny", ethertype = "0x88b5" },
  { action = "allow", oui = "02:de:ad" },
]
[filter.tunnel_ingress]
default = "allow"
rules = [ { action = "deny", ethertype = "0x88b6" } ]
"""
FILTERS_B = """
[filter.nic_ingress]
default = "allow"
rules = [ { action = "deny", ethertype = "0x88b5" } ]
[filter.tunnel_ingress]
default = "allow"
rules = [ { action = "deny", ethertype = "0x88b6" }, { action = "deny", mac = "02:de:ad:00:00:02" } ]
"""


def send_frames(t, src_host: str, dst_mac: str, frames: list[tuple[str, int, str]]) -> None:
    """(source MAC, EtherType, marker) frames from a host's eth0, crafted with scapy."""
    lines = ", ".join(f"Ether(src='{s}', dst='{dst_mac}', type={et})/Raw(b'{m}'*50)" for s, et, m in frames)
    t.out(f"{sys.executable} -c \"from scapy.all import Ether, Raw, sendp; "
          f"sendp([{lines}], iface='eth0', verbose=False)\"", f"h{src_host}")


MARKED = "ether proto 0x88b5 or ether proto 0x88b6 or ether proto 0x88b7"


def markers(packets) -> set[str]:
    from scapy.all import Raw

    return {bytes(p[Raw].load)[:1].decode() for p in packets if Raw in p}


def test_filters_stop_denied_frames_and_pass_allowed_ones_in_both_directions(topo):
    t = topo()
    for site, extra in (("a", FILTERS_A), ("b", FILTERS_B)):
        t.start_etun(site, t.write_config(site, extra=extra))
    t.wait_log("a", "peer up")
    t.wait_log("b", "peer up")
    mac = {h: t.out("cat /sys/class/net/eth0/address", f"h{h}").strip() for h in "ab"}
    plain = "02:11:22:33:44:55"
    with t.capture("hb", "eth0", MARKED, inbound=True, settle=1.0) as at_b, \
            t.capture("ha", "eth0", MARKED, inbound=True, settle=1.0) as at_a:
        send_frames(t, "a", mac["b"], [
            ("02:de:ad:00:00:01", 0x88B7, "m"),   # A nic_ingress rule 1: MAC denied, though its OUI is allowed
            (plain, 0x88B5, "e"),                  # A nic_ingress rule 2: EtherType denied
            ("02:de:ad:00:00:09", 0x88B5, "o"),   # A rule 3: the OUI's allow beats the EtherType's deny
            (plain, 0x88B6, "t"),                  # passes A, denied by B's tunnel_ingress
            ("02:de:ad:00:00:02", 0x88B7, "x"),   # passes A (OUI allow), denied by B's tunnel_ingress MAC rule
            (plain, 0x88B7, "p"),                  # nothing denies it
        ])
        send_frames(t, "b", mac["a"], [
            (plain, 0x88B5, "E"),                  # B nic_ingress: denied
            (plain, 0x88B6, "T"),                  # A tunnel_ingress: denied
            (plain, 0x88B7, "P"),                  # passes
        ])
    assert markers(at_b) == {"o", "p"}
    assert markers(at_a) == {"P"}
    a, b = t.status("a"), t.status("b")
    hits = [r["hits"] for r in a["segments"][0]["directions"]["outbound"]["filter"]["rules"]]
    assert hits == [1, 1, 2]
    assert a["segments"][0]["directions"]["outbound"]["filter"]["rules"][0]["match"] == "deny mac 02:de:ad:00:00:01"
    assert b["directions"]["inbound"]["drops"]["filter"] == 2
    assert a["directions"]["inbound"]["drops"]["filter"] == 1
    assert b["segments"][0]["directions"]["inbound"]["ethertypes"]["0x88b7"] >= 2


def documented_fields(doc: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_0-9.\[\]*]+)`", doc, re.M))


def flatten(value, prefix="") -> set[str]:
    """Dotted paths of a JSON document; list items as [], counters under drops/ethertypes as *."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            key = "*" if prefix.endswith(("drops", "ethertypes")) else k
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            out |= flatten(v, path)
    elif isinstance(value, list):
        for item in value:
            out |= flatten(item, prefix + "[]")
    return out


def test_status_counters_grow_and_every_json_field_is_documented(topo):
    t = topo()
    t.start_etun("a", t.write_config("a", extra='[filter.nic_ingress]\nrules = [{ action = "deny", oui = "00:00:5e" }]\n'))
    t.start_etun("b")
    t.wait_log("a", "peer up")
    before = t.status("a")
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472, count=5).stdout
    after = t.status("a")
    for direction in ("outbound", "inbound"):
        for name in ("frames", "bytes", "packets", "fragments"):
            assert after["directions"][direction][name] > before["directions"][direction][name]
    assert after["peer"]["up"] and after["peer"]["rtt_ms"] > 0 and after["keys"]["settled"]
    doc = (DOCS / "STATUS.md").read_text()
    missing = flatten(after) - documented_fields(doc)
    assert not missing, f"status fields not in docs/STATUS.md: {sorted(missing)}"
    for reason in after["directions"]["inbound"]["drops"]:
        assert f"`{reason}`" in doc, f"drop reason {reason} not explained in docs/STATUS.md"
    human = t.cli("a", "status", str(t.workdir / "a.toml"))
    assert human.returncode == 0 and "peer site-b" in human.stdout and "rule 1" in human.stdout


def test_status_watch_refreshes_until_interrupted(topo):
    t = topo()
    t.start_pair()
    # Started as a shell starts a background job (`make test &`): SIGINT ignored on entry. The
    # watch must still stop at a Ctrl-C, at once, however loaded the machine is.
    proc = subprocess.Popen(["ip", "netns", "exec", t.ns("ga"), sys.executable, "-m", "etun.cli", "status",
                             "--watch", "--json", str(t.workdir / "a.toml")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]      # two refreshes, however long they take
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rest, _ = proc.communicate(timeout=10)
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert stopped_s < 2.0, f"status --watch took {stopped_s:.1f} s to stop after SIGINT"
    uptimes = [json.loads(line)["uptime_s"] for line in lines + rest.splitlines()]
    assert len(uptimes) >= 2 and uptimes[-1] > uptimes[0]


def test_status_without_a_daemon_is_one_line_and_exit_1(topo):
    t = topo()
    t.write_config("a")
    r = t.cli("a", "status", str(t.workdir / "a.toml"))
    assert r.returncode == 1
    assert r.stdout.strip() == f"etun: no etun running for this site (no control socket at {t.workdir}/a.sock)"


def test_the_control_socket_is_root_only_and_a_stale_one_does_not_stop_a_start(topo):
    t = topo()
    sock_path = t.workdir / "a.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()                                       # what a crashed daemon leaves behind
    t.start_pair()
    mode = stat.S_IMODE(os.stat(sock_path).st_mode)
    assert mode == 0o600
    second = t.cli("a", "run", str(t.workdir / "a.toml"))
    assert second.returncode == 1
    assert "another etun is running for this site" in second.stdout


def verify(t, site: str, timeout: float = 5, as_json: bool = True) -> tuple[int, dict | str, float]:
    started = time.monotonic()
    args = ["verify-peer", f"--timeout={timeout}"] + (["--json"] if as_json else []) + [str(t.workdir / f"{site}.toml")]
    r = t.cli(site, *args, timeout=timeout + 30)
    return r.returncode, (json.loads(r.stdout) if as_json else r.stdout), time.monotonic() - started


def by_check(report: dict) -> dict:
    return {c["check"]: c for c in report["checks"]}


def test_verify_peer_passes_every_check_against_a_good_peer_with_and_without_a_local_daemon(topo):
    t = topo()
    t.write_config("b")
    t.start_etun("a")
    code, report, _ = verify(t, "b")                    # no daemon at B: probes from B's own port
    assert code == 0 and report["ok"], report
    t.start_etun("b")
    t.wait_log("a", "peer up")
    code, report, _ = verify(t, "a")                    # through the daemon at A
    assert code == 0 and report["ok"], report
    checks = by_check(report)
    assert "799-byte" in checks["size"]["detail"] and "198.19.1.1:5555" in checks["address"]["detail"]
    code, text, _ = verify(t, "a", as_json=False)
    assert code == 0 and text.strip().endswith("all checks passed")


def test_verify_peer_says_key_material_differs(topo):
    t = topo()
    t.start_etun("a", t.write_config("a", key=t.keygen("a.key")))
    t.write_config("b", key=t.keygen("b.key"))
    code, report, _ = verify(t, "b")
    checks = by_check(report)
    assert code == 3
    assert checks["reachable"]["ok"]
    assert not checks["key"]["ok"] and "key material differs" in checks["key"]["detail"]


def test_verify_peer_reports_a_level_mismatch(topo):
    t = topo()
    t.start_etun("a", t.write_config("a", level="encrypt"))
    t.write_config("b", level="auth")
    code, report, _ = verify(t, "b")
    checks = by_check(report)
    assert code == 3
    assert checks["key"]["ok"]
    assert not checks["level"]["ok"] and "the peer runs encrypt, we run auth" in checks["level"]["detail"]


def test_verify_peer_gives_up_on_a_dead_peer_within_the_timeout(topo):
    t = topo()
    t.write_config("b")
    code, report, took = verify(t, "b", timeout=2)
    assert code == 3
    assert "no answer from 198.19.1.1:5555 within 2 s" in by_check(report)["reachable"]["detail"]
    assert took < 2 + 5                     # interpreter start-up included


def test_verify_peer_finds_a_path_that_cannot_carry_max_packet(topo):
    t = topo(wan_mtu=700)
    t.start_pair()
    code, report, _ = verify(t, "a")
    checks = by_check(report)
    assert code == 3
    assert checks["reachable"]["ok"] and checks["key"]["ok"]
    assert not checks["size"]["ok"]
    assert "799-byte tunnel packets do not reach the peer" in checks["size"]["detail"]
    assert "below 819 bytes" in checks["size"]["detail"]


SCRAPE = """
import json, sys, urllib.request
request = urllib.request.Request("http://127.0.0.1:9477/metrics", headers={"Accept": sys.argv[1]} if sys.argv[1] else {})
r = urllib.request.urlopen(request, timeout=5)
print(json.dumps([r.headers["Content-Type"], r.read().decode()]))
"""


def scrape(t, accept: str) -> tuple[str, str]:
    return tuple(json.loads(t.out(f"{sys.executable} -c '{SCRAPE}' '{accept}'", "ga")))


def test_prometheus_metrics_are_scraped_by_a_real_http_client_in_both_formats(topo):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    t = topo()
    t.start_etun("a", t.write_config("a", extra='[metrics]\nlisten = "127.0.0.1:9477"\n'))
    t.start_etun("b")
    t.wait_log("a", "peer up")
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], size=1472, count=3).stdout
    for accept, parse, expected_type in (
            ("", parse_text, "text/plain; version=0.0.4"),
            ("application/openmetrics-text; version=1.0.0", parse_openmetrics, "application/openmetrics-text")):
        content_type, body = scrape(t, accept)
        assert content_type.startswith(expected_type)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(body) for s in f.samples}
        assert samples[("etun_peer_up", ())] == 1
        assert samples[("etun_frames_total", (("direction", "outbound"),))] >= 3
        assert samples[("etun_drops_total", (("direction", "inbound"), ("reason", "auth")))] == 0
        assert (("etun_filter_hits_total", (("direction", "outbound"), ("filter", "nic_ingress"), ("match", "allow"),
                                             ("rule", "default"), ("segment", "lan")))) in samples
        assert samples[("etun_segment_frames_total", (("direction", "outbound"), ("segment", "lan")))] >= 3
        assert any(name == "etun_ethertype_frames_total" for name, _ in samples)
        assert "# TYPE etun_drops" in body and "# HELP etun_drops" in body
