"""The reload table (etun/reload.py): every field live or needing a restart, and the log line.

Every configuration field has its line, each change is told apart as live or needing a restart, and
the log line says what changed, case by numbered case."""

import dataclasses
import pathlib

import pytest

from etun import reload
from etun.config import Config, load_config

BASE = """
[lan]
interface = "eth1"
[tunnel]
peer = "198.19.2.1:5555"
[security]
key_file = "/etc/etun/site.key"
"""


def config(tmp_path, extra: str = "", replace: tuple[str, str] = ("", "")) -> Config:
    path = tmp_path / "site.toml"
    text = BASE.replace(*replace) if replace[0] else BASE
    return load_config(path, (text + extra).encode())


def test_every_configuration_field_has_exactly_one_line_in_the_table():
    assert [path for path, _ in reload.FIELDS] == reload.config_fields(Config)


def test_the_table_says_live_for_what_the_spec_applies_at_once_and_restart_for_the_rest():
    live = {path for path, how in reload.FIELDS if how != reload.RESTART}
    assert live == {"tunnel.peer", "tunnel.keepalive", "security.key_file", "security.rekey",
                    "filter.nic_ingress", "filter.tunnel_ingress", "segment.filters", "metrics.listen",
                    "ha.standby", "ha.announce", "bridge.learning", "bridge.mac_age", "bridge.loop_protection",
                    "bridge.storm_limit", "bridge.guard"}
    for path, how in reload.FIELDS:
        assert how == reload.RESTART or hasattr(reload.Reload, f"apply_{how}"), path


CASES = [
    # 1. nothing changed
    ("", ("", ""), []),
    # 2. a filter: live, the table shown by its size
    ('[filter.nic_ingress]\nrules = [{ action = "deny", ethertype = "0x88b5" }]\n', ("", ""),
     [("filters", "[filter.nic_ingress] (0 rules, default allow) -> (1 rule, default allow)")]),
    # 3. the peer: live
    ("", ("198.19.2.1:5555", "198.19.2.9:5555"), [("peer", '[tunnel] peer "198.19.2.1:5555" -> "198.19.2.9:5555"')]),
    # 4. keepalive and rekey: one apply for both
    ("", ("[security]", "[security]\nrekey = 60"), [("timers", "[security] rekey 120 -> 60")]),
    # 5. listen: a restart
    ("", ("[tunnel]", '[tunnel]\nlisten = "0.0.0.0:5556"'),
     [(reload.RESTART, '[tunnel] listen "0.0.0.0:5555" -> "0.0.0.0:5556"')]),
    # 6. the level: a restart
    ("", ("[security]", '[security]\nlevel = "auth"'), [(reload.RESTART, '[security] level "encrypt" -> "auth"')]),
    # 7. the interface and the mode: one restart, the segments before and after
    ("", ('interface = "eth1"', 'interface = "eth2"\nmode = "tap"'),
     [(reload.RESTART, 'segments lan (eth1) -> lan (TAP etun0 on eth2)')]),
    # 8. metrics switched on: live
    ('[metrics]\nlisten = "127.0.0.1:9477"\n', ("", ""), [("metrics", '[metrics] listen none -> "127.0.0.1:9477"')]),
    # 9. [run] user: a restart (privileges are gone by then)
    ('[run]\nuser = "etun"\n', ("", ""), [(reload.RESTART, '[run] user "nobody" -> "etun"')]),
    # 10. metrics as a port alone: on the loopback address
    ('[metrics]\nlisten = "9477"\n', ("", ""), [("metrics", '[metrics] listen none -> "127.0.0.1:9477"')]),
    # 11. [bridge]: live, each key named
    ('[bridge]\nlearning = false\nstorm_limit = 100\nguard = ["stp", "lldp"]\n', ("", ""),
     [("bridge", "[bridge] learning true -> false"), ("bridge", "[bridge] storm_limit 5000 -> 100"),
      ("bridge", '[bridge] guard [] -> ["stp", "lldp"]')]),
]


@pytest.mark.parametrize("number,extra,replace,expected", [(i, *c) for i, c in enumerate(CASES, 1)])
def test_diff_names_each_change_and_how_it_applies(tmp_path, number, extra, replace, expected):
    changes = reload.diff(config(tmp_path), config(tmp_path, extra, replace), "aaaa", "aaaa")
    assert [(c.how, c.describe()) for c in changes] == expected, f"case {number}"


def test_new_key_material_in_the_same_file_is_a_change_of_its_own_and_live(tmp_path):
    same = config(tmp_path)
    [change] = reload.diff(same, same, "1111-2222-3333-4444", "5555-6666-7777-8888")
    assert change.how == "secrets"
    assert change.describe() == 'key material "1111-2222-3333-4444" -> "5555-6666-7777-8888"'


class FakeReader:
    def __init__(self, result):
        self.result = result

    def read(self):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class FakeDaemon:
    """What reload.run touches when every change is refused: nothing but config and fingerprint."""

    def __init__(self, cfg):
        self.config = cfg
        self.fingerprint = None
        self.lock = None


def test_a_restart_change_refuses_the_whole_reload_and_logs_one_line_per_reason(tmp_path, etun_log):
    d = FakeDaemon(config(tmp_path))
    d.fingerprint = "f"
    new = config(tmp_path, '[filter.nic_ingress]\nrules = [{ action = "deny", ethertype = "0x88b5" }]\n',
                 ("[tunnel]", '[tunnel]\nlisten = "0.0.0.0:5556"\nmax_packet = 900'))
    out = reload.run(d, FakeReader((new, type("S", (), {"fingerprint": "f"})())))
    assert not out.ok and out.applied == []
    assert out.refused == ['[tunnel] listen "0.0.0.0:5555" -> "0.0.0.0:5556" needs a restart',
                           "[tunnel] max_packet 800 -> 900 needs a restart"]
    assert [r.getMessage() for r in etun_log.records] == [f"reload refused: {r}; etun goes on unchanged" for r in out.refused]
    assert d.config is not new


def test_a_file_that_does_not_validate_is_refused_with_its_own_message(tmp_path, etun_log):
    from etun.errors import ConfigError

    d = FakeDaemon(config(tmp_path))
    out = reload.run(d, FakeReader(ConfigError("site.toml: [tunnel] peer: expected \"host:port\", got \"x\"")))
    assert out.answer() == {"ok": False, "applied": [],
                            "refused": ['site.toml: [tunnel] peer: expected "host:port", got "x"']}
    assert len(etun_log.records) == 1


def test_an_unchanged_file_reloads_to_nothing_changed(tmp_path, etun_log):
    d = FakeDaemon(config(tmp_path))
    d.lock = __import__("threading").Lock()
    out = reload.run(d, FakeReader((config(tmp_path), None)))
    assert out.answer() == {"ok": True, "applied": [], "refused": []}
    assert etun_log.records[-1].getMessage() == f"reloaded {pathlib.Path(tmp_path / 'site.toml')}: nothing changed"
    assert dataclasses.is_dataclass(d.config)


def test_announce_and_the_start_role_change_on_reload_without_touching_the_running_role(tmp_path, etun_log):
    from etun.ha import Role

    d = FakeDaemon(config(tmp_path))
    d.lock = __import__("threading").Lock()
    d.role = Role(standby=False, announce=True, now_ms=0)
    out = reload.run(d, FakeReader((config(tmp_path, "[ha]\nstandby = true\nannounce = false\n"), None)))
    assert out.ok and out.applied == ["[ha] standby false -> true", "[ha] announce true -> false"]
    assert d.role.announce is False and d.role.active            # keepalived's to change, not the file's


def test_moving_metrics_to_a_wildcard_address_on_the_same_port_is_refused_and_the_old_endpoint_serves_on(
        tmp_path, etun_log):
    """The new socket is bound before the old one closes (a refused reload must leave the endpoint
    as it was), and a wildcard address overlaps the loopback one on the same port."""
    import threading
    import urllib.error
    import urllib.request

    from etun.config import Address
    from etun.metrics import MetricsServer

    status = {"peer": {}}
    d = FakeDaemon(None)
    d.lock = threading.Lock()
    d.status = lambda: status
    d.metrics = MetricsServer(Address("127.0.0.1", 0), d.status)        # any free port
    port = d.metrics.server.server_address[1]
    d.config = config(tmp_path, f'[metrics]\nlisten = "{port}"\n')
    d.metrics.start()
    try:
        out = reload.run(d, FakeReader((config(tmp_path, f'[metrics]\nlisten = "0.0.0.0:{port}"\n'), None)))
        assert out.refused == [f"cannot listen for metrics on 0.0.0.0:{port}: Address already in use"]
        assert d.config.metrics.listen == Address("127.0.0.1", port)
        with pytest.raises(urllib.error.HTTPError) as answer:        # still served: other paths are 404
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing-here", timeout=5)
        assert answer.value.code == 404
    finally:
        d.metrics.close()
