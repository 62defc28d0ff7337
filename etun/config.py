"""site.toml -> validated, frozen dataclasses; reads the file and does nothing else."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import json
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import tomli

from etun._fast import (
    FILTER_MAX_RULES,
    MAC_AGE_DEFAULT_S,
    MAC_AGE_MAX_S,
    MAX_PACKET_DEFAULT,
    MAX_PACKET_MAX,
    MAX_PACKET_MIN,
    PORTS_MAX,
    SEGMENTS_MAX,
    VLAN_ID_MAX,
)
from etun.errors import ConfigError

LEVELS = ("none", "auth", "encrypt")
LOOP_PROTECTIONS = ("block", "log", "off")
GUARDS = ("stp", "lldp", "dhcp-server", "ipv6-ra")
MODES = ("packet", "tap")
ACTIONS = ("allow", "deny")

DEFAULT_TUNNEL_PORT = 5555
DEFAULT_METRICS_PORT = 9477
DEFAULT_METRICS_HOST = "127.0.0.1"   # [metrics] listen given as a port alone binds here
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_TUNNEL_PORT}"
DEFAULT_LISTEN_V6 = f"[::]:{DEFAULT_TUNNEL_PORT}"   # the default when the peer is an IPv6 address
DEFAULT_TAP = "etun0"
LAN_SEGMENT = "lan"   # the name of the one segment a [lan] table describes
DEFAULT_SOCKET_DIR = "/run/etun"
DEFAULT_RUN_USER = "nobody"

KEEPALIVE_DEFAULT_S = 10
KEEPALIVE_MAX_S = 3600
REKEY_DEFAULT_S = 120
REKEY_MAX_S = 86400
STORM_LIMIT_DEFAULT = 5000      # flooded frames a second, per segment and direction
STORM_LIMIT_MAX = 100_000_000

SITE_NAME_MAX_CHARS = 32
IFNAME_MAX_BYTES = 15  # IFNAMSIZ (16) less the terminating NUL
UNIX_PATH_MAX_BYTES = 107  # sizeof(sun_path) (108) less the terminating NUL
ETHERTYPE_MIN = 0x0600  # values below are 802.3 length fields, not EtherTypes
ETHERTYPE_MAX = 0xFFFF
SHOWN_STRING_MAX_CHARS = 100  # longer values are cut so an error stays one readable line


@dataclass(frozen=True)
class Address:
    """A UDP or TCP endpoint written "host:port"; IPv6 hosts are stored without brackets."""

    host: str  # IPv4 literal, IPv6 literal, or DNS name (peer only)
    port: int  # 1..65535

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class FilterRule:
    action: str  # "allow" | "deny"
    mac: bytes | None = None  # 6 bytes
    oui: bytes | None = None  # 3 bytes
    ethertype: int | None = None  # ETHERTYPE_MIN..ETHERTYPE_MAX
    # Exactly one of mac, oui, ethertype is set.


@dataclass(frozen=True)
class FilterTable:
    default: str = "allow"
    rules: tuple[FilterRule, ...] = ()


@dataclass(frozen=True)
class Filters:
    nic_ingress: FilterTable
    tunnel_ingress: FilterTable


@dataclass(frozen=True)
class SegmentFilters:
    """A segment's own [segment.filter.*] tables; None: the global [filter.*] one applies."""

    nic_ingress: FilterTable | None = None
    tunnel_ingress: FilterTable | None = None


@dataclass(frozen=True)
class Site:
    name: str


@dataclass(frozen=True)
class Lan:
    interface: str | None  # None only in tap mode
    mode: str  # "packet" | "tap"
    tap: str


@dataclass(frozen=True)
class Segment:
    """One broadcast domain the tunnel carries: a [[segment]] table, or [lan] (named "lan")."""

    name: str  # joined to the peer's segment of the same name
    interface: str | None  # None only in tap mode
    mode: str  # "packet" | "tap"
    tap: str
    vlan: tuple[int, ...]  # () all frames (or the untagged ones), (10,), or (100, 20)

    @property
    def port(self) -> tuple[str, str | None]:
        """The LAN side it lives on: segments with the same port share one socket or TAP."""
        return ("tap", self.tap) if self.mode == "tap" else ("packet", self.interface)

    @property
    def vlan_text(self) -> str:
        return ".".join(map(str, self.vlan))


@dataclass(frozen=True)
class Segments:
    layout: tuple[Segment, ...]  # in configuration order: a segment's id is its position
    filters: tuple[SegmentFilters, ...]  # one per segment


@dataclass(frozen=True)
class Tunnel:
    listen: Address
    peer: Address
    max_packet: int  # bytes of UDP header + payload; every datagram is smaller
    keepalive: int  # seconds


@dataclass(frozen=True)
class Security:
    level: str  # one of LEVELS
    key_file: pathlib.Path | None  # None only at level "none"
    rekey: int  # seconds


@dataclass(frozen=True)
class Control:
    socket: pathlib.Path


@dataclass(frozen=True)
class Metrics:
    listen: Address | None  # None: metrics off


@dataclass(frozen=True)
class Ha:
    standby: bool  # start as the standby of a pair: no capture, injection or tunnel traffic
    announce: bool  # on becoming active, announce the far side's MACs on the LAN


@dataclass(frozen=True)
class Bridge:
    learning: bool  # unicast to a MAC last seen on the LAN is not tunneled
    mac_age: int  # seconds a learnt MAC is kept
    loop_protection: str  # one of LOOP_PROTECTIONS
    storm_limit: int  # flooded frames a second per segment and direction; 0: no limit
    guard: tuple[str, ...]  # presets of GUARDS denied at nic_ingress, in the order given


@dataclass(frozen=True)
class Run:
    user: str  # after setup etun runs as this user; "root" keeps root


@dataclass(frozen=True)
class Config:
    path: pathlib.Path  # the config file as given
    site: Site
    segment: Segments  # from [[segment]] tables, or from [lan]
    tunnel: Tunnel
    security: Security
    filter: Filters
    control: Control
    metrics: Metrics
    ha: Ha
    bridge: Bridge
    run: Run


def _keys(cls: type) -> tuple[str, ...]:
    # TOML keys are the dataclass field names, so the schema cannot drift from the classes.
    return tuple(field.name for field in dataclasses.fields(cls))


TABLES = ("lan",) + tuple(name for name in _keys(Config) if name != "path")
TABLE_KEYS = {
    "site": _keys(Site),
    "lan": _keys(Lan),
    "segment": ("name", "interface", "mode", "tap", "vlan", "filter"),
    "tunnel": _keys(Tunnel),
    "security": _keys(Security),
    "filter": _keys(Filters),
    "control": _keys(Control),
    "metrics": _keys(Metrics),
    "ha": _keys(Ha),
    "bridge": _keys(Bridge),
    "run": _keys(Run),
}
FILTER_TABLE_KEYS = _keys(FilterTable)
RULE_KEYS = _keys(FilterRule)
RULE_MATCHES = ("mac", "oui", "ethertype")

_MISSING = object()
_TOML_POSITION = re.compile(r" \(at line (\d+), column (\d+)\)$")
_SITE_NAME = re.compile(r"[A-Za-z0-9._-]{1,%d}" % SITE_NAME_MAX_CHARS)
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")   # useradd's portable names
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_OUI = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){2}")
_HEX_ETHERTYPE = re.compile(r"0[xX][0-9A-Fa-f]{1,8}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED = '"{}"'

_SITE_NAME_RULE = f'1 to {SITE_NAME_MAX_CHARS} letters, digits, "-", "_" or "."'
_IFNAME_RULE = f'1 to {IFNAME_MAX_BYTES} bytes; not "." or ".."; no "/", ":" or whitespace'
_PEER_LIKE = 'like "203.0.113.7:5555", "[2001:db8::7]:5555" or "gw.example.net:5555"'
_LISTEN_LIKE = f'like "{DEFAULT_LISTEN}" or "{DEFAULT_LISTEN_V6}"'
_METRICS_LIKE = f'like "127.0.0.1:{DEFAULT_METRICS_PORT}" or "[::1]:{DEFAULT_METRICS_PORT}"'
_RULE_EXAMPLE = '{ action = "deny", mac = "01:80:c2:00:00:00" }'


def load_config(path: str | os.PathLike, data: bytes | None = None) -> Config:
    """Read and validate one site.toml; raise ConfigError naming the first problem found.
    `data`: the file's bytes when they were read already (a reload, by etun's privileged half)."""
    origin = str(path)
    document = _parse_toml(origin, _read_text(origin, path) if data is None else _decode(origin, data))
    _check_top_level(origin, document)
    tables = {name: _table_data(origin, document, name) for name in TABLES if name != "segment"}

    site = _read_site(origin, tables["site"], pathlib.Path(path).stem)
    base_dir = pathlib.Path(os.path.abspath(path)).parent
    return Config(
        path=pathlib.Path(path),
        site=site,
        segment=_read_segments(origin, document, tables["lan"]),
        tunnel=_read_tunnel(origin, tables["tunnel"]),
        security=_read_security(origin, tables["security"], base_dir),
        filter=_read_filters(origin, tables["filter"]),
        control=_read_control(origin, tables["control"], base_dir, site.name),
        metrics=_read_metrics(origin, tables["metrics"]),
        ha=_read_ha(origin, tables["ha"]),
        bridge=_read_bridge(origin, tables["bridge"]),
        run=_read_run(origin, tables["run"]),
    )


# -- reading and parsing ------------------------------------------------------


def _read_text(origin: str, path: str | os.PathLike) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"{origin}: cannot read: {error.strerror or error}") from None
    return _decode(origin, data)


def _decode(origin: str, data: bytes) -> str:
    try:
        # utf-8-sig: editors on some systems prepend a byte-order mark; TOML means the text after it.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8", "replace")) + 1
        byte = data[error.start]
        raise ConfigError(f"{origin}:{line}:{column}: invalid TOML: not UTF-8 text (byte 0x{byte:02x})") from None


def _parse_toml(origin: str, text: str) -> dict[str, Any]:
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as error:
        line, column, message = _describe_toml_error(error)
        where = f"{origin}:{line}:{column}" if line is not None else origin
        raise ConfigError(f"{where}: invalid TOML: {message}") from None
    except RecursionError:
        # tomli caps nesting with a RecursionError rather than a TOMLDecodeError.
        raise ConfigError(f"{origin}: invalid TOML: arrays or inline tables nested too deeply") from None
    except ValueError:
        # tomli lets int()'s digit limit (CVE-2020-10735 guard) escape as a plain ValueError.
        raise ConfigError(f"{origin}: invalid TOML: an integer has too many digits") from None


def _describe_toml_error(error: Exception) -> tuple[int | None, int | None, str]:
    """Line, column and bare message of a TOMLDecodeError, from its attributes or its text."""
    line, column, message = (getattr(error, name, None) for name in ("lineno", "colno", "msg"))
    if line is not None and column is not None and message is not None:
        return line, column, message
    # tomli before 2.1 put the position only in the text.
    text = str(error)
    match = _TOML_POSITION.search(text)
    if match:
        return int(match[1]), int(match[2]), text[: match.start()]
    return None, None, text.replace(" (at end of document)", " at end of document")


# -- tables and keys ----------------------------------------------------------


def _check_top_level(origin: str, document: dict[str, Any]) -> None:
    for key, value in document.items():
        if key in TABLES:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{origin}: unknown table [{_bare(key)}]{_suggest(key, TABLES, '[{}]')}")
        owners = [name for name in TABLES if key in TABLE_KEYS[name]]
        hint = f" (it belongs in {' or '.join(f'[{name}]' for name in owners)})" if owners else ""
        raise ConfigError(f"{origin}: unknown key {_quote(key)} outside any table{hint}")


def _table_data(origin: str, document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: {name}: expected a table [{name}], got {_show(value)}")
    return value


class _Table:
    """One TOML table (or filter rule) being read: names it in messages and rejects unknown keys.

    `head` starts every message about it: "[tunnel]" or "[filter.nic_ingress] rule 2:".
    `name` is the dotted table name for "unknown table" messages, None for a rule.
    """

    def __init__(self, origin: str, head: str, data: dict[str, Any], keys: tuple[str, ...], name: str | None):
        self.origin, self.head, self.data = origin, head, data
        for key, value in data.items():
            if key in keys:
                continue
            if name is not None and isinstance(value, dict):
                raise ConfigError(f"{origin}: unknown table [{name}.{_bare(key)}]")
            raise ConfigError(f"{origin}: {head} unknown key {_quote(key)}{_suggest(key, keys, _QUOTED)}")

    def fail(self, key: str, text: str) -> NoReturn:
        raise ConfigError(f"{self.origin}: {self.head} {key}: {text}")

    def fail_whole(self, text: str) -> NoReturn:
        """A problem of the table or rule as a whole, not of one key."""
        raise ConfigError(f"{self.origin}: {self.head} {text}")

    def value(self, key: str, default: Any = _MISSING, hint: str = "") -> Any:
        """The raw value of key, else default; without a default the key is required."""
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.fail(key, f"required key is missing{hint}")
        return default

    def string(self, key: str, default: Any = _MISSING, hint: str = "") -> Any:
        value = self.value(key, default, hint)
        if key in self.data and not isinstance(value, str):
            self.fail(key, f"expected a string, got {_show(value)}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.value(key, default)
        if type(value) is not int:  # bool is an int subclass, and true is not 1 here
            self.fail(key, f"expected an integer, got {_show(value)}")
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.value(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def choice(self, key: str, default: Any, options: tuple[str, ...]) -> str:
        value = self.value(key, default)
        if not isinstance(value, str) or value not in options:
            if len(options) == 2:
                expected = f'"{options[0]}" or "{options[1]}"'
            else:
                expected = "one of " + ", ".join(f'"{option}"' for option in options)
            self.fail(key, f"expected {expected}, got {_show(value)}")
        return value

    def interface(self, key: str, default: Any = _MISSING, hint: str = "") -> Any:
        value = self.string(key, default, hint)
        if value is not None and not _is_interface_name(value):
            self.fail(key, f"expected a Linux interface name ({_IFNAME_RULE}), got {_quote(value)}")
        return value

    def address(self, key: str, default: Any, *, allow_name: bool, like: str, example_port: int) -> Any:
        """An Address; `like` shows good values, `example_port` goes into suggested fixes."""
        value = self.value(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a string {like}, got {_show(value)}")
        try:
            return _parse_address(value, allow_name, like, example_port)
        except _Invalid as problem:
            text = str(problem)
        self.fail(key, text)

    def path(self, key: str, base_dir: pathlib.Path, default: Any = _MISSING, hint: str = "") -> Any:
        value = self.string(key, default, hint)
        if value is None:
            return None
        if not value or "\0" in value:
            self.fail(key, f"expected a file path, got {_quote(value)}")
        return base_dir / value  # an absolute value replaces base_dir


def _read_site(origin: str, data: dict[str, Any], stem: str) -> Site:
    table = _Table(origin, "[site]", data, TABLE_KEYS["site"], "site")
    if "name" not in data:
        if not _SITE_NAME.fullmatch(stem):
            table.fail(
                "name",
                f"not set, and the file's name {_quote(stem)} is not a valid site name "
                f"({_SITE_NAME_RULE}); set name in [site]",
            )
        return Site(name=stem)
    name = table.string("name")
    if not _SITE_NAME.fullmatch(name):
        table.fail("name", f"expected {_SITE_NAME_RULE}, got {_quote(name)}")
    return Site(name=name)


def _read_lan(origin: str, data: dict[str, Any]) -> Lan:
    table = _Table(origin, "[lan]", data, TABLE_KEYS["lan"], "lan")
    return Lan(*_read_port(table, "the LAN NIC"))


def _read_port(table: _Table, nic: str) -> tuple[str | None, str, str]:
    """interface, mode and tap of [lan] or a [[segment]]."""
    mode = table.choice("mode", "packet", MODES)
    interface = table.interface("interface", None if mode == "tap" else _MISSING,
                                f' ({nic}; optional only with mode = "tap")')
    tap = table.interface("tap", DEFAULT_TAP)
    if mode == "tap" and tap == interface:
        table.fail("tap", f"must differ from interface, both are {_quote(tap)}")
    return interface, mode, tap


def _read_segments(origin: str, document: dict[str, Any], lan: dict[str, Any]) -> Segments:
    """The [[segment]] tables, or [lan] as the one segment named "lan"."""
    if "segment" not in document:
        one = _read_lan(origin, lan)
        return Segments(layout=(Segment(LAN_SEGMENT, one.interface, one.mode, one.tap, ()),),
                        filters=(SegmentFilters(),))
    if "lan" in document:
        raise ConfigError(f"{origin}: [lan] and [[segment]] together: describe every segment, the one "
                          f"[lan] described too, as a [[segment]] table")
    tables = document["segment"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{origin}: segment: expected [[segment]] tables, got {_show(tables)}")
    if len(tables) > SEGMENTS_MAX:
        raise ConfigError(f"{origin}: at most {SEGMENTS_MAX} [[segment]] tables, got {len(tables)}")
    layout, own = [], []
    for number, data in enumerate(tables, 1):
        segment, filters = _read_segment(origin, number, data)
        for other in layout:
            if other.name == segment.name:
                raise ConfigError(f"{origin}: [[segment]] {number}: name {_quote(segment.name)} is taken "
                                  f"by an earlier segment; names join segments to the peer's, so each is unique")
        layout.append(segment)
        own.append(filters)
    _check_ports(origin, layout)
    return Segments(layout=tuple(layout), filters=tuple(own))


def _read_segment(origin: str, number: int, data: dict[str, Any]) -> tuple[Segment, SegmentFilters]:
    head = f"[[segment]] {number}:"
    if isinstance(data.get("name"), str) and _SITE_NAME.fullmatch(data["name"]):
        head = f"[[segment]] {_quote(data['name'])}:"
    table = _Table(origin, head, data, TABLE_KEYS["segment"], "segment")
    name = table.string("name")
    if not _SITE_NAME.fullmatch(name):
        table.fail("name", f"expected {_SITE_NAME_RULE}, got {_quote(name)}")
    interface, mode, tap = _read_port(table, "the segment's NIC")
    vlan = _vlan_path(table)
    filters = table.value("filter", {})
    if not isinstance(filters, dict):
        table.fail("filter", f"expected [segment.filter.nic_ingress] or [segment.filter.tunnel_ingress] "
                             f"tables, got {_show(filters)}")
    names = TABLE_KEYS["filter"]
    for key, value in filters.items():
        if key not in names or not isinstance(value, dict):
            raise ConfigError(f"{origin}: {head} unknown table [segment.filter.{_bare(key)}]"
                              f"{_suggest(key, names, '[segment.filter.{}]')}")
    own = SegmentFilters(*(_read_filter_table(origin, name, filters[name], f"{head} [segment.filter.{name}]")
                           if name in filters else None for name in names))
    return Segment(name, interface, mode, tap, vlan), own


def _vlan_path(table: _Table) -> tuple[int, ...]:
    """vlan = 10, "10" or "100.20": one or two VLAN ids 1..4094, outer first."""
    value = table.value("vlan", None)
    if value is None:
        return ()
    like = 'like 10 or "100.20" (an outer and an inner VLAN id)'
    if type(value) is int:
        parts = [value]
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,4})?", value):
        parts = [int(part) for part in value.split(".")]
    else:
        table.fail("vlan", f"expected a VLAN id or path {like}, got {_show(value)}")
    for vid in parts:
        if not 1 <= vid <= VLAN_ID_MAX:
            table.fail("vlan", f"VLAN ids are 1 to {VLAN_ID_MAX}, got {_show(value)}")
    return tuple(parts)


def _check_ports(origin: str, layout: list[Segment]) -> None:
    """Segments sharing a NIC (or TAP device) must select different tag paths, and those sharing
    a TAP device the same bridge."""
    ports: dict[tuple, Segment] = {}
    selected: dict[tuple, Segment] = {}
    for segment in layout:
        first = ports.setdefault(segment.port, segment)
        if segment.mode == "tap" and first.interface != segment.interface:
            raise ConfigError(f"{origin}: [[segment]] {_quote(segment.name)}: TAP device {_quote(segment.tap)} "
                              f"is attached to {_show(first.interface or 'no bridge')} by segment "
                              f"{_quote(first.name)}; segments sharing a TAP device share its bridge")
        key = (segment.port, segment.vlan)
        if key in selected:
            where = f"interface {_quote(segment.interface)}" if segment.mode == "packet" else \
                f"TAP device {_quote(segment.tap)}"
            what = f"VLAN {segment.vlan_text}" if segment.vlan else "the untagged frames (no vlan)"
            raise ConfigError(f"{origin}: [[segment]] {_quote(segment.name)}: {what} on {where} is already "
                              f"segment {_quote(selected[key].name)}'s; each tag path of a NIC goes to one segment")
        selected[key] = segment
    if len(ports) > PORTS_MAX:
        raise ConfigError(f"{origin}: the segments use {len(ports)} NICs and TAP devices; at most {PORTS_MAX}")


def _read_tunnel(origin: str, data: dict[str, Any]) -> Tunnel:
    table = _Table(origin, "[tunnel]", data, TABLE_KEYS["tunnel"], "tunnel")
    peer = table.address("peer", _MISSING, allow_name=True, like=_PEER_LIKE, example_port=DEFAULT_TUNNEL_PORT)
    # An IPv6 peer needs an IPv6 socket, so the default follows the peer's family.
    peer_v6 = _ip_version(peer.host) == 6
    listen = table.address("listen", DEFAULT_LISTEN_V6 if peer_v6 else DEFAULT_LISTEN, allow_name=False,
                           like=_LISTEN_LIKE, example_port=DEFAULT_TUNNEL_PORT)
    if peer_v6 and _ip_version(listen.host) == 4:
        # An AF_INET socket cannot send to an IPv6 address; "[::]" also serves IPv4 peers.
        table.fail(
            "listen",
            f'{_quote(str(listen))} is IPv4 but peer {_quote(str(peer))} is IPv6; '
            f'set listen = "[::]:{listen.port}"',
        )
    return Tunnel(
        listen=listen,
        peer=peer,
        max_packet=table.integer("max_packet", MAX_PACKET_DEFAULT, MAX_PACKET_MIN, MAX_PACKET_MAX),
        keepalive=table.integer("keepalive", KEEPALIVE_DEFAULT_S, 1, KEEPALIVE_MAX_S),
    )


def _read_security(origin: str, data: dict[str, Any], base_dir: pathlib.Path) -> Security:
    table = _Table(origin, "[security]", data, TABLE_KEYS["security"], "security")
    level = table.choice("level", "encrypt", LEVELS)
    hint = f' (level "{level}" needs one; create it with: etun keygen <keyfile>)'
    key_file = table.path("key_file", base_dir, None if level == "none" else _MISSING, hint)
    rekey = table.integer("rekey", REKEY_DEFAULT_S, 1, REKEY_MAX_S)
    return Security(level=level, key_file=key_file, rekey=rekey)


def _read_filters(origin: str, data: dict[str, Any]) -> Filters:
    names = TABLE_KEYS["filter"]
    for key, value in data.items():
        if key in names:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [filter] {key}: expected a table, got {_show(value)}")
        elif isinstance(value, dict):
            raise ConfigError(f"{origin}: unknown table [filter.{_bare(key)}]{_suggest(key, names, '[filter.{}]')}")
        else:
            where = " or ".join(f"[filter.{name}]" for name in names)
            raise ConfigError(f"{origin}: [filter] unknown key {_quote(key)} (put it in {where})")
    return Filters(*(_read_filter_table(origin, name, data.get(name, {})) for name in names))


def _read_filter_table(origin: str, name: str, data: dict[str, Any], head: str | None = None) -> FilterTable:
    head = head or f"[filter.{name}]"
    table = _Table(origin, head, data, FILTER_TABLE_KEYS, f"filter.{name}")
    default = table.choice("default", "allow", ACTIONS)
    rules = table.value("rules", [])
    if not isinstance(rules, list):
        table.fail("rules", f"expected an array of rules like [{_RULE_EXAMPLE}], got {_show(rules)}")
    if len(rules) > FILTER_MAX_RULES:
        table.fail("rules", f"at most {FILTER_MAX_RULES} rules, got {len(rules)}")
    return FilterTable(
        default=default,
        rules=tuple(_read_rule(origin, f"{head} rule {number}:", rule) for number, rule in enumerate(rules, 1)),
    )


def _read_rule(origin: str, head: str, data: Any) -> FilterRule:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {head} expected a table like {_RULE_EXAMPLE}, got {_show(data)}")
    rule = _Table(origin, head, data, RULE_KEYS, None)
    action = rule.choice("action", _MISSING, ACTIONS)
    given = [key for key in RULE_MATCHES if key in data]
    if len(given) != 1:
        rule.fail_whole(f"needs exactly one of {', '.join(RULE_MATCHES)}; got {_and_list(given) or 'none'}")
    if "mac" in data:
        return FilterRule(action, mac=_hex_bytes(rule, "mac", _MAC, "six", "01:80:c2:00:00:00"))
    if "oui" in data:
        return FilterRule(action, oui=_hex_bytes(rule, "oui", _OUI, "three", "00:1b:21"))
    return FilterRule(action, ethertype=_ethertype(rule))


def _hex_bytes(rule: _Table, key: str, pattern: re.Pattern, count: str, example: str) -> bytes:
    value = rule.data[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        rule.fail(key, f'expected {count} hex bytes like "{example}", got {_show(value)}')
    return bytes.fromhex(value.replace(":", ""))


def _ethertype(rule: _Table) -> int:
    value = rule.data["ethertype"]
    number = None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and _HEX_ETHERTYPE.fullmatch(value):
        number = int(value, 16)
    if number is None or not ETHERTYPE_MIN <= number <= ETHERTYPE_MAX:
        shown = _show(value)
        if type(value) is int and 0 <= value <= ETHERTYPE_MAX:
            shown += f" (0x{value:04x})"  # TOML forgets the radix the user wrote it in
        rule.fail("ethertype",
                  f'expected an EtherType 0x{ETHERTYPE_MIN:04x}..0x{ETHERTYPE_MAX:04x} like "0x86dd", got {shown}')
    return number


def _read_control(origin: str, data: dict[str, Any], base_dir: pathlib.Path, site_name: str) -> Control:
    table = _Table(origin, "[control]", data, TABLE_KEYS["control"], "control")
    socket = table.path("socket", base_dir, f"{DEFAULT_SOCKET_DIR}/{site_name}.sock")
    size = len(os.fsencode(socket))
    if size > UNIX_PATH_MAX_BYTES:
        table.fail(
            "socket",
            f"expected a path of at most {UNIX_PATH_MAX_BYTES} bytes (the Unix socket limit), "
            f"got {_quote(str(socket))} ({size} bytes)",
        )
    return Control(socket=socket)


def _read_metrics(origin: str, data: dict[str, Any]) -> Metrics:
    table = _Table(origin, "[metrics]", data, TABLE_KEYS["metrics"], "metrics")
    value = table.value("listen", None)
    # A port alone binds the loopback address: the endpoint has no authentication, so reaching it
    # from elsewhere takes an address written out (etun(8), "Metrics").
    if isinstance(value, str) and _PORT.fullmatch(value):
        if not 1 <= int(value) <= 65535:
            table.fail("listen", f"expected a port between 1 and 65535, got {_quote(value)}")
        return Metrics(listen=Address(DEFAULT_METRICS_HOST, int(value)))
    if type(value) is int:
        table.fail("listen", f"expected a string {_METRICS_LIKE}, got {value} "
                             f'(a port alone is written "{value}" and binds {DEFAULT_METRICS_HOST})')
    listen = table.address("listen", None, allow_name=False, like=_METRICS_LIKE, example_port=DEFAULT_METRICS_PORT)
    return Metrics(listen=listen)


def _read_ha(origin: str, data: dict[str, Any]) -> Ha:
    table = _Table(origin, "[ha]", data, TABLE_KEYS["ha"], "ha")
    return Ha(standby=table.boolean("standby", False), announce=table.boolean("announce", True))


def _read_bridge(origin: str, data: dict[str, Any]) -> Bridge:
    table = _Table(origin, "[bridge]", data, TABLE_KEYS["bridge"], "bridge")
    guard = table.value("guard", [])
    expected = "an array of " + ", ".join(f'"{name}"' for name in GUARDS[:-1]) + f' or "{GUARDS[-1]}"'
    if not isinstance(guard, list):
        table.fail("guard", f"expected {expected}, got {_show(guard)}")
    for name in guard:
        if not isinstance(name, str) or name not in GUARDS:
            hint = ""
            if isinstance(name, str):
                starts = [g for g in GUARDS if name and g.startswith(name)]
                hint = _suggest(name, GUARDS, _QUOTED) or (f" (did you mean {_quote(starts[0])}?)" if starts else "")
            table.fail("guard", f"expected {expected}, got {_show(name)}{hint}")
        if guard.count(name) > 1:
            table.fail("guard", f"{_quote(name)} is listed twice")
    return Bridge(
        learning=table.boolean("learning", True),
        mac_age=table.integer("mac_age", MAC_AGE_DEFAULT_S, 1, MAC_AGE_MAX_S),
        loop_protection=table.choice("loop_protection", "block", LOOP_PROTECTIONS),
        storm_limit=table.integer("storm_limit", STORM_LIMIT_DEFAULT, 0, STORM_LIMIT_MAX),
        guard=tuple(guard),
    )


def _read_run(origin: str, data: dict[str, Any]) -> Run:
    table = _Table(origin, "[run]", data, TABLE_KEYS["run"], "run")
    user = table.string("user", DEFAULT_RUN_USER)
    if not _USER_NAME.fullmatch(user):
        table.fail("user", f'expected a user name like "nobody" or "etun", got {_quote(user)}')
    return Run(user=user)


# -- values -------------------------------------------------------------------


class _Invalid(Exception):
    """An address problem, worded to follow "[table] key: "."""


def _parse_address(text: str, allow_name: bool, like: str, example_port: int) -> Address:
    shown = _quote(text)
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise _Invalid(f'expected "host:port", got {shown}')
        if _ip_version(host) != 6:
            raise _Invalid(f"expected an IPv6 address inside the brackets, got {shown}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not host:
            raise _Invalid(f'expected "host:port", got {shown}')
        if _ip_version(host) is None:
            if not allow_name:
                raise _Invalid(f"expected an IP address and port {like}, got {shown}")
            if not _is_dns_name(host):
                raise _Invalid(f"expected an IPv4 address, [IPv6] address or DNS name before the port, got {shown}")
    else:
        suggestion = _bracketed(text, example_port)
        if suggestion:
            raise _Invalid(f"expected {_quote(suggestion)} (IPv6 in brackets), got {shown}")
        raise _Invalid(f'expected "host:port", got {shown}')
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _Invalid(f'expected a port between 1 and 65535 after the ":", got {shown}')
    if _ip_version(host) is not None:
        host = str(ipaddress.ip_address(host))  # one spelling per address, so addresses compare equal
    return Address(host=host, port=int(port_text))


def _bracketed(text: str, example_port: int) -> str | None:
    """How to write an unbracketed IPv6 address, or None when text is not one."""
    head, _, tail = text.rpartition(":")
    # "2001:db8::1:5555" is a valid address, but a trailing port is the likelier intent.
    if _ip_version(head) == 6 and _PORT.fullmatch(tail) and 1 <= int(tail) <= 65535:
        return f"[{head}]:{tail}"
    if _ip_version(text) == 6:
        return f"[{text}]:{example_port}"
    return None


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _is_dns_name(name: str) -> bool:
    name = name.removesuffix(".")  # a fully qualified name may end in the root's dot
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    # An all-digit last label is a mistyped IPv4 address, never a top-level domain (RFC 3696 section 2).
    return all(_DNS_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _is_interface_name(name: str) -> bool:
    # Mirrors dev_valid_name() in the kernel's net/core/dev.c; NUL cannot pass through a C string.
    return (
        1 <= len(name.encode()) <= IFNAME_MAX_BYTES
        and name not in (".", "..")
        and not any(char in "/:\0" or char.isspace() for char in name)
    )


# -- wording --------------------------------------------------------------------


def _quote(text: str) -> str:
    """text as a one-line double-quoted TOML-style string, cut when very long."""
    if len(text) > SHOWN_STRING_MAX_CHARS:
        text = text[: SHOWN_STRING_MAX_CHARS - 3] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    # json leaves separators such as U+2028 raw; they would break the one-line promise.
    return "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in quoted)


def _show(value: Any) -> str:
    """A TOML value as the user wrote it, for "got ..."."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array of tables" if value and all(isinstance(item, dict) for item in value) else "an array"
    if isinstance(value, datetime.datetime):
        return "a date-time"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, datetime.time):
        return "a time"
    return repr(value)


def _bare(key: str) -> str:
    """A key as it would appear in a [table] header."""
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


def _suggest(key: str, known: tuple[str, ...], form: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {form.format(close[0])}?)" if close else ""


def _and_list(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
