"""site.toml -> Config: the manual's examples, defaults, path resolution, and every error message pinned."""

import dataclasses
import pathlib
import re

import pytest

from etun.config import (
    LEVELS,
    Address,
    Bridge,
    Config,
    Control,
    FilterRule,
    Filters,
    FilterTable,
    Ha,
    Metrics,
    Run,
    Security,
    Segment,
    SegmentFilters,
    Segments,
    Site,
    Tunnel,
    _describe_toml_error,
    load_config,
)
from etun.errors import ConfigError
from tests import REPO


def manual_examples(name: str) -> list[str]:
    """The ```toml blocks of a manual page in docs/, in order."""
    return re.findall(r"```toml\n(.*?)```", (REPO / "docs" / name).read_text(), re.S)


# The complete example of the manual (docs/CONFIG.md, "A complete example"), as users read it.
COMPLETE_EXAMPLE = manual_examples("CONFIG.md")[-1]

LAN = 'interface = "eth1"'
PEER = 'peer = "203.0.113.7:5555"'
KEY = 'key_file = "/etc/etun/site.key"'


def site_toml(extra="", **bodies):
    """A minimal valid site.toml; keyword arguments replace a table's body (None: leave it out),
    `extra` follows it."""
    tables = {"lan": LAN, "tunnel": PEER, "security": KEY}
    tables.update(bodies)
    return "".join(f"[{name}]\n{body}\n" for name, body in tables.items() if body is not None) + extra


def segments(*bodies: str) -> str:
    """A site.toml with these [[segment]] tables instead of [lan]."""
    return "".join(f"[[segment]]\n{body}\n" for body in bodies) + site_toml(lan=None)


def rules(*rules, table="nic_ingress"):
    """A [filter.<table>] holding these inline-table rules."""
    return f"[filter.{table}]\nrules = [\n" + "".join(f"  {rule},\n" for rule in rules) + "]\n"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, so a config written as "site.toml" is named exactly that in errors."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(text, name="site.toml"):
    path = pathlib.Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_config(name)


def error_of(text, name="site.toml"):
    with pytest.raises(ConfigError) as caught:
        load(text, name)
    return str(caught.value)


# -- valid files ---------------------------------------------------------------


def lan_segment(interface, mode="packet", tap="etun0") -> Segments:
    """What a [lan] table describes: the one segment named "lan"."""
    return Segments(layout=(Segment("lan", interface, mode, tap, ()),), filters=(SegmentFilters(),))


def test_the_manuals_complete_example_loads_to_the_expected_dataclasses(in_tmp):
    config = load(COMPLETE_EXAMPLE, "berlin.toml")

    assert config == Config(
        path=pathlib.Path("berlin.toml"),
        site=Site(name="berlin"),
        segment=lan_segment("eth1"),
        tunnel=Tunnel(
            listen=Address("0.0.0.0", 5555),
            peer=Address("203.0.113.7", 5555),
            max_packet=800,
            keepalive=10,
        ),
        security=Security(level="encrypt", key_file=pathlib.Path("/etc/etun/site.key"), rekey=120),
        filter=Filters(
            nic_ingress=FilterTable(
                default="allow",
                rules=(
                    FilterRule("deny", mac=bytes.fromhex("0180c2000000")),
                    FilterRule("deny", ethertype=0x88CC),
                ),
            ),
            tunnel_ingress=FilterTable(default="allow", rules=()),
        ),
        control=Control(socket=pathlib.Path("/run/etun/berlin.sock")),
        metrics=Metrics(listen=Address("127.0.0.1", 9477)),
        ha=Ha(standby=False, announce=True),
        bridge=Bridge(learning=True, mac_age=300, loop_protection="block", storm_limit=5000,
                      guard=("dhcp-server", "ipv6-ra")),
        run=Run(user="nobody"),
    )


def test_minimal_file_gets_every_default(in_tmp):
    config = load(site_toml())

    assert config == Config(
        path=pathlib.Path("site.toml"),
        site=Site(name="site"),
        segment=lan_segment("eth1"),
        tunnel=Tunnel(listen=Address("0.0.0.0", 5555), peer=Address("203.0.113.7", 5555), max_packet=800, keepalive=10),
        security=Security(level="encrypt", key_file=pathlib.Path("/etc/etun/site.key"), rekey=120),
        filter=Filters(nic_ingress=FilterTable(), tunnel_ingress=FilterTable()),
        control=Control(socket=pathlib.Path("/run/etun/site.sock")),
        metrics=Metrics(listen=None),
        ha=Ha(standby=False, announce=True),
        bridge=Bridge(learning=True, mac_age=300, loop_protection="block", storm_limit=5000, guard=()),
        run=Run(user="nobody"),
    )


def test_site_name_and_socket_default_to_the_file_stem(in_tmp):
    config = load(site_toml(), "conf/paris.toml")

    assert config.site.name == "paris"
    assert config.control.socket == pathlib.Path("/run/etun/paris.sock")
    assert config.path == pathlib.Path("conf/paris.toml")


def test_load_config_accepts_a_path_object(in_tmp):
    load(site_toml())

    assert load_config(in_tmp / "site.toml").path == in_tmp / "site.toml"


def test_tap_mode_needs_no_interface(in_tmp):
    config = load(site_toml(lan='mode = "tap"'))

    assert config.segment == lan_segment(None, "tap")


def test_tap_mode_keeps_a_bridge_interface_and_tap_name(in_tmp):
    config = load(site_toml(lan='mode = "tap"\ninterface = "br0"\ntap = "etun-berlin"'))

    assert config.segment == lan_segment("br0", "tap", "etun-berlin")


def test_level_none_needs_no_key_file(in_tmp):
    config = load(site_toml(security='level = "none"'))

    assert config.security == Security(level="none", key_file=None, rekey=120)


def test_level_none_still_keeps_a_given_key_file(in_tmp):
    config = load(site_toml(security=f'level = "none"\n{KEY}'))

    assert config.security.key_file == pathlib.Path("/etc/etun/site.key")


def test_relative_key_file_and_socket_resolve_against_the_config_directory(in_tmp):
    config = load(
        site_toml(security='key_file = "site.key"', extra='[control]\nsocket = "run/berlin.sock"\n'),
        "conf/site.toml",
    )

    assert config.security.key_file == in_tmp / "conf" / "site.key"
    assert config.control.socket == in_tmp / "conf" / "run" / "berlin.sock"


def test_relative_key_file_resolves_against_the_config_directory_from_elsewhere(in_tmp, monkeypatch):
    load(site_toml(security='key_file = "keys/site.key"'), "conf/site.toml")
    (in_tmp / "elsewhere").mkdir()
    monkeypatch.chdir(in_tmp / "elsewhere")

    config = load_config("../conf/site.toml")

    assert config.security.key_file.resolve() == (in_tmp / "conf" / "keys" / "site.key").resolve()
    assert config.security.key_file.is_absolute()


def test_absolute_key_file_and_socket_stay_as_written(in_tmp):
    config = load(
        site_toml(security='key_file = "/srv/etun.key"', extra='[control]\nsocket = "/tmp/etun.sock"\n'),
        "conf/site.toml",
    )

    assert config.security.key_file == pathlib.Path("/srv/etun.key")
    assert config.control.socket == pathlib.Path("/tmp/etun.sock")


def test_ipv6_peer_is_stored_without_brackets(in_tmp):
    config = load(site_toml(tunnel='listen = "[::]:5555"\npeer = "[2001:db8::1]:5556"'))

    assert config.tunnel.listen == Address("::", 5555)
    assert config.tunnel.peer == Address("2001:db8::1", 5556)
    assert str(config.tunnel.peer) == "[2001:db8::1]:5556"


def test_an_ipv6_peer_makes_the_default_listen_address_ipv6(in_tmp):
    config = load(site_toml(tunnel='peer = "[2001:db8::1]:5555"'))

    assert config.tunnel.listen == Address("::", 5555)


def test_ipv6_addresses_are_written_one_way(in_tmp):
    config = load(site_toml(tunnel='listen = "[::]:5555"\npeer = "[2001:DB8:0:0::1]:5555"'))

    assert config.tunnel.peer.host == "2001:db8::1"


def test_ipv4_peer_is_allowed_with_a_dual_stack_ipv6_listen(in_tmp):
    config = load(site_toml(tunnel=f'listen = "[::]:5555"\n{PEER}'))

    assert config.tunnel.peer == Address("203.0.113.7", 5555)


@pytest.mark.parametrize("name", ["gw.example.net", "gw.example.net.", "localhost", "a-1.b2", "x" * 63 + ".net"])
def test_dns_peer_keeps_its_name(in_tmp, name):
    config = load(site_toml(tunnel=f'peer = "{name}:5555"'))

    assert config.tunnel.peer == Address(name, 5555)
    assert str(config.tunnel.peer) == f"{name}:5555"


def test_address_prints_as_host_colon_port():
    assert str(Address("1.2.3.4", 5555)) == "1.2.3.4:5555"
    assert str(Address("2001:db8::1", 5555)) == "[2001:db8::1]:5555"
    assert str(Address("gw.example.net", 5555)) == "gw.example.net:5555"


def test_metrics_listen_accepts_ipv6(in_tmp):
    config = load(site_toml(extra='[metrics]\nlisten = "[::1]:9477"\n'))

    assert config.metrics.listen == Address("::1", 9477)


@pytest.mark.parametrize("port", ["9477", "1", "65535"])
def test_metrics_listen_given_as_a_port_alone_binds_the_loopback_address(in_tmp, port):
    config = load(site_toml(extra=f'[metrics]\nlisten = "{port}"\n'))

    assert config.metrics.listen == Address("127.0.0.1", int(port))


def test_filter_values_accept_either_case_and_integer_ethertypes(in_tmp):
    config = load(
        site_toml(
            extra=rules(
                '{ action = "deny", mac = "FF:FF:FF:FF:FF:FF" }',
                '{ action = "allow", oui = "00:1B:21" }',
                '{ action = "deny", ethertype = 0x8100 }',
                '{ action = "deny", ethertype = "0X88A8" }',
                '{ action = "allow", ethertype = 0x0600 }',
            )
        )
    )

    assert config.filter.nic_ingress.rules == (
        FilterRule("deny", mac=b"\xff" * 6),
        FilterRule("allow", oui=b"\x00\x1b\x21"),
        FilterRule("deny", ethertype=0x8100),
        FilterRule("deny", ethertype=0x88A8),
        FilterRule("allow", ethertype=0x0600),
    )


def test_rules_may_be_written_as_an_array_of_tables(in_tmp):
    config = load(
        site_toml(
            extra='[filter.tunnel_ingress]\ndefault = "deny"\n'
            '[[filter.tunnel_ingress.rules]]\naction = "allow"\nethertype = "0x0800"\n'
        )
    )

    assert config.filter.tunnel_ingress == FilterTable("deny", (FilterRule("allow", ethertype=0x0800),))
    assert config.filter.nic_ingress == FilterTable()


def test_byte_order_mark_is_ignored(in_tmp):
    config = load(b"\xef\xbb\xbf" + site_toml().encode())

    assert config.segment.layout[0].interface == "eth1"


def test_config_is_frozen(in_tmp):
    config = load(site_toml())

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tunnel.max_packet = 9000


def test_levels_are_listed_weakest_first():
    assert LEVELS == ("none", "auth", "encrypt")


# -- errors ----------------------------------------------------------------------

IFNAME_RULE = '1 to 15 bytes; not "." or ".."; no "/", ":" or whitespace'
RULE_EXAMPLE = '{ action = "deny", mac = "01:80:c2:00:00:00" }'
PEER_LIKE = 'like "203.0.113.7:5555", "[2001:db8::7]:5555" or "gw.example.net:5555"'

ERROR_CASES = [
    # TOML itself
    ('[security]\nlevel = "auth"\nrekey = often\n', "site.toml:3:9: invalid TOML: Invalid value"),
    ('[tunnel]\npeer = "1.2.3.4:5555"\npeer = "x"\n', "site.toml:3:11: invalid TOML: Cannot overwrite a value"),
    (b'[site]\nname = "b\xffrlin"\n', "site.toml:2:10: invalid TOML: not UTF-8 text (byte 0xff)"),
    ("a = " + "[" * 1000, "site.toml: invalid TOML: arrays or inline tables nested too deeply"),
    ("a = " + "9" * 5000, "site.toml: invalid TOML: an integer has too many digits"),
    # tables
    ("[tunel]\n", "site.toml: unknown table [tunel] (did you mean [tunnel]?)"),
    ("[firewall]\n", "site.toml: unknown table [firewall]"),
    ('["my table"]\n', 'site.toml: unknown table ["my table"]'),
    (site_toml(tunnel=f"{PEER}\n[tunnel.extra]"), "site.toml: unknown table [tunnel.extra]"),
    ("[[tunnel]]\n" + PEER, "site.toml: tunnel: expected a table [tunnel], got an array of tables"),
    ('site = "berlin"\n', 'site.toml: site: expected a table [site], got "berlin"'),
    (PEER + "\n", 'site.toml: unknown key "peer" outside any table (it belongs in [tunnel])'),
    ('listen = "0.0.0.0:1"\n', 'site.toml: unknown key "listen" outside any table (it belongs in [tunnel] or [metrics])'),
    ("colour = 1\n", 'site.toml: unknown key "colour" outside any table'),
    # keys
    (site_toml(security=f'{KEY}\nlevle = "auth"'), 'site.toml: [security] unknown key "levle" (did you mean "level"?)'),
    (site_toml(security=f'{KEY}\ncolour = "red"'), 'site.toml: [security] unknown key "colour"'),
    (site_toml(security=f'{KEY}\n"co\\nlour" = 1'), 'site.toml: [security] unknown key "co\\nlour"'),
    # [site]
    (site_toml(extra='[site]\nname = "my site"\n'), 'site.toml: [site] name: expected 1 to 32 letters, digits, "-", "_" or ".", got "my site"'),
    (site_toml(extra='[site]\nname = ""\n'), 'site.toml: [site] name: expected 1 to 32 letters, digits, "-", "_" or ".", got ""'),
    (site_toml(extra=f'[site]\nname = "{"x" * 33}"\n'), f'site.toml: [site] name: expected 1 to 32 letters, digits, "-", "_" or ".", got "{"x" * 33}"'),
    (site_toml(extra="[site]\nname = 5\n"), "site.toml: [site] name: expected a string, got 5"),
    # [lan]
    (site_toml(lan=""), 'site.toml: [lan] interface: required key is missing (the LAN NIC; optional only with mode = "tap")'),
    (site_toml(lan=f'{LAN}\nmode = "raw"'), 'site.toml: [lan] mode: expected "packet" or "tap", got "raw"'),
    (site_toml(lan=f"{LAN}\nmode = true"), 'site.toml: [lan] mode: expected "packet" or "tap", got true'),
    (site_toml(lan='interface = "eth 1"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "eth 1"'),
    (site_toml(lan='interface = "eth/1"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "eth/1"'),
    (site_toml(lan='interface = "eth1:0"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "eth1:0"'),
    (site_toml(lan='interface = ".."'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got ".."'),
    (site_toml(lan='interface = ""'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got ""'),
    (site_toml(lan='interface = "eth\\t1"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "eth\\t1"'),
    (site_toml(lan='interface = "enp0s31f6-longer"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "enp0s31f6-longer"'),
    (site_toml(lan='interface = "äöüäöüäö"'), f'site.toml: [lan] interface: expected a Linux interface name ({IFNAME_RULE}), got "äöüäöüäö"'),
    (site_toml(lan="interface = 1"), "site.toml: [lan] interface: expected a string, got 1"),
    (site_toml(lan=f'{LAN}\ntap = "a/b"'), f'site.toml: [lan] tap: expected a Linux interface name ({IFNAME_RULE}), got "a/b"'),
    (site_toml(lan='mode = "tap"\ninterface = "br0"\ntap = "br0"'), 'site.toml: [lan] tap: must differ from interface, both are "br0"'),
    # [tunnel] addresses
    (site_toml(tunnel=""), "site.toml: [tunnel] peer: required key is missing"),
    (site_toml(tunnel='peer = "10.0.0.1"'), 'site.toml: [tunnel] peer: expected "host:port", got "10.0.0.1"'),
    (site_toml(tunnel='peer = ""'), 'site.toml: [tunnel] peer: expected "host:port", got ""'),
    (site_toml(tunnel='peer = ":5555"'), 'site.toml: [tunnel] peer: expected "host:port", got ":5555"'),
    (site_toml(tunnel='peer = "a:b:c"'), 'site.toml: [tunnel] peer: expected "host:port", got "a:b:c"'),
    (site_toml(tunnel='peer = "[2001:db8::1]"'), 'site.toml: [tunnel] peer: expected "host:port", got "[2001:db8::1]"'),
    (site_toml(tunnel='peer = "[2001:db8::1]5555"'), 'site.toml: [tunnel] peer: expected "host:port", got "[2001:db8::1]5555"'),
    (site_toml(tunnel='peer = "[2001:db8::1:5555"'), 'site.toml: [tunnel] peer: expected "host:port", got "[2001:db8::1:5555"'),
    (site_toml(tunnel='peer = "x\\ny"'), 'site.toml: [tunnel] peer: expected "host:port", got "x\\ny"'),
    (site_toml(tunnel='peer = "2001:db8::1"'), 'site.toml: [tunnel] peer: expected "[2001:db8::1]:5555" (IPv6 in brackets), got "2001:db8::1"'),
    (site_toml(tunnel='peer = "::1"'), 'site.toml: [tunnel] peer: expected "[::1]:5555" (IPv6 in brackets), got "::1"'),
    (site_toml(tunnel='peer = "2001:db8::1:4444"'), 'site.toml: [tunnel] peer: expected "[2001:db8::1]:4444" (IPv6 in brackets), got "2001:db8::1:4444"'),
    (site_toml(tunnel='peer = "[10.0.0.1]:5555"'), 'site.toml: [tunnel] peer: expected an IPv6 address inside the brackets, got "[10.0.0.1]:5555"'),
    (site_toml(tunnel='peer = "[gw.example.net]:5555"'), 'site.toml: [tunnel] peer: expected an IPv6 address inside the brackets, got "[gw.example.net]:5555"'),
    (site_toml(tunnel='peer = "10.0.0.1:70000"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "10.0.0.1:70000"'),
    (site_toml(tunnel='peer = "10.0.0.1:0"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "10.0.0.1:0"'),
    (site_toml(tunnel='peer = "10.0.0.1:"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "10.0.0.1:"'),
    (site_toml(tunnel='peer = "10.0.0.1:http"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "10.0.0.1:http"'),
    (site_toml(tunnel='peer = "10.0.0.1:+80"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "10.0.0.1:+80"'),
    (site_toml(tunnel='peer = "[::1]:"'), 'site.toml: [tunnel] peer: expected a port between 1 and 65535 after the ":", got "[::1]:"'),
    (site_toml(tunnel='peer = "gw_1.example.net:5555"'), 'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "gw_1.example.net:5555"'),
    (site_toml(tunnel='peer = "-gw.example.net:5555"'), 'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "-gw.example.net:5555"'),
    (site_toml(tunnel='peer = "gw..example.net:5555"'), 'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "gw..example.net:5555"'),
    (site_toml(tunnel='peer = "10.0.0.256:5555"'), 'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "10.0.0.256:5555"'),
    (site_toml(tunnel='peer = " 10.0.0.1:5555"'), 'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got " 10.0.0.1:5555"'),
    (site_toml(tunnel=f'peer = "{"x" * 64}.net:5555"'), f'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "{"x" * 64}.net:5555"'),
    (site_toml(tunnel=f'peer = "{".".join(["x" * 63] * 4)}:5555"'), f'site.toml: [tunnel] peer: expected an IPv4 address, [IPv6] address or DNS name before the port, got "{".".join(["x" * 63] * 4)[:97]}..."'),
    (site_toml(tunnel="peer = 5555"), f"site.toml: [tunnel] peer: expected a string {PEER_LIKE}, got 5555"),
    (site_toml(tunnel=f'{PEER}\nlisten = "localhost:5555"'), 'site.toml: [tunnel] listen: expected an IP address and port like "0.0.0.0:5555" or "[::]:5555", got "localhost:5555"'),
    (site_toml(tunnel=f'{PEER}\nlisten = "::"'), 'site.toml: [tunnel] listen: expected "[::]:5555" (IPv6 in brackets), got "::"'),
    (site_toml(tunnel=f"{PEER}\nlisten = 5555"), 'site.toml: [tunnel] listen: expected a string like "0.0.0.0:5555" or "[::]:5555", got 5555'),
    (site_toml(tunnel='listen = "0.0.0.0:5555"\npeer = "[2001:db8::1]:5555"'), 'site.toml: [tunnel] listen: "0.0.0.0:5555" is IPv4 but peer "[2001:db8::1]:5555" is IPv6; set listen = "[::]:5555"'),
    # [tunnel] numbers
    (site_toml(tunnel=f'{PEER}\nmax_packet = "800"'), 'site.toml: [tunnel] max_packet: expected an integer, got "800"'),
    (site_toml(tunnel=f"{PEER}\nmax_packet = true"), "site.toml: [tunnel] max_packet: expected an integer, got true"),
    (site_toml(tunnel=f"{PEER}\nmax_packet = 800.0"), "site.toml: [tunnel] max_packet: expected an integer, got 800.0"),
    (site_toml(tunnel=f"{PEER}\nmax_packet = [800]"), "site.toml: [tunnel] max_packet: expected an integer, got an array"),
    (site_toml(tunnel=f"{PEER}\nmax_packet = 1979-05-27"), "site.toml: [tunnel] max_packet: expected an integer, got a date"),
    (site_toml(tunnel=f"{PEER}\nmax_packet = 100"), "site.toml: [tunnel] max_packet: must be between 320 and 9000, got 100"),
    (site_toml(tunnel=f"{PEER}\nmax_packet = 9001"), "site.toml: [tunnel] max_packet: must be between 320 and 9000, got 9001"),
    (site_toml(tunnel=f"{PEER}\nkeepalive = 0"), "site.toml: [tunnel] keepalive: must be between 1 and 3600, got 0"),
    (site_toml(tunnel=f"{PEER}\nkeepalive = 3601"), "site.toml: [tunnel] keepalive: must be between 1 and 3600, got 3601"),
    # [security]
    (site_toml(security=f'{KEY}\nlevel = "high"'), 'site.toml: [security] level: expected one of "none", "auth", "encrypt", got "high"'),
    (site_toml(security=f"{KEY}\nlevel = 2"), 'site.toml: [security] level: expected one of "none", "auth", "encrypt", got 2'),
    (site_toml(security=""), 'site.toml: [security] key_file: required key is missing (level "encrypt" needs one; create it with: etun keygen <keyfile>)'),
    (site_toml(security='level = "auth"'), 'site.toml: [security] key_file: required key is missing (level "auth" needs one; create it with: etun keygen <keyfile>)'),
    (site_toml(security='key_file = ""'), 'site.toml: [security] key_file: expected a file path, got ""'),
    (site_toml(security='key_file = "a\\u0000b"'), 'site.toml: [security] key_file: expected a file path, got "a\\u0000b"'),
    (site_toml(security="key_file = 5"), "site.toml: [security] key_file: expected a string, got 5"),
    (site_toml(security=f"{KEY}\nrekey = 0"), "site.toml: [security] rekey: must be between 1 and 86400, got 0"),
    (site_toml(security=f"{KEY}\nrekey = 86401"), "site.toml: [security] rekey: must be between 1 and 86400, got 86401"),
    # [filter]
    (site_toml(extra='[filter]\ndefault = "deny"\n'), 'site.toml: [filter] unknown key "default" (put it in [filter.nic_ingress] or [filter.tunnel_ingress])'),
    (site_toml(extra='[filter.nic_egress]\ndefault = "deny"\n'), "site.toml: unknown table [filter.nic_egress] (did you mean [filter.nic_ingress]?)"),
    (site_toml(extra="[filter.lan]\n"), "site.toml: unknown table [filter.lan]"),
    (site_toml(extra='[filter]\nnic_ingress = "deny"\n'), 'site.toml: [filter] nic_ingress: expected a table, got "deny"'),
    (site_toml(extra='[filter.nic_ingress]\ndefualt = "deny"\n'), 'site.toml: [filter.nic_ingress] unknown key "defualt" (did you mean "default"?)'),
    (site_toml(extra="[filter.nic_ingress]\n[filter.nic_ingress.more]\n"), "site.toml: unknown table [filter.nic_ingress.more]"),
    (site_toml(extra='[filter.nic_ingress]\ndefault = "drop"\n'), 'site.toml: [filter.nic_ingress] default: expected "allow" or "deny", got "drop"'),
    (site_toml(extra='[filter.nic_ingress]\nrules = { action = "deny" }\n'), f"site.toml: [filter.nic_ingress] rules: expected an array of rules like [{RULE_EXAMPLE}], got a table"),
    (site_toml(extra='[filter.nic_ingress]\nrules = ["deny"]\n'), f'site.toml: [filter.nic_ingress] rule 1: expected a table like {RULE_EXAMPLE}, got "deny"'),
    # filter rules
    (site_toml(extra=rules('{ action = "deny", mac = "01:80:c2:00:00:00" }', '{ action = "deny" }')), "site.toml: [filter.nic_ingress] rule 2: needs exactly one of mac, oui, ethertype; got none"),
    (site_toml(extra=rules('{ action = "deny", mac = "01:80:c2:00:00:00" }', '{ action = "deny", mac = "01:80:c2:00:00:00", oui = "00:1b:21" }')), "site.toml: [filter.nic_ingress] rule 2: needs exactly one of mac, oui, ethertype; got mac and oui"),
    (site_toml(extra=rules('{ action = "deny", mac = "01:80:c2:00:00:00", oui = "00:1b:21", ethertype = 2048 }')), "site.toml: [filter.nic_ingress] rule 1: needs exactly one of mac, oui, ethertype; got mac, oui and ethertype"),
    (site_toml(extra=rules('{ action = "deny", mack = "01:80:c2:00:00:00" }')), 'site.toml: [filter.nic_ingress] rule 1: unknown key "mack" (did you mean "mac"?)'),
    (site_toml(extra=rules('{ action = "deny", vlan = 7 }')), 'site.toml: [filter.nic_ingress] rule 1: unknown key "vlan"'),
    (site_toml(extra=rules('{ mac = "01:80:c2:00:00:00" }')), "site.toml: [filter.nic_ingress] rule 1: action: required key is missing"),
    (site_toml(extra=rules('{ action = "deny", oui = "00:1b:21" }', '{ action = "allow", oui = "00:1b:22" }', '{ action = "drop", oui = "00:1b:23" }', table="tunnel_ingress")), 'site.toml: [filter.tunnel_ingress] rule 3: action: expected "allow" or "deny", got "drop"'),
    (site_toml(extra=rules('{ action = "deny", mac = "01:80:c2" }')), 'site.toml: [filter.nic_ingress] rule 1: mac: expected six hex bytes like "01:80:c2:00:00:00", got "01:80:c2"'),
    (site_toml(extra=rules('{ action = "deny", mac = "01-80-c2-00-00-00" }')), 'site.toml: [filter.nic_ingress] rule 1: mac: expected six hex bytes like "01:80:c2:00:00:00", got "01-80-c2-00-00-00"'),
    (site_toml(extra=rules('{ action = "deny", mac = 5 }')), 'site.toml: [filter.nic_ingress] rule 1: mac: expected six hex bytes like "01:80:c2:00:00:00", got 5'),
    (site_toml(extra=rules('{ action = "deny", oui = "zz:1b:21" }')), 'site.toml: [filter.nic_ingress] rule 1: oui: expected three hex bytes like "00:1b:21", got "zz:1b:21"'),
    (site_toml(extra=rules('{ action = "deny", oui = "00:1b:21:00" }')), 'site.toml: [filter.nic_ingress] rule 1: oui: expected three hex bytes like "00:1b:21", got "00:1b:21:00"'),
    (site_toml(extra=rules('{ action = "deny", ethertype = "ipv6" }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got "ipv6"'),
    (site_toml(extra=rules('{ action = "deny", ethertype = "86dd" }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got "86dd"'),
    (site_toml(extra=rules('{ action = "deny", ethertype = "0x0042" }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got "0x0042"'),
    (site_toml(extra=rules('{ action = "deny", ethertype = "0x10000" }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got "0x10000"'),
    (site_toml(extra=rules('{ action = "deny", ethertype = 0x05dc }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got 1500 (0x05dc)'),
    (site_toml(extra=rules('{ action = "deny", ethertype = 65536 }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got 65536'),
    (site_toml(extra=rules('{ action = "deny", ethertype = true }')), 'site.toml: [filter.nic_ingress] rule 1: ethertype: expected an EtherType 0x0600..0xffff like "0x86dd", got true'),
    # [control]
    (site_toml(extra='[control]\nsocket = ""\n'), 'site.toml: [control] socket: expected a file path, got ""'),
    (site_toml(extra=f'[control]\nsocket = "/{"s" * 110}"\n'), f'site.toml: [control] socket: expected a path of at most 107 bytes (the Unix socket limit), got "/{"s" * 96}..." (111 bytes)'),
    (site_toml(extra='[control]\nsock = "/run/x.sock"\n'), 'site.toml: [control] unknown key "sock" (did you mean "socket"?)'),
    # [metrics]
    (site_toml(extra='[metrics]\nlisten = "localhost:9477"\n'), 'site.toml: [metrics] listen: expected an IP address and port like "127.0.0.1:9477" or "[::1]:9477", got "localhost:9477"'),
    (site_toml(extra='[metrics]\nlisten = "::1"\n'), 'site.toml: [metrics] listen: expected "[::1]:9477" (IPv6 in brackets), got "::1"'),
    (site_toml(extra='[metrics]\nlisten = "127.0.0.1"\n'), 'site.toml: [metrics] listen: expected "host:port", got "127.0.0.1"'),
    (site_toml(extra="[metrics]\nlisten = true\n"), 'site.toml: [metrics] listen: expected a string like "127.0.0.1:9477" or "[::1]:9477", got true'),
    (site_toml(extra="[metrics]\nport = 9477\n"), 'site.toml: [metrics] unknown key "port"'),
    (site_toml(extra='[metrics]\nlisten = "0"\n'), 'site.toml: [metrics] listen: expected a port between 1 and 65535, got "0"'),
    (site_toml(extra='[metrics]\nlisten = "65536"\n'), 'site.toml: [metrics] listen: expected a port between 1 and 65535, got "65536"'),
    (site_toml(extra="[metrics]\nlisten = 9477\n"), 'site.toml: [metrics] listen: expected a string like "127.0.0.1:9477" or "[::1]:9477", got 9477 (a port alone is written "9477" and binds 127.0.0.1)'),
    # [[segment]]
    (segments('name = "office"\ninterface = "eth1"') + "[lan]\ninterface = \"eth2\"\n",
     "site.toml: [lan] and [[segment]] together: describe every segment, the one [lan] described too, as a [[segment]] table"),
    (segments('name = "office"\ninterface = "eth1"\nvlan = 10', 'name = "office"\ninterface = "eth1"\nvlan = 20'),
     'site.toml: [[segment]] 2: name "office" is taken by an earlier segment; names join segments to the peer\'s, so each is unique'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = 10', 'name = "voice"\ninterface = "eth1"\nvlan = "10"'),
     'site.toml: [[segment]] "voice": VLAN 10 on interface "eth1" is already segment "office"\'s; each tag path of a NIC goes to one segment'),
    (segments('name = "a"\ninterface = "eth1"', 'name = "b"\ninterface = "eth1"'),
     'site.toml: [[segment]] "b": the untagged frames (no vlan) on interface "eth1" is already segment "a"\'s; each tag path of a NIC goes to one segment'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = 4095'), 'site.toml: [[segment]] "office": vlan: VLAN ids are 1 to 4094, got 4095'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = 0'), 'site.toml: [[segment]] "office": vlan: VLAN ids are 1 to 4094, got 0'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = "100.0"'), 'site.toml: [[segment]] "office": vlan: VLAN ids are 1 to 4094, got "100.0"'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = "100/20"'), 'site.toml: [[segment]] "office": vlan: expected a VLAN id or path like 10 or "100.20" (an outer and an inner VLAN id), got "100/20"'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = "1.2.3"'), 'site.toml: [[segment]] "office": vlan: expected a VLAN id or path like 10 or "100.20" (an outer and an inner VLAN id), got "1.2.3"'),
    (segments('name = "office"\ninterface = "eth1"\nvlan = 10.5'), 'site.toml: [[segment]] "office": vlan: expected a VLAN id or path like 10 or "100.20" (an outer and an inner VLAN id), got 10.5'),
    (segments('interface = "eth1"'), "site.toml: [[segment]] 1: name: required key is missing"),
    (segments('name = "off ice"\ninterface = "eth1"'), 'site.toml: [[segment]] 1: name: expected 1 to 32 letters, digits, "-", "_" or ".", got "off ice"'),
    (segments('name = "office"'), 'site.toml: [[segment]] "office": interface: required key is missing (the segment\'s NIC; optional only with mode = "tap")'),
    (segments('name = "office"\ninterface = "eth1"\nvlans = 10'), 'site.toml: [[segment]] "office": unknown key "vlans" (did you mean "vlan"?)'),
    (segments('name = "office"\ninterface = "eth1"\n[segment.filter.nic_egress]\ndefault = "deny"'),
     'site.toml: [[segment]] "office": unknown table [segment.filter.nic_egress] (did you mean [segment.filter.nic_ingress]?)'),
    (segments('name = "office"\ninterface = "eth1"\n[segment.filter.nic_ingress]\ndefault = "drop"'),
     'site.toml: [[segment]] "office": [segment.filter.nic_ingress] default: expected "allow" or "deny", got "drop"'),
    (segments('name = "a"\nmode = "tap"\ntap = "t0"\ninterface = "br0"', 'name = "b"\nmode = "tap"\ntap = "t0"\nvlan = 5'),
     'site.toml: [[segment]] "b": TAP device "t0" is attached to "br0" by segment "a"; segments sharing a TAP device share its bridge'),
    ("[segment]\nname = \"x\"\n" + site_toml(lan=None), 'site.toml: segment: expected [[segment]] tables, got a table'),
    (segments(*[f'name = "s{k}"\ninterface = "eth1"\nvlan = {k + 1}' for k in range(33)]),
     "site.toml: at most 32 [[segment]] tables, got 33"),
    (segments(*[f'name = "s{k}"\ninterface = "eth{k}"' for k in range(9)]),
     "site.toml: the segments use 9 NICs and TAP devices; at most 8"),
    # [ha]
    (site_toml(extra='[ha]\nstandby = "yes"\n'), 'site.toml: [ha] standby: expected true or false, got "yes"'),
    (site_toml(extra="[ha]\nannounce = 1\n"), "site.toml: [ha] announce: expected true or false, got 1"),
    (site_toml(extra="[ha]\nstanby = true\n"), 'site.toml: [ha] unknown key "stanby" (did you mean "standby"?)'),
    # [bridge]
    (site_toml(extra="[bridge]\nlearning = 1\n"), "site.toml: [bridge] learning: expected true or false, got 1"),
    (site_toml(extra="[bridge]\nmac_age = 0\n"), "site.toml: [bridge] mac_age: must be between 1 and 1000000, got 0"),
    (site_toml(extra='[bridge]\nloop_protection = "stop"\n'), 'site.toml: [bridge] loop_protection: expected one of "block", "log", "off", got "stop"'),
    (site_toml(extra="[bridge]\nstorm_limit = -1\n"), "site.toml: [bridge] storm_limit: must be between 0 and 100000000, got -1"),
    (site_toml(extra='[bridge]\nguard = "stp"\n'), 'site.toml: [bridge] guard: expected an array of "stp", "lldp", "dhcp-server" or "ipv6-ra", got "stp"'),
    (site_toml(extra='[bridge]\nguard = ["dhcp"]\n'), 'site.toml: [bridge] guard: expected an array of "stp", "lldp", "dhcp-server" or "ipv6-ra", got "dhcp" (did you mean "dhcp-server"?)'),
    (site_toml(extra='[bridge]\nguard = ["stp", "stp"]\n'), 'site.toml: [bridge] guard: "stp" is listed twice'),
    (site_toml(extra="[bridge]\nstorm = 10\n"), 'site.toml: [bridge] unknown key "storm" (did you mean "storm_limit"?)'),
    # one line, always
    (site_toml(extra='[site]\nname = "a\\u2028b"\n'), 'site.toml: [site] name: expected 1 to 32 letters, digits, "-", "_" or ".", got "a\\u2028b"'),
]


@pytest.mark.parametrize("text, message", ERROR_CASES, ids=[message for _, message in ERROR_CASES])
def test_every_mistake_gives_its_exact_one_line_message(in_tmp, text, message):
    got = error_of(text)

    assert got == message
    assert "\n" not in got and not got.startswith("etun:")


def test_missing_file_cannot_be_read(in_tmp):
    with pytest.raises(ConfigError) as caught:
        load_config("site.toml")

    assert str(caught.value) == "site.toml: cannot read: No such file or directory"


def test_directory_cannot_be_read_as_a_file(in_tmp):
    (in_tmp / "site.toml").mkdir()

    with pytest.raises(ConfigError) as caught:
        load_config("site.toml")

    assert str(caught.value) == "site.toml: cannot read: Is a directory"


def test_errors_name_the_path_exactly_as_given(in_tmp):
    (in_tmp / "conf").mkdir()
    (in_tmp / "conf" / "site.toml").write_text(site_toml(tunnel='peer = "10.0.0.1"'))

    with pytest.raises(ConfigError) as caught:
        load_config("./conf//site.toml")

    assert str(caught.value) == './conf//site.toml: [tunnel] peer: expected "host:port", got "10.0.0.1"'


def test_site_name_from_an_unusable_file_name_asks_for_a_name(in_tmp):
    message = error_of(site_toml(), "my site.toml")

    assert message == (
        'my site.toml: [site] name: not set, and the file\'s name "my site" is not a valid site name '
        '(1 to 32 letters, digits, "-", "_" or "."); set name in [site]'
    )


def test_config_errors_exit_with_status_2(in_tmp):
    with pytest.raises(ConfigError) as caught:
        load(site_toml(tunnel=""))

    assert caught.value.exit_code == 2


def test_toml_error_position_falls_back_to_the_message_text():
    # tomli before 2.1 had no lineno/colno/msg attributes, only this text.
    assert _describe_toml_error(ValueError("Invalid value (at line 3, column 9)")) == (3, 9, "Invalid value")
    assert _describe_toml_error(ValueError("Unterminated string (at end of document)")) == (
        None,
        None,
        "Unterminated string at end of document",
    )


@pytest.mark.parametrize("page", ["CONFIG.md", "MANUAL.md"])
def test_every_complete_site_toml_the_manual_shows_is_valid(in_tmp, page):
    """Every whole file the manual shows (one with a LAN and a peer; the others are snippets of
    one table) loads as it stands."""
    whole = [(n, e) for n, e in enumerate(manual_examples(page), 1)
             if ("[lan]" in e or "[[segment]]" in e) and "peer =" in e]
    assert whole
    for number, example in whole:
        try:
            load(example, f"example{number}.toml")
        except ConfigError as e:
            raise AssertionError(f"docs/{page} toml example {number}: {e}") from None


def test_segments_keep_their_order_vlans_ports_and_own_filters(in_tmp):
    config = load(segments(
        'name = "office"\ninterface = "eth1"\nvlan = 10\n[segment.filter.nic_ingress]\ndefault = "deny"',
        'name = "qinq"\ninterface = "eth1"\nvlan = "100.20"',
        'name = "lab"\ninterface = "eth2"',
        'name = "guest"\nmode = "tap"\ntap = "g0"\nvlan = 40',
    ))
    layout = config.segment.layout
    assert [(g.name, g.interface, g.vlan, g.port) for g in layout] == [
        ("office", "eth1", (10,), ("packet", "eth1")), ("qinq", "eth1", (100, 20), ("packet", "eth1")),
        ("lab", "eth2", (), ("packet", "eth2")), ("guest", None, (40,), ("tap", "g0"))]
    assert config.segment.filters[0] == SegmentFilters(nic_ingress=FilterTable(default="deny"))
    assert config.segment.filters[1] == SegmentFilters()
    assert layout[1].vlan_text == "100.20"


def test_bridge_takes_every_setting(in_tmp):
    text = site_toml() + '[bridge]\nlearning = false\nmac_age = 60\nloop_protection = "log"\nstorm_limit = 0\nguard = ["lldp", "stp"]\n'
    assert load(text).bridge == Bridge(learning=False, mac_age=60, loop_protection="log", storm_limit=0,
                                       guard=("lldp", "stp"))


def test_run_user_defaults_to_nobody_and_takes_a_user_name(in_tmp):
    assert load(site_toml()).run == Run(user="nobody")
    assert load(site_toml() + '[run]\nuser = "etun"\n').run == Run(user="etun")


@pytest.mark.parametrize("value,shown", [('"no body"', '"no body"'), ("65534", "65534"), ('""', '""')])
def test_a_run_user_that_cannot_be_a_user_name_is_refused(in_tmp, value, shown):
    with pytest.raises(ConfigError) as e:
        load(site_toml() + f"[run]\nuser = {value}\n")
    assert str(e.value).startswith("site.toml: [run] user: expected ")
    assert str(e.value).endswith(f"got {shown}")
