"""Running etun in production, end to end: reload, least privilege, notify and watchdog.

Hitless reload (SIGHUP, `etun reload`), least privilege (the daemon as nobody with no capability,
its root monitor), and systemd's notify protocol and watchdog on a NOTIFY_SOCKET the test listens
on. Topology in tests/e2e/topology.py:

    hostA - gwA (etun a) - WAN - gwB (etun b) - hostB
                                      198.19.2.1, and 198.19.3.1 for the test that moves the peer
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from etun import notify
from tests.e2e.topology import GW_IP, HOST_IP, REPO
from tests.poll import wait_until
from tests.systemd import NotifyListener

pytestmark = pytest.mark.usefixtures("e2e_ready")

PING_INTERVAL_S = 0.01
WATCHDOG_USEC = 1_000_000           # WatchdogSec=1 for the notify test
KEEPALIVE_S = WATCHDOG_USEC / 1e6 / notify.WATCHDOG_SHARE    # a keep-alive this often while fed
PUMP_IDLE_TURN_S = 0.1              # an idle datapath thread turns at least this often
SCHEDULING_SLACK_S = 0.1            # the watchdog thread's 0.2 s sleep may end this late on a loaded host
DENY_IPV4 = '\n[filter.nic_ingress]\nrules = [{ action = "deny", ethertype = "0x0800" }]\n'
NOBODY = 65534
SESSION_LINES = ("session established", "new session")
SECOND_GW_IP = "198.19.3.1"         # a second address of gwB, in a subnet of its own (moved peer)
SECOND_ROUTER_IP = "198.19.3.254"
METRICS_PORT = 9477


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


def ping_while(t, action, count: int = 400, lead_s: float = 1.0) -> dict[int, float]:
    """hostA pings hostB every 10 ms, `count` times, with `action()` run `lead_s` into it; returns
    the answered sequence numbers with the time each answer came, after asserting none was lost."""
    ping = subprocess.Popen(["ip", "netns", "exec", t.ns("ha"), "ping", "-n", "-D", "-O", "-i", str(PING_INTERVAL_S),
                             "-W", "1", "-c", str(count), HOST_IP["b"]], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(lead_s)
        action()
        out, _ = ping.communicate(timeout=count * PING_INTERVAL_S + 60)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    answered = {int(m[2]): float(m[1]) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)", out, re.M)}
    missing = sorted(set(range(1, count + 1)) - set(answered))
    print(f"{len(answered)} of {count} pings answered, 10 ms apart" + (f"; lost: {missing[:20]}" if missing else ""))
    assert not missing, f"{len(missing)} pings lost: {missing[:20]}\n{out[-2000:]}"
    return answered


def sessions(t) -> dict:
    """Each site's handshakes so far, receive key index and session log lines: a new session changes them."""
    return {site: (st["session"]["handshakes"], st["keys"]["recv_index"], sessions_logged(t, site))
            for site, st in ((site, t.status(site)) for site in "ab")}


def reload_by_sighup(t, site: str, why: str) -> str:
    """SIGHUP to the etun at `site`; returns its reload line once logged."""
    before = len(reload_lines(t, site))
    print(f"[root] kill -HUP {t.etuns[site].proc.pid}  # {why}")
    os.kill(t.etuns[site].proc.pid, signal.SIGHUP)
    wait_until(lambda: len(reload_lines(t, site)) > before, timeout=10, what=f"the reload at {site}")
    return reload_lines(t, site)[-1]


def test_a_reload_applies_a_new_storm_limit_and_guards_at_once_while_a_ping_every_10_ms_loses_nothing(topo):
    t = topo()
    t.start_pair()
    before = sessions(t)
    config = t.workdir / "a.toml"
    line = []

    def change_bridge():
        config.write_text(config.read_text() + '\n[bridge]\nstorm_limit = 20\nguard = ["stp", "lldp"]\n')
        line.append(reload_by_sighup(t, "a", "[bridge] storm_limit 20, guard stp and lldp"))
        # 100 broadcasts in half a second: flooded frames, of which 20 a second cross.
        t.run(f"ping -n -q -b -c 100 -i 0.005 -W 0.1 {HOST_IP['b'].rsplit('.', 1)[0]}.255", "ha", check=False)

    ping_while(t, change_bridge)
    assert "reloaded" in line[0] and line[0].endswith(
        '[bridge] storm_limit 5000 -> 20, [bridge] guard [] -> ["stp", "lldp"]'), line
    st = t.status("a")
    assert st["bridge"]["storm_limit"] == 20 and st["bridge"]["guard"] == ["stp", "lldp"]
    storm = st["segments"][0]["directions"]["outbound"]["drops"]["storm"]
    print(f"broadcasts dropped over the new storm limit: {storm} of 100")
    assert storm >= 50, "the new storm limit did not take hold"
    guards = st["segments"][0]["directions"]["outbound"]["filter"]["guards"]
    assert [g["guard"] for g in guards] == ["stp", "lldp"], guards
    assert sessions(t) == before, "the reload set up a new session"


def test_a_reload_moves_the_peer_to_a_second_address_of_the_far_gateway_and_traffic_follows_it_losing_nothing(topo):
    t = topo()
    t.start_pair()
    # gwB gets a second address, in a subnet of its own that the WAN router reaches too.
    t.run(f"ip addr add {SECOND_GW_IP}/24 dev wan0", "gb")
    t.run(f"ip addr add {SECOND_ROUTER_IP}/24 dev b0", "wan")
    before = sessions(t)
    config = t.workdir / "a.toml"
    line, to_second = [], []

    def move_peer():
        # gwB still answers from its first address, and gwA follows authenticated traffic (it
        # roams back at once): what proves the reload is gwA sending to the new address right away,
        # the keepalive it greets the new address with at least (a frame sealed in that instant
        # goes there too, unless a packet from the old address came first).
        with t.capture("wan", "a0", f"udp and dst host {SECOND_GW_IP} and dst port 5555", inbound=True) as packets:
            config.write_text(config.read_text().replace('peer = "198.19.2.1:5555"', f'peer = "{SECOND_GW_IP}:5555"'))
            line.append(reload_by_sighup(t, "a", f"[tunnel] peer now {SECOND_GW_IP}:5555"))
            time.sleep(0.2)
        to_second.extend(packets)
        # gwB now sends from its second address, and gives the first one up.
        t.run(f"ip route replace default via {SECOND_ROUTER_IP} src {SECOND_GW_IP}", "gb")
        time.sleep(0.3)
        t.run("ip addr del 198.19.2.1/24 dev wan0", "gb")

    ping_while(t, move_peer, count=500)
    assert line[0].endswith(f'reloaded {config}: [tunnel] peer "198.19.2.1:5555" -> "{SECOND_GW_IP}:5555"'), line
    print(f"{len(to_second)} tunnel packets from gwA to {SECOND_GW_IP} in the 0.2 s after the reload")
    assert to_second, "gwA sent nothing to the new peer address after the reload"
    st = t.status("a")
    assert st["peer"]["configured"] == st["peer"]["address"] == f"{SECOND_GW_IP}:5555" and st["peer"]["up"]
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=5).stdout      # only the second address is left
    assert sessions(t) == before, "the reload set up a new session"


def test_metrics_switched_on_by_a_reload_as_a_port_alone_serve_the_loopback_address_and_go_away_by_reload(topo):
    from prometheus_client.parser import text_string_to_metric_families

    t = topo()
    t.start_pair()
    before = sessions(t)
    config = t.workdir / "a.toml"
    plain = config.read_text()
    line = []

    def metrics_on():
        config.write_text(plain + f'\n[metrics]\nlisten = "{METRICS_PORT}"\n')
        line.append(reload_by_sighup(t, "a", f'[metrics] listen = "{METRICS_PORT}"'))

    ping_while(t, metrics_on)
    assert line[0].endswith(f'[metrics] listen none -> "127.0.0.1:{METRICS_PORT}"'), line
    text = t.out(f"curl -sS --max-time 5 http://127.0.0.1:{METRICS_PORT}/metrics", "ga")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["etun_peer_up"].samples[0].value == 1 and "etun_drops" in families, sorted(families)
    r = t.run(f"curl -sS --max-time 5 http://{GW_IP['a']}:{METRICS_PORT}/metrics", "ga", check=False, capture=True)
    assert r.returncode == 7, f"a port alone must bind the loopback address only: {r.stdout}"     # cannot connect
    config.write_text(plain)
    assert reload_by_sighup(t, "a", "[metrics] gone").endswith(f'[metrics] listen "127.0.0.1:{METRICS_PORT}" -> none')
    r = t.run(f"curl -sS --max-time 5 http://127.0.0.1:{METRICS_PORT}/metrics", "ga", check=False, capture=True)
    assert r.returncode == 7, r.stdout                  # cannot connect: nothing listens any more
    assert sessions(t) == before, "the reload set up a new session"


def test_a_new_key_file_reloaded_at_both_sites_keeps_the_session_and_its_traffic_and_the_next_handshake_uses_it(topo):
    t = topo()
    t.start_pair()
    before = sessions(t)
    key = t.keygen()
    old_key = t.workdir / "old.key"
    t.run(f"cp -p {key} {old_key}")
    fingerprints = []
    lines = {}

    def new_key():
        out = t.out(f"{sys.executable} -m etun.cli keygen --force {key}", "ga")      # one file: both sites read it
        fingerprints.append(re.search(r"fingerprint (\S+)", out)[1])
        for site in "ab":
            lines[site] = reload_by_sighup(t, site, "the key file was replaced")

    ping_while(t, new_key)
    old_fp = re.search(r"key fingerprint (\S+),", t.etuns["a"].text())[1]
    for site in "ab":
        assert lines[site].endswith(f'key material "{old_fp}" -> "{fingerprints[0]}"'), lines
    assert sessions(t) == before, "the new key set up a new session"
    # The next handshake, now: a standby that becomes active shakes hands at once (etun/ha.py).
    established = t.etuns["a"].text().count("session established")
    for command in ("standby", "activate"):
        r = t.cli("a", command, str(t.workdir / "a.toml"))
        assert r.returncode == 0, r.stdout
    wait_until(lambda: t.etuns["a"].text().count("session established") > established, timeout=10,
               what="a handshake under the new key")
    assert t.status("a")["session"]["handshakes"] == before["a"][0] + 1
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=5).stdout
    # ... and it was the new key: a site that kept the old one cannot shake hands with gwA.
    t.stop_etun("b")
    t.start_etun("b", t.write_config("b", key=old_key))
    t.wait_log("a", "do not authenticate: if they are the peer's, the key material differs")
    time.sleep(1.0)
    assert "session established" not in t.etuns["b"].text() and not t.status("b")["peer"]["up"]


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
        env = f"env NOTIFY_SOCKET={listener.path} WATCHDOG_USEC={WATCHDOG_USEC} ETUN_TEST_HOOKS=1 "
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
        reloading = listener.messages[listener.index("RELOADING", "1", timeout=10)][2]
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_us - int(reloading["MONOTONIC_USEC"]) < 5_000_000
        # Wedge the tunnel -> LAN thread on purpose: the keep-alives stop, and say so once.
        r = t.cli("a", "status", str(config))
        assert r.returncode == 0
        t.run(f"python3 -c 'import json,socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{t.workdir}/a.sock\"); "
              f"s.sendall(json.dumps({{\"request\": \"stall\", \"pump\": \"rx\"}}).encode() + b\"\\n\"); print(s.recv(100))'", "ga")
        stalled = time.monotonic()          # the daemon wedged the thread before it answered
        listener.collect(3.0)
        # A thread asleep when the flag is set turns once more when it wakes (up to 0.1 s later),
        # and the watchdog may still answer that turn and those before the flag: two keep-alives
        # at most, none later than one keep-alive interval and one watchdog tick after that last
        # turn (tests/unit/test_notify.py works the cases through). Fed, it would send 6 in 3 s.
        late = [at for at, _, f in listener.messages if f.get("WATCHDOG") == "1" and at > stalled]
        print(f"keep-alives after the datapath was wedged: {[round(at - stalled, 2) for at in late]} s")
        assert len(late) <= 2, f"{len(late)} keep-alives after the datapath was wedged"
        bound = PUMP_IDLE_TURN_S + KEEPALIVE_S + notify.WATCHDOG_TICK_S + SCHEDULING_SLACK_S
        assert all(at - stalled <= bound for at in late), f"a keep-alive {max(late) - stalled:.2f} s after the stall"
        t.wait_log("a", "watchdog keep-alive withheld: the tunnel -> LAN thread makes no progress")
        t.stop_etun("a")
        listener.index("STOPPING", "1", timeout=10)
    finally:
        listener.close()
    # In order: READY=1 first of all, RELOADING=1, READY=1 again once the reload is done, STOPPING=1;
    # no STATUS= or WATCHDOG=1 before the first READY=1 (a message with both is one datagram).
    print("\n".join(listener.keys()))
    first_ready = listener.index("READY", "1")
    reloading_at = listener.index("RELOADING", "1", after=first_ready)
    ready_again = listener.index("READY", "1", after=reloading_at)
    stopping_at = listener.index("STOPPING", "1", after=ready_again)
    assert first_ready < reloading_at < ready_again < stopping_at
    early = [keys for keys, (_, _, f) in zip(listener.keys(), listener.messages[:first_ready], strict=False)
             if "STATUS" in f or "WATCHDOG" in f]
    assert not early, f"before the first READY=1: {early}"
    assert any(f.get("WATCHDOG") == "1" for _, _, f in listener.messages[first_ready + 1:reloading_at])
    assert any("STATUS" in f and "READY" not in f for _, _, f in listener.messages[first_ready + 1:reloading_at])


def test_the_control_socket_refuses_the_stall_hook_without_etun_test_hooks(topo):
    t = topo()
    t.start_pair()
    out = t.out(f"python3 -c 'import json,socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{t.workdir}/a.sock\"); "
                f"s.sendall(json.dumps({{\"request\": \"stall\"}}).encode() + b\"\\n\"); print(s.recv(100).decode())'", "ga")
    assert json.loads(out) == {"error": "unknown request"}
    assert " 0% packet loss" in t.ping("a", HOST_IP["b"], count=3).stdout
    assert REPO.exists()
