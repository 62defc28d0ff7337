"""Running etun in production, end to end: hitless reload (SIGHUP, `etun reload`), least privilege
(the daemon as nobody with no capability, its root monitor), and systemd's notify protocol and
watchdog on a NOTIFY_SOCKET the test listens on. Topology in tests/e2e/topology.py:

    hostA - gwA (etun a) - WAN - gwB (etun b) - hostB
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.e2e.topology import HOST_IP, REPO
from tests.poll import wait_until
from tests.systemd import NotifyListener

pytestmark = pytest.mark.usefixtures("e2e_ready")

PING_INTERVAL_S = 0.01
DENY_IPV4 = '\n[filter.nic_ingress]\nrules = [{ action = "deny", ethertype = "0x0800" }]\n'
NOBODY = 65534
SESSION_LINES = ("session accepted", "session confirmed", "new session")


def sessions_logged(t, site: str) -> int:
    return sum(t.etuns[site].text().count(words) for words in SESSION_LINES)


def reload_lines(t, site: str) -> list[str]:
    return [line for line in t.etuns[site].text().splitlines() if "]: reload" in line]


def proc(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_sighup_applies_a_new_deny_rule_within_a_second_while_a_ping_every_10_ms_loses_nothing_before_it(topo):
    t = topo()
    t.start_pair()
    before = {site: sessions_logged(t, site) for site in "ab"}
    keys_before = t.status("a")["keys"]
    # ~6 s of pings, 10 ms apart, each with its own timestamp (-D) and a line for every one
    # that got no answer (-O): the replies tell when the rule took hold.
    ping = subprocess.Popen(["ip", "netns", "exec", t.ns("ha"), "ping", "-n", "-D", "-O", "-i", str(PING_INTERVAL_S),
                             "-W", "1", "-c", "600", HOST_IP["b"]], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        config = t.workdir / "a.toml"
        config.write_text(config.read_text() + DENY_IPV4)
        print(f"[root] kill -HUP {t.etuns['a'].proc.pid}  # [filter.nic_ingress] now denies IPv4")
        hup = time.time()
        os.kill(t.etuns["a"].proc.pid, signal.SIGHUP)
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    answered = {int(m[2]): float(m[1]) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)", out, re.M)}
    assert answered, out[-2000:]
    last = max(answered)
    assert sorted(answered) == list(range(1, last + 1)), "a ping went missing before the rule took hold"
    assert 100 < last < 600, f"the rule took hold after {last} pings"
    # The first ping denied left at most one interval after the last answer came back.
    took = answered[last] + PING_INTERVAL_S - hup
    print(f"deny rule in force within {max(took, 0) * 1000:.0f} ms of SIGHUP ({last} pings answered, none lost before)")
    assert took < 1.0
    lines = reload_lines(t, "a")
    assert len(lines) == 1 and "reloaded" in lines[0] and "[filter.nic_ingress] (0 rules, default allow) -> " \
        "(1 rule, default allow)" in lines[0], lines
    after = t.status("a")
    assert after["keys"]["recv_index"] == keys_before["recv_index"] and after["keys"]["settled"]
    assert after["peer"]["up"] and after["segments"][0]["directions"]["outbound"]["filter"]["rules"][0]["hits"] > 0
    assert {site: sessions_logged(t, site) for site in "ab"} == before, "the reload set up a new session"


def test_a_reload_with_a_bad_config_is_refused_in_one_line_and_the_tunnel_carries_on(topo):
    t = topo()
    t.start_pair()
    config = t.workdir / "a.toml"
    good = config.read_text()
    uptime = t.status("a")["uptime_s"]
    config.write_text(good.replace('keepalive = 2', 'keepalive = "often"'))
    os.kill(t.etuns["a"].proc.pid, signal.SIGHUP)
    t.wait_log("a", "reload refused")
    lines = reload_lines(t, "a")
    assert lines == [lines[0]] and lines[0].endswith(
        f'reload refused: {config}: [tunnel] keepalive: expected an integer, got "often"; etun goes on unchanged')
    r = t.cli("a", "reload", str(config))               # the command checks the file first, as the daemon would
    assert r.returncode == 2 and "[tunnel] keepalive: expected an integer" in r.stdout
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=5).stdout
    config.write_text(good.replace('keepalive = 2', 'keepalive = 3'))
    st = t.status("a")                                  # `status` too reads the file, for the socket's path
    assert st["peer"]["up"] and st["uptime_s"] > uptime
    r = t.cli("a", "reload", str(config))
    assert (r.returncode, r.stdout.strip()) == (0, "reloaded: [tunnel] keepalive 2 -> 3"), r.stdout


def test_a_reload_that_changes_listen_is_refused_naming_it_and_applies_nothing_else(topo):
    t = topo()
    t.start_pair()
    config = t.workdir / "a.toml"
    config.write_text(config.read_text().replace("0.0.0.0:5555", "0.0.0.0:5556") + DENY_IPV4)
    r = t.cli("a", "reload", str(config))
    assert r.returncode == 1
    assert r.stdout.strip() == ('etun: reload refused: [tunnel] listen "0.0.0.0:5555" -> "0.0.0.0:5556" needs a restart; '
                                'etun goes on unchanged')
    assert reload_lines(t, "a")[-1].endswith(
        'reload refused: [tunnel] listen "0.0.0.0:5555" -> "0.0.0.0:5556" needs a restart; etun goes on unchanged')
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=5).stdout     # the deny rule was not applied either
    st = t.status("a")
    assert st["tunnel"]["listen"] == "0.0.0.0:5555" and st["segments"][0]["directions"]["outbound"]["filter"]["rules"] == []


def test_the_daemon_runs_as_nobody_with_no_capability_undumpable_and_its_monitor_reloads_and_cleans_up(topo):
    t = topo()
    t.start_pair()
    pid = t.etuns["a"].proc.pid
    st = proc(pid)
    print(f"[root] grep -E 'Uid|Gid|Cap|NoNewPrivs' /proc/{pid}/status\n" + json.dumps(st, indent=1))
    assert st["Uid"].split() == [str(NOBODY)] * 4 and st["Gid"].split() == [str(NOBODY)] * 4
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[field], 16) == 0, field            # veth has no LRO to restore: nothing kept
    assert st["NoNewPrivs"] == "1"
    assert os.stat(f"/proc/{pid}/mem").st_uid == 0, "a dumpable process's /proc files belong to its uid"
    with open(f"/proc/{pid}/limits") as f:
        assert re.search(r"^Max core file size\s+0\s+0\s", f.read(), re.M)
    [monitor] = children(pid)
    ms = proc(monitor)
    assert ms["Name"] == "etun-monitor" and ms["Uid"].split() == ["0"] * 4
    assert int(ms["CapEff"], 16) == int(ms["CapPrm"], 16) == int(ms["CapBnd"], 16) == 0      # root's uid, nothing more
    assert ms["NoNewPrivs"] == "1"
    assert f"running as nobody (uid {NOBODY}) with no capabilities; monitor pid {monitor}" in t.etuns["a"].text()
    # The config and key live in pytest's root-only directory: only the monitor reaches them.
    assert os.stat(t.workdir.parent).st_mode & 0o077 == 0
    config = t.workdir / "a.toml"
    config.write_text(config.read_text().replace("rekey = 120", "rekey = 60"))
    r = t.cli("a", "reload", str(config))
    assert (r.returncode, r.stdout.strip()) == (0, "reloaded: [security] rekey 120 -> 60"), r.stdout
    assert t.stop_etun("a") == 0
    assert not (t.workdir / "a.sock").exists()          # removed by the monitor: nobody may not
    wait_until(lambda: not os.path.exists(f"/proc/{monitor}"), timeout=5, what="the monitor to exit")


def test_in_tap_mode_the_tap_device_goes_away_at_exit_though_etun_ran_as_nobody(topo):
    t = topo(lan_mode="tap")
    t.start_pair()
    assert proc(t.etuns["a"].proc.pid)["Uid"].split()[0] == str(NOBODY)
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    assert t.stop_etun("a") == 0
    r = t.run("ip link show etun0", "ga", check=False, capture=True)
    assert r.returncode != 0 and "does not exist" in r.stdout


def test_systemd_hears_ready_status_reloading_watchdog_and_stopping_in_order_and_a_wedged_datapath_starves_the_watchdog(
        topo):
    t = topo()
    listener = NotifyListener(t.workdir / "notify.sock")
    try:
        env = f"env NOTIFY_SOCKET={listener.path} WATCHDOG_USEC=1000000 ETUN_TEST_HOOKS=1 "
        t.start_etun("a", t.write_config("a"), prefix=env)
        t.start_etun("b")
        ready = listener.wait_for("READY", "1")
        assert ready["STATUS"] in ("waiting for peer 198.19.2.1:5555", "peer site-b up at 198.19.2.1:5555")
        listener.wait_for("STATUS", "peer site-b up at 198.19.2.1:5555")
        listener.collect(2.2)
        beats = [at for at, _, f in listener.messages if f.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        print(f"watchdog keep-alives with WatchdogSec=1: {len(beats)}, gaps {[round(g, 2) for g in gaps]}")
        assert len(beats) >= 4 and max(gaps) < 0.8
        assert {pid for _, pid, _ in listener.messages} == {t.etuns["a"].proc.pid}
        config = t.workdir / "a.toml"
        config.write_text(config.read_text().replace("keepalive = 2", "keepalive = 3"))
        os.kill(t.etuns["a"].proc.pid, signal.SIGHUP)
        reloading = listener.wait_for("RELOADING", "1")
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_us - int(reloading["MONOTONIC_USEC"]) < 5_000_000
        after = listener.messages.index(next(m for m in listener.messages if m[2] is reloading))
        assert any(f.get("READY") == "1" for _, _, f in listener.messages[after + 1:]) or listener.wait_for("READY", "1")
        # Wedge the tunnel -> LAN thread on purpose: the keep-alives stop, and say so once.
        r = t.cli("a", "status", str(config))
        assert r.returncode == 0
        t.run(f"python3 -c 'import json,socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{t.workdir}/a.sock\"); "
              f"s.sendall(json.dumps({{\"request\": \"stall\", \"pump\": \"rx\"}}).encode() + b\"\\n\"); print(s.recv(100))'", "ga")
        stalled = time.monotonic()
        listener.collect(3.0)
        late = [at for at, _, f in listener.messages if f.get("WATCHDOG") == "1" and at > stalled + 0.6]
        assert not late, f"{len(late)} keep-alives after the datapath was wedged"
        t.wait_log("a", "watchdog keep-alive withheld: the tunnel -> LAN thread makes no progress")
        t.stop_etun("a")
        listener.wait_for("STOPPING", "1")
    finally:
        listener.close()
    order = [k for k in ("READY=1", "RELOADING=1", "STOPPING=1")]
    seen = [next(i for i, keys in enumerate(listener.keys()) if key in keys.split(",")) for key in order]
    assert seen == sorted(seen), listener.keys()


def test_the_control_socket_refuses_the_stall_hook_without_etun_test_hooks(topo):
    t = topo()
    t.start_pair()
    out = t.out(f"python3 -c 'import json,socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{t.workdir}/a.sock\"); "
                f"s.sendall(json.dumps({{\"request\": \"stall\"}}).encode() + b\"\\n\"); print(s.recv(100).decode())'", "ga")
    assert json.loads(out) == {"error": "unknown request"}
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    assert REPO.exists()
