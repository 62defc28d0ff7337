"""Compile [filter.*] rules into what the datapath's filter tables take, and name them for people."""

from etun import _fast

DIRECTIONS = {"nic_ingress": _fast.FILTER_NIC_INGRESS, "tunnel_ingress": _fast.FILTER_TUNNEL_INGRESS}


def kind_and_value(rule) -> tuple[str, object]:
    if rule.mac is not None:
        return "mac", rule.mac
    if rule.oui is not None:
        return "oui", rule.oui
    return "ethertype", rule.ethertype


def describe(rule) -> str:
    """A rule as an operator writes it: "deny mac 01:80:c2:00:00:00"."""
    kind, value = kind_and_value(rule)
    shown = f"0x{value:04x}" if kind == "ethertype" else value.hex(":")
    return f"{rule.action} {kind} {shown}"


def table_of(config, segment: int, name: str):
    """The FilterTable that applies to one direction of a segment: its own, else [filter.*]."""
    return getattr(config.segment.filters[segment], name) or getattr(config.filter, name)


def install(datapath, config) -> None:
    """Put both directions' rules of every segment (an etun.config.Config's) into the datapath,
    with the [bridge] guard presets in front of each nic_ingress table's."""
    for segment in range(len(config.segment.layout)):
        for name, direction in DIRECTIONS.items():
            table = table_of(config, segment, name)
            rules = [(r.action == "allow", *kind_and_value(r)) for r in table.rules]
            datapath.set_filter(direction, table.default == "allow", rules, segment,
                                config.bridge.guard if direction == _fast.FILTER_NIC_INGRESS else ())
